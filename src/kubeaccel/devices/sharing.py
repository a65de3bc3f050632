"""Time-sharing: advertise each device K times so K containers can be placed on it.

The kubelet only knows whole devices, so sharing is expressed as *replicas*: device ``ve0`` with
``replicas: 3`` is advertised as ``ve0::0``, ``ve0::1`` and ``ve0::2``, each with the real device's
health, NUMA node and index. When the kubelet allocates replicas, the container gets the distinct
real devices behind them, so two replicas of one device expose that device once.

Sharing gives no isolation (memory, compute): it is for devices whose own runtime multiplexes
users (VEOS, a serial line behind a broker, a GPU under MPS or time-slicing).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace

from kubeaccel.devices.model import Backend, ContainerAllocation, Device, Devices, Resettable, sort_key
from kubeaccel.errors import ConfigError

REPLICA_SEPARATOR = "::"


def replica_id(device_id: str, n: int) -> str:
    """``ve0``, 2 -> ``ve0::2``."""
    return f"{device_id}{REPLICA_SEPARATOR}{n}"


def device_id_of(replica: str) -> str:
    """The real device behind a replica ID (``ve0::2`` -> ``ve0``); other IDs map to themselves."""
    head, sep, tail = replica.rpartition(REPLICA_SEPARATOR)
    return head if sep and head and tail.isdigit() else replica


def device_ids_of(replicas: Iterable[str]) -> list[str]:
    """The distinct real devices behind some replica IDs, in natural order."""
    return sorted({device_id_of(r) for r in replicas}, key=sort_key)


def _real_devices(replicas: Sequence[Device]) -> list[Device]:
    # A replica carries the real device's fields, so the real device is the replica renamed back.
    real: dict[str, Device] = {}
    for dev in replicas:
        real.setdefault(device_id_of(dev.id), replace(dev, id=device_id_of(dev.id)))
    return [real[i] for i in sorted(real, key=sort_key)]


class SharedBackend:
    """Wraps a ``Backend`` and advertises ``replicas`` IDs per real device.

    It is ``Resettable`` exactly when the wrapped backend is (``SharedBackend(...)`` then returns
    the resettable subclass), so the plugin offers ``PreStartContainer`` only when it can honour it.
    """

    def __new__(cls, backend: Backend, replicas: int) -> SharedBackend:
        chosen = _ResettableSharedBackend if cls is SharedBackend and isinstance(backend, Resettable) else cls
        return super().__new__(chosen)

    def __init__(self, backend: Backend, replicas: int) -> None:
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 1:
            raise ConfigError(
                f"replicas must be a whole number of at least 1, got {replicas!r}",
                hint="set `replicas: K` (K >= 1) to let K containers share each device",
            )
        self._backend = backend
        self.replicas = replicas
        self._order: list[tuple[str, str]] = []
        self._order_key: tuple[str, ...] | None = None

    @property
    def inner(self) -> Backend:
        return self._backend

    @property
    def resource_name(self) -> str:
        return self._backend.resource_name

    def scan(self) -> Devices:
        real = self._backend.scan()
        # The natural order of the replica IDs depends only on the real IDs: sorted once, reused
        # while the device set stays the same (a health change rescans 131,072 replicas in
        # a fraction of the time).
        key = tuple(real.keys())
        if key != self._order_key:
            pairs = [(replica_id(i, n), i) for i in key for n in range(self.replicas)]
            pairs.sort(key=lambda p: sort_key(p[0]))
            self._order, self._order_key = pairs, key
        out: dict[str, Device] = {}
        for rid, base in self._order:
            d = real[base]
            out[rid] = Device(rid, d.index, d.health, d.numa_node, d.nodes, d.attributes, d.capacity)
        return Devices.ordered(out)

    def container_allocation(self, devices: Sequence[Device]) -> ContainerAllocation:
        return self._backend.container_allocation(_real_devices(devices))

    def wait_for_change(self, timeout: float) -> bool:
        return self._backend.wait_for_change(timeout)

    def close(self) -> None:
        self._backend.close()

    def __repr__(self) -> str:
        return f"SharedBackend({self._backend!r}, replicas={self.replicas})"


class _ResettableSharedBackend(SharedBackend):
    def reset(self, devices: Sequence[Device]) -> None:
        # Replicas of one device reset it once.
        inner = self._backend
        assert isinstance(inner, Resettable)
        inner.reset(_real_devices(devices))
