"""Workload side: Spark on Kubernetes submission, dependencies, management and device discovery."""
