"""kubeaccel: accelerators as first-class citizens for Spark on Kubernetes."""

__version__ = "0.1.0"
