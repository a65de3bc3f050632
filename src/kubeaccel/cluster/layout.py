"""Where everything of one local cluster lives inside its state dir (one name per file, used everywhere)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig, printed by ``up`` and ``status``."""
        return self.root / "kubeconfig"

    @property
    def state_file(self) -> Path:
        return self.root / "state.json"

    @property
    def lock_file(self) -> Path:
        return self.root / ".lock"

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    @property
    def component_kubeconfigs(self) -> Path:
        return self.root / "kubeconfigs"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def run(self) -> Path:
        return self.root / "run"

    @property
    def kwok_config(self) -> Path:
        return self.root / "kwok.yaml"

    @property
    def node(self) -> Path:
        """Tier 2: containerd, kubelet and CNI state of the real node."""
        return self.root / "node"

    def cert(self, name: str) -> Path:
        return self.pki / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.pki / f"{name}.key"

    def component_kubeconfig(self, component: str) -> Path:
        return self.component_kubeconfigs / f"{component}.kubeconfig"

    def log(self, component: str) -> Path:
        return self.logs / f"{component}.log"

    def pid_file(self, component: str) -> Path:
        return self.run / f"{component}.pid"
