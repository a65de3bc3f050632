"""Thin adapter over the Kubernetes client (lightkube), and tenancy (namespace, quota, RBAC)."""
