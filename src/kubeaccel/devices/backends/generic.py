"""Generic device nodes: any ``/dev`` entries matched by globs (serial adapters, FPGAs, TPM, ...).

Each matched node is one device. Its ID is its path below ``/dev`` with ``/`` turned into ``_``
(``/dev/ttyUSB0`` -> ``ttyUSB0``, ``/dev/bus/usb/001/004`` -> ``bus_usb_001_004``; of two nodes
that map to one ID, only the first in natural order is advertised) and its
index, the value the workload sees in ``KUBEACCEL_DEVICES_*``, is the number at the end of the
node's name (``ttyUSB3`` -> ``3``), stable when other nodes come and go. When some node has no
trailing number, or two numbers collide (``ttyUSB0`` and ``ttyACM0`` in one resource), every node
gets its position in natural ID order instead.

Health is "the node still exists": a node seen once and then gone (an unplugged adapter, a
dangling ``/dev/serial/by-id`` link) is reported ``Unhealthy`` rather than silently dropped, so
the kubelet stops placing pods on it and recovers it when it comes back.

Changes are event-driven where the kernel allows: the directories the globs look in (the part of
each pattern before its first wildcard, e.g. ``/dev`` for ``/dev/ttyUSB*``) are watched with
inotify and the fingerprint is re-read only after an event there. When one of those directories
does not exist (yet), the backend polls every ``pollIntervalSeconds`` instead. ``shareCount: K``
advertises each node K times (``ttyUSB0::0`` ...), see ``kubeaccel.devices.sharing``.
"""

from __future__ import annotations

import glob
import os
import re
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, field_validator

from kubeaccel.devices.backends._poll import ChangePoller, under_root
from kubeaccel.devices.model import Backend, ContainerAllocation, Device, DeviceNode, Devices, Health, sort_key
from kubeaccel.devices.sharing import SharedBackend
from kubeaccel.devices.watch import FILE_EVENTS, DirWatch, flags

_TRAILING_NUMBER = re.compile(r"(\d+)$")


class Config(BaseModel):
    """The generic backend's own keys."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    paths: list[str] = Field(
        min_length=1, description="Absolute globs of device nodes, e.g. /dev/ttyUSB*; several allowed."
    )
    share_count: StrictInt = Field(default=1, ge=1, le=1024, alias="shareCount", description="Containers per node.")
    permissions: str = Field(
        default="rw", pattern=r"^(rwm|rw|rm|wm|r|w|m)$", description="cgroup device access, in rwm order."
    )
    poll_interval_seconds: StrictFloat = Field(
        default=0.1, gt=0, le=60, alias="pollIntervalSeconds", description="How often to re-check the globs."
    )

    @field_validator("paths")
    @classmethod
    def _absolute(cls, paths: list[str]) -> list[str]:
        for p in paths:
            if not p.startswith("/"):
                raise ValueError(f"{p!r} is not an absolute path; write globs like /dev/ttyUSB*")
        return paths


def _device_id(path: str) -> str:
    rel = path[len("/dev/") :] if path.startswith("/dev/") else path.lstrip("/")
    return rel.replace("/", "_")


class GenericBackend:
    """``Backend`` over the device nodes that match a list of globs."""

    def __init__(self, resource_name: str, config: Config, *, root: Path = Path("/")) -> None:
        self._resource_name = resource_name
        self._config = config
        self._root = root
        self._lock = threading.Lock()
        # Host path (without root) of every node ever matched: vanished ones stay, as Unhealthy.
        self._known: set[str] = set()
        self._poller = ChangePoller(self._fingerprint, config.poll_interval_seconds)
        self._watch = self._open_watch()

    @property
    def resource_name(self) -> str:
        return self._resource_name

    def _matches(self) -> set[str]:
        found: set[str] = set()
        root = str(self._root).rstrip("/")
        for pattern in self._config.paths:
            for hit in glob.glob(glob.escape(root) + pattern):
                found.add(hit[len(root) :])
        return found

    def _fingerprint(self) -> frozenset[tuple[str, bool]]:
        with self._lock:
            known = self._known | self._matches()
        return frozenset((p, os.path.exists(under_root(self._root, p))) for p in known)

    def scan(self) -> Devices:
        matches = self._matches()
        with self._lock:
            self._known |= matches
            by_id: dict[str, str] = {}
            for path in sorted(self._known, key=sort_key):
                # /dev/a/b and /dev/a_b would share an ID: the first in natural order wins.
                by_id.setdefault(_device_id(path), path)
            paths = list(by_id.values())
        numbers = {p: m.group(1) for p in paths if (m := _TRAILING_NUMBER.search(p))}
        unique_numbers = len(numbers) == len(paths) and len(set(numbers.values())) == len(paths)
        devices = []
        for position, path in enumerate(paths):
            host = under_root(self._root, path)
            devices.append(
                Device(
                    id=_device_id(path),
                    index=str(int(numbers[path])) if unique_numbers else str(position),
                    # os.path.exists follows links: a dangling by-id link is a gone device.
                    health=Health.HEALTHY if os.path.exists(host) else Health.UNHEALTHY,
                    nodes=(DeviceNode(str(host), path, self._config.permissions),),
                    attributes=(("path", path),),
                )
            )
        return Devices(devices)

    def container_allocation(self, devices: Sequence[Device]) -> ContainerAllocation:
        return ContainerAllocation(device_nodes=tuple(n for d in devices for n in d.nodes))

    def _open_watch(self) -> DirWatch | None:
        directories = {under_root(self._root, _glob_dir(p)) for p in self._config.paths}
        try:
            return DirWatch(sorted(directories), None, FILE_EVENTS | flags.DELETE_SELF)
        except OSError:  # a directory is missing, or no inotify: poll instead
            return None

    @property
    def event_driven(self) -> bool:
        return self._watch is not None and not self._watch.gone

    def wait_for_change(self, timeout: float) -> bool:
        watch = self._watch
        if watch is None or watch.gone:
            return self._poller.wait(timeout)
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            if not watch.wait(remaining):
                return False
            if watch.gone:  # a watched directory went away: polling from here on
                return True
            if self._poller.changed():  # /dev sees unrelated churn: only our globs count
                return True
        return False

    def close(self) -> None:
        self._poller.close()
        if self._watch is not None:
            self._watch.close()


def _glob_dir(pattern: str) -> str:
    """The directory a glob looks in: the pattern up to the last ``/`` before its first wildcard."""
    cut = min((i for i, c in enumerate(pattern) if c in "*?["), default=len(pattern))
    return pattern[: pattern.rfind("/", 0, cut) + 1] or "/"


def create(resource_name: str, config: Config, *, root: Path = Path("/")) -> Backend:
    backend = GenericBackend(resource_name, config, root=root)
    return SharedBackend(backend, config.share_count) if config.share_count > 1 else backend
