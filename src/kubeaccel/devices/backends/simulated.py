"""Simulated devices: a fixed number of devices whose health an operator scripts through a file.

For tests and demos on machines without accelerators. IDs are ``<idPrefix>-<n>`` (``sim-0`` …),
indices ``0`` … ``count-1``; devices are spread over ``numaNodes`` NUMA nodes in contiguous
blocks (like real sockets: the first half on node 0, the second on node 1).

``stateFile`` (optional) is a JSON object ``{"sim-1": "Unhealthy", "sim-3": "Absent"}``; IDs it
does not name are healthy, ``Absent`` devices disappear from the list (an unplug) and come back
when the entry goes. The file is watched with inotify on its directory (``kubeaccel.devices.watch``):
``wait_for_change`` returns within a millisecond of the writer closing the file or renaming a new
one over it, and an idle daemon does no work at all. Replacing the file atomically (write a temp
file, rename) is the recommended way; an in-place rewrite never flaps either, because a read that
sees an empty or partial file (a write in progress) keeps the last good state, and the writer's
close wakes a fresh read. A missing file means all healthy; an unreadable or malformed file keeps
the last good state and is reported by ``state_error`` rather than crashing the daemon.

``deviceDir`` (optional): when set, the backend creates one node per device there
(``<deviceDir>/<id>``) and advertises it as the device node mounted at ``/dev/<id>``, so the
full Allocate path — device specs included — can be exercised without real hardware. As root the
node is a character device with ``/dev/null``'s numbers (container runtimes refuse a plain file
as a device: "not a device node"); without CAP_MKNOD it falls back to a plain file, which is
enough for the protocol but not for a real container. Without ``deviceDir``, simulated devices
have no device nodes.
"""

from __future__ import annotations

import json
import logging
import os
import stat
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, field_validator

from kubeaccel.devices.model import ContainerAllocation, Device, DeviceNode, Devices, Health
from kubeaccel.devices.quantity import parse_quantity
from kubeaccel.devices.watch import FileWatcher
from kubeaccel.errors import ConfigError

log = logging.getLogger(__name__)

# Only while the state file's directory does not exist: then it is checked this often, and
# inotify takes over as soon as it appears.
FALLBACK_INTERVAL_S = 1.0

State = Literal["Healthy", "Unhealthy", "Absent"]



_NULL_DEVICE = os.makedev(1, 3)  # /dev/null's numbers: a harmless character device to stand in


def _make_device_node(path: Path) -> None:
    """A character device at ``path`` when we may create one, else a plain file."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISCHR(st.st_mode):
        return
    try:
        if st is not None:
            path.unlink()
        os.mknod(path, 0o666 | stat.S_IFCHR, _NULL_DEVICE)
    except PermissionError:
        path.touch()

class Config(BaseModel):
    """The simulated backend's own keys."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    count: StrictInt = Field(ge=0, le=4096, description="How many devices to simulate.")
    numa_nodes: StrictInt = Field(
        default=1, ge=1, le=64, alias="numaNodes", description="NUMA nodes to spread them over."
    )
    state_file: Path | None = Field(default=None, alias="stateFile", description="JSON map of device ID to state.")
    id_prefix: str = Field(
        default="sim", alias="idPrefix", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,40}$", description="Device ID prefix."
    )
    device_dir: Path | None = Field(
        default=None, alias="deviceDir", description="Create one plain file per device here as its device node."
    )
    memory: str | None = Field(
        default=None,
        description="Memory capacity of each device, a quantity such as 80Gi (published as DRA capacity memory).",
    )

    @field_validator("memory")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        if value is not None:
            parse_quantity(value)  # ValueError says what a quantity looks like
        return value

    @property
    def memory_bytes(self) -> int | None:
        return parse_quantity(self.memory) if self.memory is not None else None


_Fingerprint = tuple[int, int, int] | None


def _fingerprint(path: Path) -> _Fingerprint:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class SimulatedBackend:
    """``Backend`` over ``count`` simulated devices with file-scripted health."""

    def __init__(self, resource_name: str, config: Config, *, root: Path = Path("/")) -> None:
        self._resource_name = resource_name
        self._config = config
        # stateFile and deviceDir are the operator's own paths, not part of the node's /dev or
        # /sys, so ``root`` does not prefix them.
        self._state_file = config.state_file
        self._device_dir = config.device_dir
        self._lock = threading.Lock()
        self._states: dict[str, State] = {}
        self.state_error: str | None = None
        self._seen: _Fingerprint = None
        if self._device_dir is not None:
            try:
                self._device_dir.mkdir(parents=True, exist_ok=True)
                for i in range(config.count):
                    _make_device_node(self._device_dir / self._id(i))
            except OSError as exc:
                raise ConfigError(
                    f"{resource_name}: cannot create simulated device files in deviceDir {self._device_dir}: "
                    f"{exc.strerror}",
                    hint="point deviceDir at a writable directory, or leave it out for devices without nodes",
                ) from None
        # Made before the first read, so a write in between is signalled rather than missed. Without a
        # state file nothing can change: the wait is then one sleep until the timeout or close().
        self._closed = threading.Event()
        self._watcher = FileWatcher(self._state_file, FALLBACK_INTERVAL_S) if self._state_file is not None else None
        self._reload()

    @property
    def resource_name(self) -> str:
        return self._resource_name

    def _id(self, i: int) -> str:
        return f"{self._config.id_prefix}-{i}"

    def _reload(self) -> None:
        """Re-read the state file when its fingerprint changed; keep the last good state on error."""
        path = self._state_file
        if path is None:
            return
        fingerprint = _fingerprint(path)
        if fingerprint == self._seen:
            return
        self._seen = fingerprint
        if fingerprint is None:
            states: dict[str, State] = {}
        else:
            try:
                text = path.read_bytes().decode("utf-8")
                if not text.strip():  # truncated for an in-place rewrite: wait for the writer's close
                    return
                states = _parse_states(text)
            except (OSError, ValueError) as exc:
                self.state_error = f"{path}: {exc}"
                log.warning("%s: ignoring the state file, keeping the last good state: %s", self._resource_name,
                            self.state_error)
                return
        with self._lock:
            self._states = states
            self.state_error = None

    def scan(self) -> Devices:
        self._reload()
        with self._lock:
            states = dict(self._states)
        count, numa = self._config.count, self._config.numa_nodes
        memory = self._config.memory_bytes
        capacity = (("memory", memory),) if memory is not None else ()
        devices = []
        for i in range(count):
            device_id = self._id(i)
            state = states.get(device_id, "Healthy")
            if state == "Absent":
                continue
            nodes: tuple[DeviceNode, ...] = ()
            if self._device_dir is not None:
                nodes = (DeviceNode(str(self._device_dir / device_id), f"/dev/{device_id}"),)
            devices.append(
                Device(
                    id=device_id,
                    index=str(i),
                    health=Health(state),
                    numa_node=i * numa // count,
                    nodes=nodes,
                    capacity=capacity,
                )
            )
        return Devices(devices)

    def container_allocation(self, devices: Sequence[Device]) -> ContainerAllocation:
        # No native variables and no extra nodes: the plugin itself exposes each device's nodes
        # and sets KUBEACCEL_DEVICES_*.
        return ContainerAllocation()

    def wait_for_change(self, timeout: float) -> bool:
        if self._watcher is None:
            self._closed.wait(timeout)
            return False
        return self._watcher.wait(timeout)

    def close(self) -> None:
        self._closed.set()
        if self._watcher is not None:
            self._watcher.close()


def _parse_states(text: str) -> dict[str, State]:
    """``{"sim-1": "Unhealthy"}`` → states; ``ValueError`` says what is wrong (bounded)."""
    data = json.loads(text)
    if not isinstance(data, Mapping):
        raise ValueError("the state file must hold a JSON object of device ID to state")
    states: dict[str, State] = {}
    for key, value in data.items():
        if value not in ("Healthy", "Unhealthy", "Absent"):
            raise ValueError(
                f"state of {str(key)[:64]!r} is {str(value)[:64]!r}; expected Healthy, Unhealthy or Absent"
            )
        states[str(key)] = value
    return states


def create(resource_name: str, config: Config, *, root: Path = Path("/")) -> SimulatedBackend:
    return SimulatedBackend(resource_name, config, root=root)
