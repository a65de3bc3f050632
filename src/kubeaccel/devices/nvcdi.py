"""A complete CDI spec for NVIDIA GPUs, from the files of a driver install (no NVML, no GPU needed).

What a CUDA container needs besides ``/dev/nvidia<N>`` is the driver's user-space half: its
libraries (``libcuda.so.<version>``, ``libnvidia-ml.so.<version>``, ...), firmware, tools
(``nvidia-smi``, ...) and the symlinks and loader cache that make ``dlopen("libcuda.so.1")``
find them. ``nvidia-ctk cdi generate`` (NVIDIA Container Toolkit) writes exactly that; this module
finds the same files by the same rules (read from the toolkit's ``pkg/nvcdi`` and
``internal/discover``; the tests compare the result with the real ``nvidia-ctk`` over one fake
driver root):

* version: the suffix of ``libcuda.so.*.*``, else of ``libnvidia-ml.so.*.*``, in the usual library
  directories; ``libnvidia-ml.so.<version>`` must exist (NVML is what the backend runs on);
* libraries: every ``*.so.<version>`` in the directories that hold ``lib*.so.<version>`` and in
  their ``vdpau/``, plus ``libnvidia-nvvm70.so.*``;
* firmware: ``nvidia/<version>/gsp*.bin`` and ``ucodes*.bin`` under the kernel's firmware paths;
* binaries: ``nvidia-smi``, ``nvidia-debugdump``, ``nvidia-persistenced``, the MPS control and
  server, ``nvidia-imex`` and ``nvidia-imex-ctl``, first found on the default ``PATH``;
* IPC: the persistenced and fabric-manager sockets, where present;
* symlinks: ``<soname> -> <file>`` and ``<name>.so -> <soname>`` where the install has them, and
  ``libcuda.so -> libcuda.so.1``. NVIDIA makes these with its ``create-symlinks`` hook and then
  runs ``update-ldcache`` (and ``enable-cuda-compat``). With a hook binary (``nvidia-cdi-hook``
  or ``nvidia-ctk``) we emit the same hooks; without one, the documented equivalent: each link
  path is a bind mount of the file itself, and the libraries sit at the host's paths, which the
  loader of a Debian/Ubuntu-based image searches without a cache (``/usr/lib/x86_64-linux-gnu``).

Paths are found under ``driver_root`` (where this process sees the install) and written under
``host_root`` (where the runtime sees it), so a plugin container with the host's ``/`` mounted at
``/host`` writes host paths. The SONAME of a library is taken from the symlink that names it
(what ``ldconfig`` created), not read from the ELF file.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from kubeaccel.devices import cdi, ldcache
from kubeaccel.devices.model import Device, DeviceNode, Devices
from kubeaccel.devices.naming import devices_env_var
from kubeaccel.devices.policy import AllocationError
from kubeaccel.devices.policy import names as id_list
from kubeaccel.errors import UnavailableError

log = logging.getLogger(__name__)

# The kind of kubeaccel's own spec: never NVIDIA's ``nvidia.com/gpu``, so the two never collide.
KIND = "nvidia.kubeaccel.io/gpu"
NVIDIA_KIND = "nvidia.com/gpu"
DEFAULT_HOOK_PATH = "/usr/bin/nvidia-cdi-hook"
# A custom firmware search path the kernel was given (read under the node root, like /sys elsewhere).
FIRMWARE_CLASS_PATH = "/sys/module/firmware_class/parameters/path"

# nvidia-ctk's library search order (pkg/lookup/library.go) without an ldcache.
LIBRARY_DIRS = (
    "/",
    "/usr/lib64",
    "/usr/lib/x86_64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu/nvidia/current",
    "/usr/lib/aarch64-linux-gnu/nvidia/current",
    "/lib64",
    "/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/lib/x86_64-linux-gnu/nvidia/current",
    "/lib/aarch64-linux-gnu/nvidia/current",
)
BINARIES = (
    "nvidia-smi",
    "nvidia-debugdump",
    "nvidia-persistenced",
    "nvidia-cuda-mps-control",
    "nvidia-cuda-mps-server",
    "nvidia-imex",
    "nvidia-imex-ctl",
)
BIN_DIRS = ("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin")
SOCKETS = ("nvidia-persistenced/socket", "nvidia-fabricmanager/socket")
IPC_OPTIONS = ("nosuid", "nodev", "rbind", "rprivate", "noexec")
# Libraries whose links nvidia-ctk adds although the install may lack them (apps dlopen the .so).
_EXTRA_LINKS = {"libcuda.so": "libcuda.so.1", "libnvidia-opticalflow.so": "libnvidia-opticalflow.so.1"}
_LIB_NAME = re.compile(r"lib.+\.so(\..*)?")


@dataclass(frozen=True)
class DriverFiles:
    """The driver's user-space files, as container paths (absolute, relative to the driver root)."""

    version: str
    library_dirs: tuple[str, ...]  # where lib*.so.<version> live (NVIDIA_CTK_LIBCUDA_DIR)
    libraries: tuple[str, ...]
    firmware: tuple[str, ...]
    binaries: tuple[str, ...]
    ipc: tuple[str, ...]
    links: tuple[tuple[str, str], ...]  # (target as the link holds it, link path)


def _inside(root: Path, path: str) -> Path:
    return root / path.lstrip("/")


def _relative(root: Path, path: Path) -> str:
    """``path`` (found under ``root``) as the absolute path it has relative to ``root``."""
    return "/" + path.relative_to(root).as_posix() if path != root else "/"


def _resolved(root: Path, path: Path) -> Path | None:
    """``path`` with its symlinks followed inside ``root`` (an absolute link target means ``root``/target)."""
    seen = 0
    while path.is_symlink() and seen < 40:
        target = os.readlink(path)
        path = _inside(root, target) if target.startswith("/") else path.parent / target
        path = Path(os.path.normpath(path))
        seen += 1
    try:
        path.relative_to(root)
    except ValueError:
        return None  # a link that leaves the driver root
    return path if path.is_file() else None


def _is_file(path: Path) -> bool:
    """Anything but a directory (a socket counts), as nvidia-ctk's file locator takes it."""
    return path.exists() and not path.is_dir()


def _glob(root: Path, directory: str, pattern: str) -> list[Path]:
    base = _inside(root, directory)
    if not base.is_dir():
        return []
    return sorted(base.glob(pattern))


def _canonical(root: Path, path: Path) -> Path:
    """``path`` with every symlink resolved, as nvidia-ctk's library locator does, so a merged-/usr
    install (``/lib -> usr/lib``) yields each library once, under ``/usr/lib``. Kept as is if the
    resolution leaves the root."""
    real = Path(os.path.realpath(path))
    try:
        real.relative_to(root)
    except ValueError:
        return path
    return real


def _libs(root: Path, directories: Iterable[str], pattern: str) -> list[Path]:
    """Library files matching ``pattern`` in ``directories``, canonical, each once, in search order."""
    found = (_canonical(root, p) for d in directories for p in _glob(root, d, pattern))
    return list(dict.fromkeys(p for p in found if p.is_file()))


def _first_version(root: Path, search: tuple[str, ...]) -> str | None:
    for prefix in ("libcuda.so.", "libnvidia-ml.so."):
        for directory in search:
            for candidate in _glob(root, directory, prefix + "*.*"):
                real = _resolved(root, candidate)
                if real is not None and real.name.startswith(prefix):
                    return real.name.removeprefix(prefix)
    return None


def _unique(items: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def _symlinks(directory: Path) -> dict[str, str]:
    """Every symlink in one directory and what it holds (one listing per directory, not per library)."""
    out: dict[str, str] = {}
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if entry.is_symlink():
                    out[entry.name] = os.readlink(entry.path)
    except OSError:
        pass
    return out


def _links(root: Path, library: str, listings: dict[str, dict[str, str]]) -> list[tuple[str, str]]:
    """The links nvidia-ctk's ``create-symlinks`` makes for one library (container paths)."""
    lib = PurePosixPath(library)
    directory = str(lib.parent)
    if directory not in listings:
        listings[directory] = _symlinks(_inside(root, directory))
    in_dir = listings[directory]
    links: list[tuple[str, str]] = []
    stem = lib.name.split(".so.", 1)[0] + ".so"
    if stem in _EXTRA_LINKS:
        links.append((_EXTRA_LINKS[stem], str(lib.parent / stem)))
    if stem == "libGLX_nvidia.so":  # the GLX vendor-neutral dispatch's indirect-rendering name (nvidia-ctk does too)
        links.append((lib.name, str(lib.parent / "libGLX_indirect.so.0")))
    # The SONAME link is the one ldconfig made next to the file: it points at the file itself.
    soname = min((name for name, target in in_dir.items()
                   if name.startswith(stem + ".") and target in (lib.name, library)), default=lib.name)
    if soname != lib.name:
        links.append((lib.name, str(lib.parent / soname)))
    if stem != soname and stem in in_dir:
        links.append((soname, str(lib.parent / stem)))
    return links


def _firmware_dirs(firmware_class_path: str) -> list[str]:
    release = os.uname().release
    custom = [firmware_class_path] if firmware_class_path else []
    return [*custom, f"/lib/firmware/updates/{release}", "/lib/firmware/updates", f"/lib/firmware/{release}",
            "/lib/firmware"]


def discover(driver_root: Path, *, firmware_class_path: str = "") -> DriverFiles:
    """The driver's files under ``driver_root``; ``UnavailableError`` naming the root when there is no driver."""
    root = Path(os.path.realpath(driver_root))  # found paths are canonical: so is the root
    # As nvidia-ctk: the linker's cache first (a driver outside the distribution's directories,
    # e.g. /usr/local/nvidia/lib64 on GPU clouds), then the default directories.
    cached = ldcache.directories(root, ("libcuda.so", "libnvidia"))
    search = _unique([*cached, *LIBRARY_DIRS])
    version = _first_version(root, search)
    if version is None or not _libs(root, search, f"libnvidia-ml.so.{version}"):
        raise UnavailableError(
            f"NVIDIA driver not found under the driver root {root}: no libnvidia-ml.so.<version> in "
            f"{', '.join(str(_inside(root, d)) for d in LIBRARY_DIRS[1:4])} or the other library directories",
            hint="set the nvidia resource's driverRoot to where the driver is installed (the host's / as the "
            "plugin sees it, e.g. /host, or /run/nvidia/driver for a driver container), or install the driver",
        )
    dirs = _unique(_relative(root, p.parent) for p in _libs(root, search, f"lib*.so.{version}"))
    libs = _libs(root, [*dirs, *(f"{d.rstrip('/')}/vdpau" for d in dirs)], f"*.so.{version}")
    libs += _libs(root, dirs, "libnvidia-nvvm70.so.*")
    libraries = list(_unique(_relative(root, p) for p in libs))
    firmware: list[str] = []
    for directory in _firmware_dirs(firmware_class_path):
        for pattern in ("gsp*.bin", "ucodes*.bin"):
            firmware += [_relative(root, p) for p in _glob(root, f"{directory}/nvidia/{version}", pattern)
                         if p.is_file()]
    binaries: list[str] = []
    # First the bin/ next to a cached driver library directory (/usr/local/nvidia/bin: on such nodes
    # it leads PATH, which is where nvidia-ctk looks first; seen on the lent H200), then BIN_DIRS.
    bin_dirs = _unique([*(str(PurePosixPath(d).parent / "bin") for d in cached), *BIN_DIRS])
    for name in BINARIES:
        binary = next((p for d in bin_dirs if (p := _inside(root, f"{d}/{name}")).is_file() and os.access(p, os.X_OK)),
                      None)
        if binary is not None:
            binaries.append(_relative(root, binary))
    # Sockets only: nvidia-ctk 1.20 looks for the MPS pipe directory (/tmp/nvidia-mps) with a locator
    # that accepts files alone, so it never mounts it; we agree (MPS clients set their pipe dir).
    ipc = [next((f"{d}/{s}" for d in ("/run", "/var/run") if _is_file(_inside(root, f"{d}/{s}"))), "")
           for s in SOCKETS]
    listings: dict[str, dict[str, str]] = {}
    links = [link for lib in libraries for link in _links(root, lib, listings)]
    return DriverFiles(
        version=version,
        library_dirs=dirs,
        libraries=tuple(libraries),
        firmware=_unique(firmware),
        binaries=tuple(binaries),
        ipc=tuple(p for p in ipc if p),
        links=tuple(dict.fromkeys(links)),
    )


def hook_args(hook_path: str, name: str, *args: str) -> tuple[str, ...]:
    """argv of one ``nvidia-cdi-hook`` hook (``nvidia-ctk`` takes the hooks under ``hook``)."""
    base = PurePosixPath(hook_path).name
    return (base, "hook", name, *args) if base == "nvidia-ctk" else (base, name, *args)


def driver_edits(
    files: DriverFiles, *, driver_root: Path, host_root: Path, hook_path: str | None
) -> tuple[list[cdi.BindMount], list[cdi.Hook]]:
    """The mounts and hooks that give a container the driver's user-space half.

    With ``hook_path`` (an ``nvidia-cdi-hook`` or ``nvidia-ctk`` binary on the host): NVIDIA's
    hooks. Without: each link becomes a bind mount of the file it resolves to.
    """
    root = Path(os.path.realpath(driver_root))  # found paths are canonical: so is the root

    def host(path: str) -> str:
        return str(_inside(host_root, path))

    mounts = [cdi.BindMount(host(p), p) for p in (*files.binaries, *files.libraries, *files.firmware)]
    mounts += [cdi.BindMount(host(p), p, IPC_OPTIONS) for p in files.ipc]
    hooks: list[cdi.Hook] = []
    if hook_path is not None:
        env = ("NVIDIA_CTK_DEBUG=false",)
        links = [a for target, link in files.links for a in ("--link", f"{target}::{link}")]
        folders = [a for d in _unique(str(PurePosixPath(p).parent) for p in files.libraries if _is_lib(p))
                   for a in ("--folder", d)]
        if links:
            hooks.append(cdi.Hook(hook_path, hook_args(hook_path, "create-symlinks", *links), env=env))
        hooks.append(cdi.Hook(hook_path, hook_args(hook_path, "enable-cuda-compat",
                                                   f"--host-driver-version={files.version}"), env=env))
        if folders:
            hooks.append(cdi.Hook(hook_path, hook_args(hook_path, "update-ldcache", *folders), env=env))
        return mounts, hooks
    for target, link in files.links:
        real = _resolved(root, _inside(root, str(PurePosixPath(link).parent / target)))
        if real is not None:
            mounts.append(cdi.BindMount(host(_relative(root, real)), link))
    return mounts, hooks


def _is_lib(path: str) -> bool:
    name = PurePosixPath(path).name
    return bool(_LIB_NAME.fullmatch(name)) and (".so." in name or name.endswith(".so"))


@dataclass(frozen=True)
class Gpu:
    """One GPU's entry: its CDI names (UUID and index) and its own device node."""

    names: tuple[str, ...]
    node: DeviceNode


def spec(
    gpus: Sequence[Gpu],
    control_nodes: Sequence[DeviceNode],
    files: DriverFiles,
    *,
    driver_root: Path,
    host_root: Path,
    hook_path: str | None,
    env: dict[str, str],
    kind: str = KIND,
) -> dict[str, Any]:
    """The whole spec: an entry per GPU name with its node; everything shared in the common edits."""
    mounts, hooks = driver_edits(files, driver_root=driver_root, host_root=host_root, hook_path=hook_path)
    entries = {name: cdi.ContainerEdits.of(device_nodes=[gpu.node]) for gpu in gpus for name in gpu.names}
    common = cdi.ContainerEdits.of(
        env={**env, "NVIDIA_CTK_LIBCUDA_DIR": ":".join(files.library_dirs)},
        device_nodes=control_nodes,
        mounts=mounts,
        hooks=hooks,
    )
    return cdi.spec(kind, entries, common)


# -- the decision: NVIDIA's spec, ours, or none -----------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What Allocate names, decided when the plugin last synced its CDI spec (replaced whole)."""

    names: Mapping[str, str] = field(default_factory=dict)  # device ID -> qualified CDI name
    problem: str | None = None  # set: no spec may be used, Allocate refuses with it
    hint: str | None = None

    def names_for(self, devices: Sequence[Device]) -> tuple[str, ...]:
        """The CDI names of ``devices``; ``AllocationError`` (one clear message) when there are none."""
        if self.problem is not None:
            raise AllocationError(self.problem, hint=self.hint)
        missing = [d.id for d in devices if d.id not in self.names]
        if missing:
            raise AllocationError(
                f"cannot allocate: no CDI spec entry for GPU(s) {id_list(missing)}",
                hint="regenerate NVIDIA's spec (nvidia-ctk cdi generate) or remove it so kubeaccel writes its own",
            )
        return tuple(self.names[d.id] for d in devices)


def _read_first_line(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            return fh.read(4096).decode("utf-8", "replace").strip()
    except OSError:
        return ""


def decide(
    resource_name: str,
    devices: Devices,
    *,
    spec_dirs: Sequence[Path],
    driver_root: Path,
    host_root: Path,
    hook_path: str | None,
    control_nodes: Sequence[DeviceNode],
    by_uuid: bool,
    firmware_class_path: Path | None = None,
) -> tuple[dict[str, Any] | None, Plan]:
    """The spec kubeaccel writes (None: none) and what Allocate names, in this order:

    1. a spec file in ``spec_dirs`` that cannot be read: none, and Allocate refuses naming it (it
       may be NVIDIA's, and a second spec for the same GPUs would conflict);
    2. NVIDIA's own spec (kind ``nvidia.com/gpu``): none; Allocate names its entry by UUID, else index;
    3. otherwise kubeaccel's complete spec from ``driver_root`` (``UnavailableError`` naming the
       root when it holds no driver), named by UUID (or index without ``by_uuid``).

    ``hook_path`` (a host path under the driver root) is used where it exists under ``driver_root``.
    """
    scan = cdi.find_kind(spec_dirs, NVIDIA_KIND)
    if scan.unreadable:
        for path, why in scan.unreadable:
            log.warning("%s: CDI spec %s cannot be read: %s", resource_name, path, why)
        shown = "; ".join(f"{path} ({why})" for path, why in scan.unreadable[:3])
        more = len(scan.unreadable) - 3
        return None, Plan(
            problem=f"kubeaccel writes no NVIDIA CDI spec while a spec file it cannot read may be NVIDIA's "
            f"({NVIDIA_KIND}) and would conflict: {shown}" + (f" and {more} more" if more > 0 else ""),
            hint=f"fix or remove {scan.unreadable[0][0]} (nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml "
            "rewrites NVIDIA's), or leave its directory out of the resource's cdiSpecDirs",
        )
    if scan.found is not None:
        found = scan.found
        chosen = {d.id: d.id if d.id in found.names else d.index for d in devices.values()
                  if d.id in found.names or d.index in found.names}
        unnamed = [d.id for d in devices.values() if d.id not in chosen]
        if unnamed:
            log.warning("%s: NVIDIA's CDI spec %s has no entry for GPU(s) %s", resource_name,
                        ", ".join(map(str, found.paths)), id_list(unnamed))
        return None, Plan({i: cdi.qualified(NVIDIA_KIND, n) for i, n in chosen.items()})
    files = discover(driver_root, firmware_class_path=_read_first_line(firmware_class_path)
                     if firmware_class_path is not None else "")
    if hook_path is not None and not (driver_root / hook_path.lstrip("/")).is_file():
        hook_path = None
    gpus = [Gpu((d.id, d.index), n) for d in devices.values() for n in d.nodes[:1]]
    marker = devices_env_var(resource_name).replace("KUBEACCEL_DEVICES_", "KUBEACCEL_CDI_", 1)
    document = spec(
        gpus,
        control_nodes,
        files,
        driver_root=driver_root,
        host_root=host_root,
        hook_path=str(host_root / hook_path.lstrip("/")) if hook_path is not None else None,
        env={marker: KIND},
    )
    return document, Plan({d.id: cdi.qualified(KIND, d.id if by_uuid else d.index) for d in devices.values()})


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m kubeaccel.devices.nvcdi [DRIVER_ROOT [HOOK_PATH]]``: kubeaccel's spec for the GPU nodes
    under ``DRIVER_ROOT/dev`` (named by minor number; no NVML needed), as JSON, to set beside
    ``nvidia-ctk cdi generate --mode=management --driver-root DRIVER_ROOT`` on a real node."""
    import json
    import sys

    args = list(sys.argv[1:] if argv is None else argv)
    root = Path(args[0] if args else "/")
    hook = args[1] if len(args) > 1 else None
    dev = root / "dev"
    gpus = [Gpu((p.name.removeprefix("nvidia"),), DeviceNode(str(p), f"/dev/{p.name}"))
            for p in sorted(dev.glob("nvidia[0-9]*")) if p.name.removeprefix("nvidia").isdecimal()]
    controls = [DeviceNode(str(dev / n), f"/dev/{n}") for n in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools",
                                                              "nvidia-modeset") if (dev / n).exists()]
    try:
        files = discover(root, firmware_class_path=_read_first_line(Path(FIRMWARE_CLASS_PATH)))
    except UnavailableError as exc:
        print(f"error: {exc.message}\nhint: {exc.hint}", file=sys.stderr)
        return exc.exit_code
    document = spec(gpus, controls, files, driver_root=root, host_root=root, hook_path=hook, env={})
    try:
        print(json.dumps(document, indent=1))
        sys.stdout.flush()
    except BrokenPipeError:  # a reader that stopped early (| head): not an error of ours
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
