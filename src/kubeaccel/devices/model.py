"""The device model every backend produces and the plugin serves.

A backend *scans* the node and returns a ``Devices`` snapshot; the plugin compares snapshots
(``==``) to decide when to push a new list to the kubelet. All types here are immutable so snapshots can be
shared between threads without locks.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable


class Health(StrEnum):
    """The two health values of the kubelet API (``Healthy`` / ``Unhealthy``)."""

    HEALTHY = "Healthy"
    UNHEALTHY = "Unhealthy"


@dataclass(frozen=True, order=True)
class DeviceNode:
    """A device node to expose in the container (kubelet ``DeviceSpec``)."""

    host_path: str
    container_path: str
    permissions: str = "rw"


@dataclass(frozen=True, order=True)
class Mount:
    """A host path bind-mounted into the container (kubelet ``Mount``)."""

    host_path: str
    container_path: str
    read_only: bool = False


@dataclass(frozen=True)
class Device:
    """One schedulable unit of a resource.

    ``id`` is what the kubelet sees (``<id>::<n>`` for shared replicas); ``index`` is what the
    workload sees in ``KUBEACCEL_DEVICES_*`` (for VE the slot number, for NVIDIA the GPU index).
    """

    id: str
    index: str
    health: Health = Health.HEALTHY
    numa_node: int | None = None
    nodes: tuple[DeviceNode, ...] = ()
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def healthy(self) -> bool:
        return self.health is Health.HEALTHY


_NUM_RE = re.compile(r"(\d+)")


def sort_key(device_id: str) -> tuple[tuple[int, int | str], ...]:
    """Natural order, so ``sim-10`` sorts after ``sim-9`` and order is stable across restarts."""
    return tuple((0, int(p)) if p.isdecimal() else (1, p) for p in _NUM_RE.split(device_id) if p)


class Devices(Mapping[str, Device]):
    """An immutable snapshot of a resource's devices, iterated in natural ID order."""

    __slots__ = ("_by_id",)

    def __init__(self, devices: Iterable[Device] = ()) -> None:
        by_id: dict[str, Device] = {}
        for dev in devices:
            if dev.id in by_id:
                raise ValueError(f"duplicate device ID {dev.id!r}")
            by_id[dev.id] = dev
        self._by_id = {k: by_id[k] for k in sorted(by_id, key=sort_key)}

    def __getitem__(self, device_id: str) -> Device:
        return self._by_id[device_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Devices):
            return self._by_id == other._by_id
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self._by_id.values()))

    def __repr__(self) -> str:
        return f"Devices({list(self._by_id.values())!r})"

    def healthy(self) -> Devices:
        return Devices(d for d in self._by_id.values() if d.healthy)

    def subset(self, ids: Iterable[str]) -> Devices:
        """The devices with these IDs; ``KeyError`` names the first unknown one."""
        return Devices(self._by_id[i] for i in sorted(set(ids), key=sort_key))

    def unknown(self, ids: Iterable[str]) -> list[str]:
        """IDs not in this snapshot, in sorted order."""
        return sorted({i for i in ids if i not in self._by_id}, key=sort_key)


@dataclass(frozen=True)
class ContainerAllocation:
    """What a backend adds for one container beyond the device nodes of its devices.

    The plugin adds ``KUBEACCEL_DEVICES_<RESOURCE>`` itself; a backend contributes its family's
    native variables (``VE_NODE_NUMBER``, ``NVIDIA_VISIBLE_DEVICES``), extra nodes and mounts.
    """

    envs: Mapping[str, str] = field(default_factory=dict)
    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    cdi_devices: tuple[str, ...] = ()


class Backend(Protocol):
    """Discovers one resource's devices on this node. Pure Python, no gRPC.

    ``scan`` must be cheap and side-effect free; it is called on every change and on a timer.
    """

    @property
    def resource_name(self) -> str: ...

    def scan(self) -> Devices: ...

    def container_allocation(self, devices: Sequence[Device]) -> ContainerAllocation: ...

    def wait_for_change(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when the devices may have changed.

        Backends with a native change signal (a watched state file, NVML events, sysfs poll)
        return as soon as it fires, so health changes reach the kubelet at once.
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class Resettable(Protocol):
    """Optional: a backend that resets devices before a container starts (``PreStartContainer``)."""

    def reset(self, devices: Sequence[Device]) -> None: ...
