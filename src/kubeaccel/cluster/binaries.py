"""Where the upstream binaries are: built by scripts/k8s/build.sh into a cache, or from Debian."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from kubeaccel.cluster.spec import KUBE_VERSION
from kubeaccel.errors import NotFoundError

CONTROL_PLANE = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
REAL_NODE = ("kubelet",)
# Debian packages (scripts/apt-packages.txt) providing each host binary.
DEBIAN: dict[str, str] = {
    "etcd": "etcd-server",
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "iptables": "iptables",
    "conntrack": "conntrack",
}


# etcd: the build step makes a 3.5 one (the API server's watch cache needs progress notifications, which
# Debian's 3.4.23 lacks: kwok's watches then fail and simulated pods react only on relists, ~40 s);
# Debian's etcd-server remains the fallback.
BUILT_OR_DEBIAN = ("etcd",)


def cache_bin_dir() -> Path:
    """``$KUBEACCEL_K8S_BIN`` or ``~/.cache/kubeaccel/k8s/v<version>/bin`` (as scripts/k8s/build.sh writes it)."""
    override = os.environ.get("KUBEACCEL_K8S_BIN")
    if override:
        return Path(override)
    cache = Path(os.environ.get("KUBEACCEL_K8S_CACHE", Path.home() / ".cache" / "kubeaccel" / "k8s"))
    return cache / f"v{KUBE_VERSION}" / "bin"


@dataclass(frozen=True)
class Binaries:
    paths: dict[str, Path]

    def __getitem__(self, name: str) -> str:
        return str(self.paths[name])


def locate(names: tuple[str, ...]) -> Binaries:
    """Find each binary or raise one error naming everything missing and how to get it."""
    bin_dir = cache_bin_dir()
    found: dict[str, Path] = {}
    missing_built: list[str] = []
    missing_debian: list[str] = []
    for name in names:
        if name in BUILT_OR_DEBIAN and os.access(bin_dir / name, os.X_OK):
            found[name] = bin_dir / name
        elif name in DEBIAN:
            # sbin is often missing from a non-root PATH, yet runc and iptables live there.
            path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
            if path:
                found[name] = Path(path)
            else:
                missing_debian.append(name)
        else:
            candidate = bin_dir / name
            if os.access(candidate, os.X_OK):
                found[name] = candidate
            else:
                missing_built.append(name)
    problems, hints = [], []
    if missing_built:
        problems.append(f"{', '.join(missing_built)} not built in {bin_dir}")
        hints.append("run scripts/bootstrap.sh (it builds them from upstream with Go, once)")
    if missing_debian:
        packages = sorted({DEBIAN[n] for n in missing_debian})
        problems.append(f"{', '.join(missing_debian)} not installed")
        hints.append(f"apt-get install {' '.join(packages)}")
    if problems:
        raise NotFoundError("; ".join(problems), hint="; ".join(hints))
    return Binaries(found)
