"""Tenants: a namespace with a ResourceQuota, ServiceAccount `spark`, a Role and its RoleBinding.

The manifests and the quota arithmetic are pure; `create_tenant` / `tenant_usage` are the thin edge.
Extended resources (nec.com/ve) can only be limited as `requests.<name>` in a ResourceQuota, so
`--quota nec.com/ve=8` is written that way; `cpu` and `memory` mean their requests, as in Kubernetes.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubeaccel.errors import ConfigError
from kubeaccel.kube.client import Kube
from kubeaccel.kube.quantity import format_quantity, parse_quantity

SERVICE_ACCOUNT = "spark"
ROLE = "spark"
QUOTA = "spark-quota"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubeaccel"}
_ROLE_RESOURCES = ["pods", "services", "configmaps", "persistentvolumeclaims"]
_ROLE_VERBS = ["create", "get", "list", "watch", "update", "patch", "delete", "deletecollection"]
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# keys a ResourceQuota accepts besides `requests.<extended resource>`
_PLAIN_KEYS = {
    "pods",
    "services",
    "configmaps",
    "secrets",
    "persistentvolumeclaims",
    "requests.storage",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
    "requests.ephemeral-storage",
    "limits.ephemeral-storage",
}


def quota_key(name: str) -> str:
    """The ResourceQuota key for a user's `--quota` name."""
    if name in ("cpu", "memory", "ephemeral-storage"):
        return f"requests.{name}"
    if name in _PLAIN_KEYS or name.startswith("count/"):
        return name
    if "/" in name:
        bare = name.removeprefix("requests.")
        if bare.startswith("limits."):
            raise ConfigError(
                f"quota {name!r}: extended resources cannot have a limits quota",
                hint=f"use requests.{bare.removeprefix('limits.')} (Kubernetes allows only that form)",
            )
        return f"requests.{bare}"
    raise ConfigError(
        f"quota {name!r} is not a resource a ResourceQuota can limit",
        hint="use cpu, memory, pods, limits.cpu, limits.memory or an extended resource like nec.com/ve",
    )


def parse_quota(text: str) -> dict[str, str]:
    """`cpu=16,memory=64Gi,nec.com/ve=8` -> ResourceQuota `hard`."""
    hard: dict[str, str] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, amount = item.partition("=")
        if not sep or not name.strip() or not amount.strip():
            raise ConfigError(
                f"quota item {item!r} is not NAME=AMOUNT", hint="e.g. --quota cpu=16,memory=64Gi,nec.com/ve=8"
            )
        parse_quantity(amount.strip())
        hard[quota_key(name.strip())] = amount.strip()
    return hard


def check_namespace_name(name: str) -> None:
    if not _NAMESPACE_RE.match(name):
        raise ConfigError(
            f"{name!r} is not a valid namespace name",
            hint="use at most 63 lowercase letters, digits and '-', starting and ending alphanumeric",
        )


def tenant_manifests(name: str, hard: Mapping[str, str]) -> list[dict[str, Any]]:
    """Everything a Spark tenant needs, in the order it must be applied."""
    check_namespace_name(name)
    manifests: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": {**MANAGED_BY, "kubeaccel.io/tenant": name}},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": name, "labels": dict(MANAGED_BY)},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": ROLE, "namespace": name, "labels": dict(MANAGED_BY)},
            "rules": [{"apiGroups": [""], "resources": list(_ROLE_RESOURCES), "verbs": list(_ROLE_VERBS)}],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": ROLE, "namespace": name, "labels": dict(MANAGED_BY)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": name}],
        },
    ]
    if hard:
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": QUOTA, "namespace": name, "labels": dict(MANAGED_BY)},
                "spec": {"hard": dict(hard)},
            }
        )
    return manifests


@dataclass(frozen=True)
class Shortfall:
    """One quota line an application does not fit in."""

    quota: str
    resource: str
    needed: Decimal
    remaining: Decimal
    hard: Decimal
    reserved: Decimal = Decimal(0)

    def describe(self) -> str:
        text = (
            f"{self.resource}: the app needs {format_quantity(self.needed, self.resource)}, quota "
            f"{self.quota} has {format_quantity(self.remaining, self.resource)} left of "
            f"{format_quantity(self.hard, self.resource)}"
        )
        if self.reserved:
            text += f", of which {format_quantity(self.reserved, self.resource)} other apps' executors still need"
        return text


def _equivalent(key: str) -> str:
    return {"cpu": "requests.cpu", "memory": "requests.memory"}.get(key, key)


def shortfalls(
    quota: str,
    hard: Mapping[str, str],
    used: Mapping[str, str],
    needed: Mapping[str, Decimal],
    reserved: Mapping[str, Decimal] | None = None,
) -> list[Shortfall]:
    """Which of `needed` (an app's totals, quota-keyed) the quota's remaining room cannot hold, once
    `reserved` (what other admitted apps will still ask for) is set aside."""
    reserved = reserved or {}
    result = []
    for raw_key, limit in hard.items():
        key = _equivalent(raw_key)
        if key not in needed:
            continue
        hard_value = parse_quantity(limit)
        remaining = hard_value - parse_quantity(used.get(raw_key, "0"))
        held = reserved.get(key, Decimal(0))
        if needed[key] > remaining - held:
            result.append(Shortfall(quota, key, needed[key], max(remaining, Decimal(0)), hard_value, held))
    return result


def create_tenant(kube: Kube, name: str, hard: Mapping[str, str]) -> list[str]:
    """Apply the tenant (idempotent: server-side apply). Returns what was applied, as `kind/name`."""
    applied = []
    for manifest in tenant_manifests(name, hard):
        namespace = manifest["metadata"].get("namespace")
        kube.apply(manifest, namespace=namespace)
        applied.append(f"{manifest['kind']}/{manifest['metadata']['name']}")
    return applied


@dataclass(frozen=True)
class QuotaUsage:
    quota: str
    resource: str
    used: str
    hard: str


def quota_state(quota: Any) -> tuple[str, dict[str, str], dict[str, str]]:
    """(name, hard, used) of a ResourceQuota; `hard` from status once the controller has seen it."""
    status = quota.status
    hard = (status.hard if status and status.hard else None) or (quota.spec.hard if quota.spec else None) or {}
    used = (status.used if status and status.used else None) or {}
    name = (quota.metadata.name if quota.metadata else None) or "?"
    return name, dict(hard), dict(used)


def tenant_usage(kube: Kube, name: str) -> list[QuotaUsage]:
    """Usage against every ResourceQuota in the tenant's namespace (checks the namespace exists)."""
    from lightkube.resources.core_v1 import Namespace, ResourceQuota

    kube.get(Namespace, name)
    rows = []
    for quota in kube.list(ResourceQuota, namespace=name):
        quota_name, hard, used = quota_state(quota)
        rows += [QuotaUsage(quota_name, key, used.get(key, "0"), hard[key]) for key in sorted(hard)]
    return rows
