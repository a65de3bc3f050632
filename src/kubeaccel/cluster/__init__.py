"""A real local Kubernetes built from upstream: control plane, kwok nodes and a real node."""
