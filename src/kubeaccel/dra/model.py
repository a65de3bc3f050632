"""The driver's view of the node as plain data: pools, DNS-safe device names, ResourceSlices, DeviceClasses.

Pure: no I/O, no gRPC, no client. Every built object is a plain mapping the API server validates;
the daemon applies them through ``kube.dra``.

Layout: one pool per configured resource, ``<node>/<resource>`` (pool names are DNS subdomains
separated by slashes), published as one ResourceSlice. A device's name is its backend ID made a
DNS label (``veslot0``, ``sim-0``, ``gpu-3f2a…``); its attributes are the driver-domain ``index``,
``numaNode``, ``resource`` and what the backend knows (``model``, ``uuid``, …); unhealthy devices
carry a ``NoSchedule`` taint (or are left out where the cluster drops taints).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kubeaccel.devices.model import AttributeValue, Device, Devices, Version, semver
from kubeaccel.devices.quantity import MAX_QUANTITY, format_quantity
from kubeaccel.errors import ConfigError

API_VERSION = "resource.k8s.io/v1"
DEFAULT_DRIVER = "dra.kubeaccel.io"
HEALTH_TAINT_KEY = "kubeaccel.io/unhealthy"
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "kubeaccel-dra"

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NOT_LABEL = re.compile(r"[^a-z0-9-]+")
_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
MAX_ATTRIBUTE_STRING = 64  # resource.k8s.io/v1 DeviceAttributeMaxValueLength
# The standard attributes of k8s.io/dynamic-resource-allocation v0.37 (package deviceattribute).
STANDARD_PREFIX = "resource.kubernetes.io/"
STANDARD_NUMA_NODE = STANDARD_PREFIX + "numaNode"
STANDARD_PCI_BUS_ID = STANDARD_PREFIX + "pciBusID"
STANDARD_PCIE_ROOT = STANDARD_PREFIX + "pcieRoot"
MAX_DEVICES_PER_SLICE = 128
MAX_ATTRIBUTES_AND_CAPACITY = 32  # resource.k8s.io/v1 ResourceSliceMaxAttributesAndCapacitiesPerDevice
_CORE_ATTRIBUTES = frozenset({"index", "resource", "id", "numaNode", STANDARD_NUMA_NODE})


def check_driver_name(name: str) -> str:
    """A driver name must be a DNS subdomain the operator owns (it also qualifies attribute names)."""
    if not _DNS_SUBDOMAIN.fullmatch(name) or len(name) > 63:
        raise ConfigError(
            f"{name!r} is not a valid DRA driver name",
            hint="use a lower-case DNS subdomain of at most 63 characters that you own, e.g. dra.example.com",
        )
    return name


def dns_label(raw: str) -> str:
    """``raw`` as a DNS label: lower-cased, runs of other characters become ``-``; too long or empty → hashed."""
    label = _NOT_LABEL.sub("-", raw.lower()).strip("-")
    if _DNS_LABEL.fullmatch(label):
        return label
    digest = hashlib.sha256(raw.encode()).hexdigest()[:10]
    head = label[:50].strip("-")
    return f"{head}-{digest}" if head else f"d-{digest}"


def pool_name(node: str, resource_name: str) -> str:
    """``worker-1/nec.com/ve``: one pool per resource on each node."""
    domain, _, name = resource_name.partition("/")
    return f"{node}/{domain}/{dns_label(name)}"


def slice_name(node: str, driver: str, resource_name: str) -> str:
    """A stable object name per (node, driver, resource): re-applied, never duplicated."""
    base = f"{node}-{driver}-{resource_name}"
    if len(base) <= 63:
        return dns_label(base)
    return f"{dns_label(node)[:40].strip('-')}-{hashlib.sha256(base.encode()).hexdigest()[:16]}"


def device_class_name(resource_name: str) -> str:
    """``nec.com/ve`` → ``ve.nec.com``: a DNS subdomain that reads like the resource."""
    domain, _, name = resource_name.partition("/")
    return f"{dns_label(name)}.{domain}"


def device_names(devices: Devices) -> dict[str, Device]:
    """DNS-label device name → device, stable for a given set of IDs (collisions get a hash suffix)."""
    out: dict[str, Device] = {}
    for device in devices.values():
        name = dns_label(device.id)
        if name in out:
            name = f"{name[:50]}-{hashlib.sha256(device.id.encode()).hexdigest()[:10]}"
        out[name] = device
    return out


@dataclass(frozen=True)
class Pool:
    """One resource's devices on this node, as the driver publishes and prepares them."""

    resource_name: str
    name: str
    devices: Mapping[str, Device]  # DNS device name -> device

    @classmethod
    def of(cls, node: str, resource_name: str, devices: Devices) -> Pool:
        return cls(resource_name, pool_name(node, resource_name), device_names(devices))


def _value(raw: AttributeValue) -> dict[str, Any] | None:
    """One attribute value in the API's form; typed values keep their type, plain text is guessed as before.

    None for a value the API would refuse (an int beyond int64, a version that is not semver)."""
    if isinstance(raw, bool):
        return {"bool": raw}
    if isinstance(raw, int):
        return {"int": raw} if -(2**63) <= raw < 2**63 else None
    if isinstance(raw, Version):
        return {"version": str(raw)} if semver(raw) == raw else None
    if raw.isdecimal() and len(raw) < 19:
        return {"int": int(raw)}
    if raw in ("true", "false"):
        return {"bool": raw == "true"}
    return {"string": raw[:MAX_ATTRIBUTE_STRING]}


def _attribute_name(key: str) -> bool:
    """An identifier (the driver's domain) or ``domain/identifier`` (a standard or vendor attribute)."""
    domain, slash, name = key.rpartition("/")
    if not _C_IDENTIFIER.fullmatch(name):
        return False
    return not slash or (bool(_DNS_SUBDOMAIN.fullmatch(domain)) and len(domain) <= 63)


def device_attributes(resource_name: str, device: Device) -> dict[str, dict[str, Any]]:
    """Attributes: unqualified names are the driver's (CEL: ``device.attributes["<driver>"].index``);
    qualified ones keep their domain (``device.attributes["resource.kubernetes.io"].numaNode``)."""
    attrs: dict[str, dict[str, Any]] = {}
    for key, raw in device.attributes:
        if _attribute_name(key) and (value := _value(raw)) is not None:
            attrs[key] = value
    attrs["index"] = _value(device.index) or {"string": device.index[:MAX_ATTRIBUTE_STRING]}
    attrs["resource"] = {"string": resource_name}
    attrs["id"] = {"string": device.id[:MAX_ATTRIBUTE_STRING]}
    if device.numa_node is not None:
        attrs["numaNode"] = {"int": device.numa_node}
        # k8s.io/dynamic-resource-allocation v0.37 deviceattribute.StandardDeviceAttributeNUMANode:
        # a scalar int, published only for a device with NUMA affinity.
        attrs[STANDARD_NUMA_NODE] = {"int": device.numa_node}
    return dict(sorted(attrs.items()))


def device_capacity(device: Device) -> dict[str, dict[str, str]]:
    """Capacity as the backend reports it (``memory`` in bytes, ``cores``), as quantities (``143771Mi``)."""
    return {
        name: {"value": format_quantity(value)}
        for name, value in sorted(device.capacity)
        if _attribute_name(name) and 0 <= value <= MAX_QUANTITY
    }


def slice_device(resource_name: str, name: str, device: Device, *, taints: bool) -> dict[str, Any] | None:
    """One ``devices[]`` entry; an unhealthy device is tainted, or left out (None) when taints are off."""
    attributes = device_attributes(resource_name, device)
    capacity = device_capacity(device)
    spare = MAX_ATTRIBUTES_AND_CAPACITY - len(capacity)
    if len(attributes) > spare:  # the API refuses the slice: keep ours, then the backend's in name order
        keep = [k for k in attributes if k in _CORE_ATTRIBUTES] + [k for k in attributes if k not in _CORE_ATTRIBUTES]
        attributes = {k: attributes[k] for k in sorted(keep[:spare])}
    entry: dict[str, Any] = {"name": name, "attributes": attributes}
    if capacity:
        entry["capacity"] = capacity
    if not device.healthy:
        if not taints:
            return None
        entry["taints"] = [{"key": HEALTH_TAINT_KEY, "value": str(device.health), "effect": "NoSchedule"}]
    return entry


def resource_slices(
    node: str, driver: str, pool: Pool, generation: int, *, taints: bool = True
) -> list[dict[str, Any]]:
    """The ResourceSlices for one pool on ``node``: one, or more when the pool exceeds a slice's 128 devices."""
    devices = [
        entry for name, device in pool.devices.items()
        if (entry := slice_device(pool.resource_name, name, device, taints=taints)) is not None
    ]
    chunks = [devices[i:i + MAX_DEVICES_PER_SLICE] for i in range(0, len(devices), MAX_DEVICES_PER_SLICE)] or [[]]
    base = slice_name(node, driver, pool.resource_name)
    return [
        {
            "apiVersion": API_VERSION,
            "kind": "ResourceSlice",
            "metadata": {"name": base if i == 0 else f"{base}-{i}", "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
            "spec": {
                "driver": driver,
                "nodeName": node,
                "pool": {"name": pool.name, "generation": generation, "resourceSliceCount": len(chunks)},
                "devices": chunk,
            },
        }
        for i, chunk in enumerate(chunks)
    ]


def resource_slice(node: str, driver: str, pool: Pool, generation: int, *, taints: bool = True) -> dict[str, Any]:
    """The first (for pools of up to 128 devices, the only) ResourceSlice of a pool."""
    return resource_slices(node, driver, pool, generation, taints=taints)[0]


def class_selector(driver: str, resource_name: str) -> str:
    """The CEL expression a DeviceClass uses to pick one resource's devices of this driver."""
    return f'device.driver == "{driver}" && device.attributes["{driver}"].resource == "{resource_name}"'


def device_class(driver: str, resource_name: str, *, extended_resource: bool = True) -> dict[str, Any]:
    """A DeviceClass per resource; with ``extendedResourceName`` a pod's ``limits: {nec.com/ve: 1}`` is served too."""
    spec: dict[str, Any] = {"selectors": [{"cel": {"expression": class_selector(driver, resource_name)}}]}
    if extended_resource:
        spec["extendedResourceName"] = resource_name
    return {
        "apiVersion": API_VERSION,
        "kind": "DeviceClass",
        "metadata": {"name": device_class_name(resource_name), "labels": {MANAGED_BY_LABEL: MANAGED_BY}},
        "spec": spec,
    }


def pools(node: str, snapshots: Iterable[tuple[str, Devices]]) -> dict[str, Pool]:
    """Pool name → pool for every resource."""
    return {p.name: p for p in (Pool.of(node, r, d) for r, d in snapshots)}
