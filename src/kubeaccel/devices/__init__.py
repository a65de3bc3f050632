"""The shared core: what a device is, how a node's devices are discovered, and allocation policy.

Pure Python: no gRPC and no Kubernetes client here (enforced by import-linter), so the node side
(``kubeaccel.plugin``) and the workload side (``kubeaccel.spark``) can both build on it.
"""
