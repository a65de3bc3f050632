"""Container Device Interface (CDI) specs: build them as plain data, write them atomically.

Both node-side APIs hand devices to the runtime through CDI: the device plugin returns
``<kind>=<name>`` in ``ContainerAllocateResponse.cdi_devices`` (one spec per resource, kept in
sync with the device list), the DRA driver returns them in ``Device.cdi_device_ids`` (one spec per
prepared claim). The runtime (containerd 2.x, ``enable_cdi``) reads the spec files from
``/etc/cdi`` or ``/var/run/cdi`` and applies their container edits: device nodes, env, mounts.

Building is pure (``spec``); ``write_spec`` and ``remove_spec`` are the only I/O, and a reader
never sees a half-written file (temp file in the same directory, fsync, rename).
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .model import DeviceNode, Mount

# 0.5.0 added deviceNodes[].hostPath, which we need (a host node exposed under another name).
CDI_VERSION = "0.5.0"
DEFAULT_SPEC_DIR = Path("/var/run/cdi")

# The CDI grammar (tags.cncf.io/container-device-interface/pkg/parser).
_VENDOR_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.-]*[A-Za-z0-9])?")
_CLASS_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_-]*[A-Za-z0-9])?")
_NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?")
_NOT_NAME = re.compile(r"[^A-Za-z0-9_.:-]")
_NOT_CLASS = re.compile(r"[^A-Za-z0-9_-]")


class CdiError(ValueError):
    """A kind or device name the CDI grammar refuses, or a spec that cannot be written."""


def kind_for(resource_name: str) -> str:
    """The CDI kind (``vendor/class``) for a resource name: ``nec.com/ve`` → ``nec.com/ve``.

    A class may not contain dots, so ``example.com/v1.gpu`` becomes ``example.com/v1_gpu``.
    """
    vendor, sep, cls = resource_name.partition("/")
    cls = _NOT_CLASS.sub("_", cls).strip("_-")
    kind = f"{vendor}/{cls}"
    if not sep or not _VENDOR_RE.fullmatch(vendor) or not _CLASS_RE.fullmatch(cls):
        raise CdiError(f"{resource_name!r} does not map to a CDI kind (want vendor.example/class)")
    return kind


def device_name(raw: str) -> str:
    """A CDI device name from any ID: characters outside the grammar become ``_``."""
    name = _NOT_NAME.sub("_", raw).strip("_.:-")
    if not _NAME_RE.fullmatch(name):
        raise CdiError(f"{raw!r} does not map to a CDI device name")
    return name


def qualified(kind: str, name: str) -> str:
    """The fully qualified device name the runtime resolves: ``<vendor>/<class>=<name>``."""
    return f"{kind}={name}"


@dataclass(frozen=True)
class ContainerEdits:
    """What the runtime adds to a container for one CDI device (or for every device of a spec)."""

    env: tuple[tuple[str, str], ...] = ()
    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount, ...] = ()

    @classmethod
    def of(
        cls,
        env: Mapping[str, str] | None = None,
        device_nodes: Iterable[DeviceNode] = (),
        mounts: Iterable[Mount] = (),
    ) -> ContainerEdits:
        return cls(tuple(sorted((env or {}).items())), tuple(device_nodes), tuple(mounts))

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.env:
            out["env"] = [f"{k}={v}" for k, v in self.env]
        if self.device_nodes:
            out["deviceNodes"] = [
                {"path": n.container_path, "hostPath": n.host_path, "permissions": n.permissions}
                for n in self.device_nodes
            ]
        if self.mounts:
            out["mounts"] = [
                {
                    "hostPath": m.host_path,
                    "containerPath": m.container_path,
                    "type": "bind",
                    "options": ["rbind", "ro" if m.read_only else "rw"],
                }
                for m in self.mounts
            ]
        return out


def spec(kind: str, devices: Mapping[str, ContainerEdits], common: ContainerEdits | None = None) -> dict[str, Any]:
    """A CDI spec document for ``kind`` with one entry per device name (names must be valid)."""
    for name in devices:
        if not _NAME_RE.fullmatch(name):
            raise CdiError(f"{name!r} is not a valid CDI device name")
    doc: dict[str, Any] = {
        "cdiVersion": CDI_VERSION,
        "kind": kind,
        "devices": [{"name": n, "containerEdits": e.as_dict()} for n, e in devices.items()],
    }
    if common is not None and common.as_dict():
        doc["containerEdits"] = common.as_dict()
    return doc


def spec_file_name(stem: str) -> str:
    """A spec file name in our own namespace (``kubeaccel-<stem>.json``), safe for any stem."""
    return f"kubeaccel-{_NOT_NAME.sub('_', stem)}.json"


def write_spec(directory: Path, file_name: str, document: Mapping[str, Any]) -> Path:
    """Write ``document`` as ``directory/file_name`` atomically; the directory is created if missing."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{file_name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise CdiError(f"cannot write CDI specs to {directory}: {exc.strerror or exc}") from exc
    target = directory / file_name
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(document, fh, indent=1, sort_keys=True)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise CdiError(f"cannot write CDI spec {target}: {exc.strerror or exc}") from exc
        raise
    return target


def remove_spec(directory: Path, file_name: str) -> bool:
    """Remove a spec written by ``write_spec``; True when there was one. Idempotent."""
    try:
        (directory / file_name).unlink()
    except FileNotFoundError:
        return False
    return True
