"""Container Device Interface (CDI) specs: build them as plain data, write them atomically.

Both node-side APIs hand devices to the runtime through CDI: the device plugin returns
``<kind>=<name>`` in ``ContainerAllocateResponse.cdi_devices`` (one spec per resource, kept in
sync with the device list), the DRA driver returns them in ``Device.cdi_device_ids`` (one spec per
prepared claim). The runtime (containerd 2.x, ``enable_cdi``) reads the spec files from
``/etc/cdi`` or ``/var/run/cdi`` and applies their container edits: device nodes, env, mounts.

Building is pure (``spec``); ``write_spec`` and ``remove_spec`` are the only writes, and a reader
never sees a half-written file (temp file in the same directory, fsync, rename). ``find_kind`` reads
the specs other tools left in the spec directories (NVIDIA's ``nvidia-ctk cdi generate``), bounded,
so a backend can name their devices instead of writing a second, conflicting spec.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import yaml

from .model import DeviceNode, Devices, Mount

# 0.5.0 added deviceNodes[].hostPath, which we need (a host node exposed under another name).
CDI_VERSION = "0.5.0"
DEFAULT_SPEC_DIR = Path("/var/run/cdi")
# Where CDI-enabled runtimes look (containerd's and CRI-O's default cdi_spec_dirs), lowest priority first.
RUNTIME_SPEC_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))
# A real spec is tens of KB (NVIDIA's for 8 GPUs ~100 KB); more is not a spec we should parse.
MAX_SPEC_BYTES = 1024 * 1024
# The options nvidia-ctk gives read-only driver files (libraries, binaries, firmware).
READ_ONLY_OPTIONS = ("ro", "nosuid", "nodev", "rbind", "rprivate")

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


@dataclass(frozen=True, order=True)
class BindMount:
    """A CDI mount with explicit options (``Mount`` has only read-only or not)."""

    host_path: str
    container_path: str
    options: tuple[str, ...] = READ_ONLY_OPTIONS


@dataclass(frozen=True)
class Hook:
    """An OCI hook the runtime runs for the container (``createContainer``: in its mount namespace)."""

    path: str
    args: tuple[str, ...]
    hook_name: str = "createContainer"
    env: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"hookName": self.hook_name, "path": self.path, "args": list(self.args)}
        if self.env:
            out["env"] = list(self.env)
        return out


def _mount_dict(m: Mount | BindMount) -> dict[str, Any]:
    options = list(m.options) if isinstance(m, BindMount) else ["rbind", "ro" if m.read_only else "rw"]
    return {"hostPath": m.host_path, "containerPath": m.container_path, "type": "bind", "options": options}


@dataclass(frozen=True)
class ContainerEdits:
    """What the runtime adds to a container for one CDI device (or for every device of a spec)."""

    env: tuple[tuple[str, str], ...] = ()
    device_nodes: tuple[DeviceNode, ...] = ()
    mounts: tuple[Mount | BindMount, ...] = ()
    hooks: tuple[Hook, ...] = ()

    @classmethod
    def of(
        cls,
        env: Mapping[str, str] | None = None,
        device_nodes: Iterable[DeviceNode] = (),
        mounts: Iterable[Mount | BindMount] = (),
        hooks: Iterable[Hook] = (),
    ) -> ContainerEdits:
        return cls(tuple(sorted((env or {}).items())), tuple(device_nodes), tuple(mounts), tuple(hooks))

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
            out["mounts"] = [_mount_dict(m) for m in self.mounts]
        if self.hooks:
            out["hooks"] = [h.as_dict() for h in self.hooks]
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


# -- specs written by others ---------------------------------------------------------------------


@runtime_checkable
class SpecSource(Protocol):
    """Optional: a backend that decides its resource's CDI spec itself.

    ``cdi_spec`` returns the document to write, or None when the backend's devices are named in a
    spec someone else keeps (NVIDIA's own) and no spec of ours may exist beside it. Called when the
    plugin (re)writes its spec; the backend's ``container_allocation`` then names the CDI devices.
    """

    def cdi_spec(self, devices: Devices) -> dict[str, Any] | None: ...


@dataclass(frozen=True)
class FoundSpec:
    """The device names of ``kind`` in the spec files that declare it (CDI merges them)."""

    paths: tuple[Path, ...]
    names: frozenset[str]


@dataclass(frozen=True)
class SpecScan:
    """What ``find_kind`` saw: the kind's spec (if any) and every file it could not read."""

    found: FoundSpec | None
    unreadable: tuple[tuple[Path, str], ...]  # (file, why)


class _NoAliasLoader(yaml.SafeLoader):
    """YAML without aliases: an alias bomb in a foreign file must not expand in the plugin."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            raise yaml.YAMLError("YAML aliases are not supported in CDI specs here")
        return super().compose_node(parent, index)


def _load(path: Path) -> object:
    """A spec file's document; ``ValueError`` says why it cannot be one (never reads past the bound)."""
    with path.open("rb") as fh:
        data = fh.read(MAX_SPEC_BYTES + 1)
    if len(data) > MAX_SPEC_BYTES:
        raise ValueError(f"larger than {MAX_SPEC_BYTES // 1024} KiB")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"not UTF-8 text (byte {exc.start})") from None
    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.load(text, Loader=_NoAliasLoader)
    except (ValueError, yaml.YAMLError, RecursionError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ValueError(f"not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {first[:200]}") from None


def _names_of(document: object, kind: str) -> frozenset[str] | None:
    """The device names if ``document`` is a spec of ``kind``, None if of another kind; ``ValueError`` if malformed."""
    if not isinstance(document, dict):
        raise ValueError(f"not a CDI spec: the document is a {type(document).__name__}, not a mapping")
    found_kind = document.get("kind")
    if not isinstance(found_kind, str):
        raise ValueError("not a CDI spec: no string 'kind'")
    if found_kind != kind:
        return None
    devices = document.get("devices")
    if not isinstance(devices, list):
        raise ValueError(f"a {kind} spec without a 'devices' list")
    names = [d.get("name") if isinstance(d, dict) else None for d in devices]
    if not all(isinstance(n, str) and _NAME_RE.fullmatch(n) for n in names):
        raise ValueError(f"a {kind} spec with a device that has no valid 'name'")
    return frozenset(n for n in names if isinstance(n, str))


def find_kind(directories: Iterable[Path], kind: str, *, skip_prefix: str = "kubeaccel-") -> SpecScan:
    """Read every ``*.json`` / ``*.yaml`` spec in ``directories`` (as the runtime would) for ``kind``.

    Files named ``skip_prefix*`` (our own) are skipped. A file that cannot be read or parsed, or
    is not a CDI spec, is reported in ``unreadable`` with the reason: the caller cannot tell whether
    it was meant to declare ``kind``. Never raises for what a file contains.
    """
    paths: list[Path] = []
    names: set[str] = set()
    unreadable: list[tuple[Path, str]] = []
    for directory in directories:
        try:
            entries = sorted(directory.iterdir())
        except FileNotFoundError:
            continue
        except OSError as exc:
            unreadable.append((directory, f"cannot list the directory: {exc.strerror or exc}"))
            continue
        for path in entries:
            if path.suffix not in (".json", ".yaml") or path.name.startswith((skip_prefix, ".")):
                continue
            try:
                if not path.is_file():
                    continue
                spec_names = _names_of(_load(path), kind)
            except OSError as exc:
                unreadable.append((path, f"cannot read it: {exc.strerror or exc}"))
                continue
            except ValueError as exc:
                unreadable.append((path, str(exc)))
                continue
            if spec_names is not None:
                paths.append(path)
                names |= spec_names
    found = FoundSpec(tuple(paths), frozenset(names)) if paths else None
    return SpecScan(found, tuple(unreadable))
