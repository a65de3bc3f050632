"""Dynamic Resource Allocation objects (``resource.k8s.io/v1``) through the one door, ``Kube``.

ResourceSlices (the node daemon publishes its devices), ResourceClaims (read when the kubelet asks
to prepare one; created and allocated by the conformance checker), DeviceClasses. Claims and slices
travel as plain JSON: the driver validates the few fields it reads itself, and a malformed
allocation must become that claim's error, not a decoding failure. Errors are the client's
(``translate_errors``): unreachable → UnavailableError, 404 → NotFoundError, …
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightkube.resources.resource_v1 import DeviceClass, ResourceClaim, ResourceClaimStatus, ResourceSlice

from kubeaccel.kube.client import Kube

__all__ = [
    "apply_device_class",
    "apply_slice",
    "connect",
    "create_claim",
    "delete_claim",
    "delete_device_class",
    "delete_slice",
    "get_claim",
    "list_slices",
    "set_claim_allocation",
]


def connect(kubeconfig: Path | str | None = None) -> Kube:
    """A client from ``kubeconfig`` (or KUBECONFIG, or ~/.kube/config), else the pod's service account
    (a DaemonSet): the door's one way of choosing, as kubectl's."""
    return Kube.connect(kubeconfig=kubeconfig)


def get_claim(kube: Kube, namespace: str, name: str) -> dict[str, Any]:
    """The ResourceClaim as the API server stores it (plain JSON)."""
    return _to_dict(kube.get(ResourceClaim, name, namespace=namespace))


def list_slices(kube: Kube, *, driver: str, node: str | None = None) -> list[dict[str, Any]]:
    """ResourceSlices of ``driver`` (on ``node`` when given); the API server filters by both fields."""
    fields = {"spec.driver": driver}
    if node is not None:
        fields["spec.nodeName"] = node
    return kube.list_raw(ResourceSlice, fields=fields)


def apply_slice(kube: Kube, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """Create or update a ResourceSlice (server-side apply); returns the stored object."""
    return _to_dict(kube.apply(manifest))


def delete_slice(kube: Kube, name: str) -> None:
    kube.delete(ResourceSlice, name, missing_ok=True)


def apply_device_class(kube: Kube, manifest: Mapping[str, Any]) -> dict[str, Any]:
    return _to_dict(kube.apply(manifest))


def delete_device_class(kube: Kube, name: str) -> None:
    kube.delete(DeviceClass, name, missing_ok=True)


def create_claim(kube: Kube, manifest: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    return kube.create(manifest, namespace)


def delete_claim(kube: Kube, namespace: str, name: str) -> None:
    kube.delete(ResourceClaim, name, namespace=namespace, missing_ok=True)


def set_claim_allocation(kube: Kube, namespace: str, name: str, status: Mapping[str, Any]) -> dict[str, Any]:
    """Write ``status`` (allocation, reservedFor) as the scheduler would: for checkers and tests."""
    return _to_dict(kube.merge_patch(ResourceClaimStatus, name, {"status": dict(status)}, namespace=namespace))


def _to_dict(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)
    return out
