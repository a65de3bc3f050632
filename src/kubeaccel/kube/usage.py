"""What creating one object adds to a namespace's ResourceQuota, and whether a quota has room for it.

Used by the door to tell a quota refusal from another admission refusal by the numbers (`hard`,
`used`) rather than the API's message text. Pure.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from kubeaccel.errors import ConfigError
from kubeaccel.kube.quantity import parse_quantity

_COUNTED = {
    "Service": "services",
    "ConfigMap": "configmaps",
    "Secret": "secrets",
    "PersistentVolumeClaim": "persistentvolumeclaims",
}


def _add(total: dict[str, Decimal], key: str, value: Any) -> None:
    # the API server judges malformed quantities; they never count against a quota
    with contextlib.suppress(ConfigError):
        total[key] = total.get(key, Decimal(0)) + parse_quantity(value)


def _container_usage(container: Mapping[str, Any]) -> dict[str, Decimal]:
    resources = container.get("resources") or {}
    requests = dict(resources.get("requests") or {})
    limits = dict(resources.get("limits") or {})
    for key, value in limits.items():
        requests.setdefault(key, value)  # Kubernetes defaults a missing request to the limit
    usage: dict[str, Decimal] = {}
    for key, value in requests.items():
        _add(usage, f"requests.{key}", value)
        if key in ("cpu", "memory", "ephemeral-storage"):
            _add(usage, key, value)
    for key, value in limits.items():
        _add(usage, f"limits.{key}", value)
    return usage


def object_usage(manifest: Mapping[str, Any]) -> dict[str, Decimal]:
    """The quota keys one object counts against, with amounts (a Pod: its containers' sum, init max)."""
    kind = str(manifest.get("kind", ""))
    plural = _COUNTED.get(kind, kind.lower() + "s")
    usage = {f"count/{plural}": Decimal(1)}
    if kind in _COUNTED:
        usage[_COUNTED[kind]] = Decimal(1)
    if kind != "Pod":
        return usage
    usage["pods"] = Decimal(1)
    spec = manifest.get("spec") or {}
    total: dict[str, Decimal] = {}
    for container in spec.get("containers") or []:
        for key, value in _container_usage(container).items():
            total[key] = total.get(key, Decimal(0)) + value
    for container in spec.get("initContainers") or []:
        for key, value in _container_usage(container).items():
            total[key] = max(total.get(key, Decimal(0)), value)
    return {**usage, **total}


def exceeds(hard: Mapping[str, Any], used: Mapping[str, Any], usage: Mapping[str, Decimal]) -> bool:
    """True when adding `usage` goes over any limit of a quota with these `hard` and `used` amounts."""
    for key, amount in usage.items():
        if key not in hard:
            continue
        try:
            limit = parse_quantity(hard[key])
            now = parse_quantity(used.get(key, "0"))
        except ConfigError:
            continue
        if now + amount > limit:
            return True
    return False
