"""Where the real node (tier 2) keeps its files: one name per path, for realnode.py and for its users.

The public helpers answer what the node side needs to reach the local real node: the CDI spec dir its
containerd reads (``cdi_spec_dir``), the kubelet's plugin registration dir for DRA drivers
(``plugins_registry_dir``) and plugin sockets dir (``kubelet_plugins_dir``), and containerd's socket.
Each takes the cluster's state dir (or its Layout).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from kubeaccel.cluster.layout import Layout

# The kubelet's device-plugin dir is fixed whatever --root-dir says (k8s.io/kubelet's DevicePluginPath).
DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")
# The machine-wide CDI dirs every CDI-aware runtime reads; the node's own dir is read after them.
SYSTEM_CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))


@dataclass(frozen=True)
class NodePaths:
    root: Path

    @property
    def containerd(self) -> Path:
        return self.root / "containerd"

    @property
    def containerd_config(self) -> Path:
        return self.containerd / "config.toml"

    @property
    def containerd_sock(self) -> Path:
        return self.containerd / "containerd.sock"

    @property
    def cni_conf(self) -> Path:
        return self.root / "cni" / "net.d"

    @property
    def cni_ipam(self) -> Path:
        return self.root / "cni" / "ipam"

    @property
    def cdi(self) -> Path:
        """This node's CDI spec dir: read by its containerd, so tests and the demo never collide in /etc/cdi."""
        return self.root / "cdi"

    @property
    def kubelet_root(self) -> Path:
        return self.root / "kubelet"

    @property
    def plugins_registry(self) -> Path:
        """Where kubelet plugins (DRA drivers, CSI) put their registration sockets: ``<root-dir>/plugins_registry``."""
        return self.kubelet_root / "plugins_registry"

    @property
    def kubelet_plugins(self) -> Path:
        """Where kubelet plugins conventionally serve: ``<root-dir>/plugins/<driver name>/``."""
        return self.kubelet_root / "plugins"

    @property
    def kubelet_config(self) -> Path:
        return self.root / "kubelet-config.yaml"

    @property
    def images(self) -> Path:
        return self.root / "images"

    @property
    def host_snapshot(self) -> Path:
        return self.root / "host-before.json"

    def cdi_spec_dirs(self) -> list[Path]:
        """Every dir containerd reads CDI specs from, lowest priority first (a later dir's spec wins)."""
        return [*SYSTEM_CDI_DIRS, self.cdi]


def node_paths(where: Layout | Path) -> NodePaths:
    layout = where if isinstance(where, Layout) else Layout(where)
    return NodePaths(layout.node)


def cdi_spec_dir(where: Layout | Path) -> Path:
    """The CDI spec dir of the real node of the cluster in ``where`` (a state dir or its Layout)."""
    return node_paths(where).cdi


def plugins_registry_dir(where: Layout | Path) -> Path:
    """The kubelet's plugin registration dir on the real node (for a DRA driver's ``*-reg.sock``)."""
    return node_paths(where).plugins_registry


def kubelet_plugins_dir(where: Layout | Path) -> Path:
    """The kubelet's plugins dir on the real node (a DRA driver serves ``<this>/<driver>/dra.sock``)."""
    return node_paths(where).kubelet_plugins


def containerd_address(where: Layout | Path) -> str:
    """The real node's containerd socket (for ``ctr --address`` and ``images.import_archive``)."""
    return str(node_paths(where).containerd_sock)
