"""Where the upstream binaries are: built by the bootstrap scripts into caches, or (a few) from Debian.

scripts/k8s/build.sh builds Kubernetes, kwok, kubectl and etcd; scripts/containerd/build.sh builds
containerd 2, runc and the CNI plugins, each into ``~/.cache/kubeaccel/<what>/v<version>/bin`` with the
versions of ``versions.env``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kubeaccel.cluster.versions import CNI_PLUGINS_VERSION, CONTAINERD_VERSION, KUBE_VERSION, RUNC_VERSION
from kubeaccel.errors import NotFoundError

CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
REAL_NODE = ("kubelet", "containerd", "containerd-shim-runc-v2", "ctr", "runc", "iptables")
CNI_PLUGINS = ("bridge", "host-local", "loopback", "portmap")
# Debian packages (scripts/apt-packages.txt) providing each host binary.
DEBIAN: dict[str, str] = {
    "etcd": "etcd-server",
    "iptables": "iptables",
    "conntrack": "conntrack",
}


# etcd: the build step makes a current one (the API server's watch cache needs progress notifications, which
# Debian's 3.4.23 lacks: kwok's watches then fail and simulated pods react only on relists, ~40 s);
# Debian's etcd-server remains the fallback.
BUILT_OR_DEBIAN = ("etcd",)


def cache_root() -> Path:
    """``$KUBEACCEL_CACHE`` or ``~/.cache/kubeaccel``: every build of the bootstrap goes below it."""
    return Path(os.environ.get("KUBEACCEL_CACHE", Path.home() / ".cache" / "kubeaccel"))


def cache_bin_dir() -> Path:
    """``$KUBEACCEL_K8S_BIN`` or ``~/.cache/kubeaccel/k8s/v<version>/bin`` (as scripts/k8s/build.sh writes it)."""
    override = os.environ.get("KUBEACCEL_K8S_BIN")
    if override:
        return Path(override)
    cache = Path(os.environ.get("KUBEACCEL_K8S_CACHE", cache_root() / "k8s"))
    return cache / f"v{KUBE_VERSION}" / "bin"


def containerd_bin_dir() -> Path:
    """containerd, containerd-shim-runc-v2 and ctr (scripts/containerd/build.sh)."""
    return cache_root() / "containerd" / f"v{CONTAINERD_VERSION}" / "bin"


def runc_bin_dir() -> Path:
    return cache_root() / "runc" / f"v{RUNC_VERSION}" / "bin"


def cni_bin_dir() -> Path:
    """The CNI plugins the real node's containerd runs (bridge, host-local, loopback, portmap)."""
    return cache_root() / "cni" / f"v{CNI_PLUGINS_VERSION}" / "bin"


_BUILT_ELSEWHERE: dict[str, Callable[[], Path]] = {
    "containerd": containerd_bin_dir,
    "containerd-shim-runc-v2": containerd_bin_dir,
    "ctr": containerd_bin_dir,
    "runc": runc_bin_dir,
}


def built_dir(name: str) -> Path:
    """The cache dir a built binary ``name`` lives in."""
    return _BUILT_ELSEWHERE.get(name, cache_bin_dir)()


@dataclass(frozen=True)
class Binaries:
    paths: dict[str, Path]

    def __getitem__(self, name: str) -> str:
        return str(self.paths[name])


def locate(names: tuple[str, ...]) -> Binaries:
    """Find each binary or raise one error naming everything missing and how to get it."""
    found: dict[str, Path] = {}
    missing_built: list[str] = []
    missing_debian: list[str] = []
    for name in names:
        built = built_dir(name) / name
        if name in BUILT_OR_DEBIAN and os.access(built, os.X_OK):
            found[name] = built
        elif name in DEBIAN:
            # sbin is often missing from a non-root PATH, yet iptables lives there.
            path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
            if path:
                found[name] = Path(path)
            else:
                missing_debian.append(name)
        elif os.access(built, os.X_OK):
            found[name] = built
        else:
            missing_built.append(name)
    problems, hints = [], []
    if missing_built:
        where = sorted({str(built_dir(n)) for n in missing_built})
        problems.append(f"{', '.join(missing_built)} not built in {', '.join(where)}")
        hints.append("run scripts/bootstrap.sh (it builds them from upstream with Go, once)")
    if missing_debian:
        packages = sorted({DEBIAN[n] for n in missing_debian})
        problems.append(f"{', '.join(missing_debian)} not installed")
        hints.append(f"apt-get install {' '.join(packages)}")
    if problems:
        raise NotFoundError("; ".join(problems), hint="; ".join(hints))
    return Binaries(found)


def missing_cni_plugins() -> list[str]:
    return [p for p in CNI_PLUGINS if not os.access(cni_bin_dir() / p, os.X_OK)]
