"""The record of a running cluster (state.json) and the files written for it (certs, kubeconfigs, kwok config)."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

from kubeaccel.cluster import hostclean, kwok
from kubeaccel.cluster.commands import APISERVER_KUBELET_CLIENT, Ports
from kubeaccel.cluster.kubeconfig import build_kubeconfig, dump
from kubeaccel.cluster.layout import Layout
from kubeaccel.cluster.pki import CertificateAuthority, service_account_keys
from kubeaccel.errors import ConfigError

# name -> (common name, organization) of each client identity. system:masters bypasses RBAC: for the admin,
# the controller manager (see commands.controller_manager), kwok (it writes every simulated node's and pod's
# status) and the apiserver->kubelet client.
CLIENTS: dict[str, tuple[str, str | None]] = {
    "admin": ("kubeaccel-admin", "system:masters"),
    "kube-controller-manager": ("system:kube-controller-manager", "system:masters"),
    "kube-scheduler": ("system:kube-scheduler", None),
    "kwok": ("kwok", "system:masters"),
    APISERVER_KUBELET_CLIENT: (APISERVER_KUBELET_CLIENT, "system:masters"),
}


@dataclass
class ClusterState:
    server: str
    ports: dict[str, int]
    nodes: list[str]
    node_resources: dict[str, str]
    version: str
    real_node: str | None = None

    def save(self, layout: Layout) -> None:
        tmp = layout.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(layout.state_file)

    @classmethod
    def load(cls, layout: Layout, strict: bool = True) -> ClusterState | None:
        """The record, or None when there is none. Unreadable: an error (strict), never a silent wipe of the data."""
        try:
            data = json.loads(layout.state_file.read_text())
            data.pop("extra", None)  # an unused field that state.json files written before 2026-11-30 carry
            return cls(**data)
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            if not strict:
                return None
            raise ConfigError(
                f"{layout.state_file} cannot be read ({exc})",
                hint="`kubeaccel cluster up --fresh` recreates the cluster (its data is lost); "
                "`kubeaccel cluster down` removes it",
            ) from None


def _write_private(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data.encode() if isinstance(data, str) else data)


def write_control_plane_files(layout: Layout, ports: Ports, hostname: str) -> CertificateAuthority:
    """Certificates, service-account keys, one kubeconfig per component, the admin kubeconfig, kwok's stages."""
    ca = CertificateAuthority.create()
    _write_private(layout.cert("ca"), ca.pair.cert_pem)
    _write_private(layout.key("ca"), ca.pair.key_pem)
    serving = ca.issue(
        "kube-apiserver",
        server=True,
        dns_names=("localhost", hostname, "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                   "kubernetes.default.svc.cluster.local"),
        ip_addresses=("127.0.0.1", "10.0.0.1"),
    )
    _write_private(layout.cert("apiserver"), serving.cert_pem)
    _write_private(layout.key("apiserver"), serving.key_pem)
    sa_private, sa_public = service_account_keys()
    _write_private(layout.key("service-account"), sa_private)
    _write_private(layout.cert("service-account"), sa_public)
    for name, (common_name, organization) in CLIENTS.items():
        pair = ca.issue(common_name, organization=organization, client=True)
        _write_private(layout.cert(name), pair.cert_pem)
        _write_private(layout.key(name), pair.key_pem)
        if name == APISERVER_KUBELET_CLIENT:
            continue
        config = dump(build_kubeconfig(ports.server, ca.pair.cert_pem, pair.cert_pem, pair.key_pem, common_name))
        target = layout.kubeconfig if name == "admin" else layout.component_kubeconfig(name)
        _write_private(target, config)
    layout.kwok_config.write_text(kwok.kwok_config())
    return ca


# Everything `up` creates in the state dir; `down` removes exactly these (a --state-dir may hold other files).
CREATED = ("kubeconfig", "state.json", "state.tmp", "pki", "kubeconfigs", "etcd", "run", "kwok.yaml", "node", "logs")


def remove_created(layout: Layout, keep_logs: bool = False) -> None:
    """Remove what ``up`` created. A directory with a mount point at or below it is left in place: removing
    it would delete the mounted files (a host directory bind-mounted into a pod's volume)."""
    mounted = hostclean.mounts_under(Path("/proc/self/mountinfo").read_text(), [layout.root])
    for name in CREATED:
        if keep_logs and name == "logs":
            continue
        path = layout.root / name
        if any(m == str(path) or m.startswith(f"{path}/") for m in mounted):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
