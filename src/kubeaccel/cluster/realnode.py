"""Tier 2: a real kubelet with containerd 2, runc and a CNI bridge, joined to the local control plane.

containerd, its runc shim, ctr, runc and the CNI plugins are built from their upstream Go modules by
scripts/containerd/build.sh (versions in versions.env); containerd reads CDI specs from /etc/cdi,
/var/run/cdi and the node's own dir (``nodepaths.cdi_spec_dir``).

Facts this relies on (seen on the project's VMs): containerd's CRI needs ``restrict_oom_score_adj`` where
root lacks CAP_SYS_RESOURCE; the kubelet refuses a loopback ``--node-ip``, so the node keeps its hostname
(which must resolve to 127.0.0.1) and the API server prefers Hostname addresses; the kubelet's device-plugin
dir is ``/var/lib/kubelet/device-plugins/`` whatever ``--root-dir`` says, so one real node per machine.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from kubeaccel.cluster import api, hostclean, images, process
from kubeaccel.cluster.binaries import REAL_NODE, cni_bin_dir, containerd_bin_dir, locate, missing_cni_plugins
from kubeaccel.cluster.kubeconfig import build_kubeconfig, dump
from kubeaccel.cluster.layout import Layout
from kubeaccel.cluster.nodepaths import DEVICE_PLUGIN_DIR, NodePaths, containerd_address, node_paths
from kubeaccel.cluster.pki import CertificateAuthority
from kubeaccel.cluster.ports import pick_free
from kubeaccel.errors import ConfigError, KubeaccelError, UnavailableError

__all__ = ["DEVICE_PLUGIN_DIR", "check_host", "check_state_dir", "check_unclaimed", "containerd_address", "down",
           "node_name", "up"]

KUBELET_DEFAULT_ROOT = Path("/var/lib/kubelet")
CLAIM_FILE = Path("/run/kubeaccel/real-node.json")
BRIDGE = "kubeaccel0"
POD_SUBNET = "10.244.0.0/24"
CGROUP_NAME = "kubeaccel"
NODE_READY_TIMEOUT = 90.0

Progress = Callable[[str], None]


def node_name() -> str:
    return socket.gethostname().lower()


def check_host() -> None:
    """Root, cgroups, the built runtime, busybox and a hostname on 127.0.0.1, or a clear error saying what to fix."""
    if os.geteuid() != 0:
        raise KubeaccelError(
            "the real node (tier 2) needs root: it runs containerd and a kubelet",
            hint="run as root, or leave out --real-node (tier 1 needs no root)",
        )
    if not any(p.is_dir() for p in hostclean.cgroup_dirs("")):
        raise KubeaccelError(
            "no cgroup hierarchy is mounted under /sys/fs/cgroup",
            hint="the real node needs cgroups (v1 or v2); run on a host or VM with them, or leave out --real-node",
        )
    locate(REAL_NODE)
    missing = missing_cni_plugins()
    if missing:
        raise KubeaccelError(
            f"CNI plugins {', '.join(missing)} are not built in {cni_bin_dir()}",
            hint="run scripts/bootstrap.sh (scripts/containerd/build.sh builds them from upstream with Go, once)",
        )
    if not images.BUSYBOX_BINARY.exists():
        raise KubeaccelError(f"{images.BUSYBOX_BINARY} is missing", hint="apt-get install busybox-static")
    try:
        address = socket.gethostbyname(node_name())
    except OSError:
        address = ""
    if not address.startswith("127."):
        raise KubeaccelError(
            f"the hostname {node_name()!r} does not resolve to 127.0.0.1 (got {address or 'nothing'})",
            hint=f"add '127.0.0.1 {node_name()}' to /etc/hosts: the API server reaches the kubelet by hostname",
        )


def check_unclaimed(layout: Layout) -> None:
    """One real node per machine: the device-plugin dir is fixed. A claim whose kubelet is dead is stale."""
    try:
        claim = json.loads(CLAIM_FILE.read_text())
        owner = Path(claim["state_dir"])
    except (OSError, ValueError, KeyError, TypeError):
        owner = None
    if owner is not None and owner != layout.root:
        record = process.read_record(Layout(owner), "kubelet")
        if record is not None and record.alive():
            raise KubeaccelError(
                f"a real node is already running on this machine (state dir {owner})",
                hint=f"stop it with `kubeaccel cluster down --state-dir {owner}`; only one kubelet can own "
                f"{DEVICE_PLUGIN_DIR}",
            )


def _claim(layout: Layout) -> None:
    check_unclaimed(layout)
    CLAIM_FILE.parent.mkdir(parents=True, exist_ok=True)
    CLAIM_FILE.write_text(json.dumps({"state_dir": str(layout.root)}))


def containerd_config(paths: NodePaths, runc: str) -> str:
    """containerd 2 configuration, version 3 (read natively by 2.0-2.3, migrated in memory by 2.4)."""
    root = paths.containerd
    images_plugin, runtime_plugin = "plugins.'io.containerd.cri.v1.images'", "plugins.'io.containerd.cri.v1.runtime'"
    cdi_dirs = ", ".join(f"'{d}'" for d in paths.cdi_spec_dirs())
    return f"""version = 3
root = '{root / 'root'}'
state = '{root / 'state'}'
oom_score = 0
# Not needed here, and NRI would listen on the machine-wide /var/run/nri/nri.sock.
disabled_plugins = ['io.containerd.snapshotter.v1.btrfs', 'io.containerd.snapshotter.v1.zfs',
                    'io.containerd.snapshotter.v1.devmapper', 'io.containerd.snapshotter.v1.aufs',
                    'io.containerd.nri.v1.nri']

[grpc]
  address = '{paths.containerd_sock}'

[plugins.'io.containerd.internal.v1.opt']
  path = '{root / 'opt'}'

[{images_plugin}]
  snapshotter = 'overlayfs'

[{images_plugin}.pinned_images]
  sandbox = '{images.PAUSE_IMAGE}'

[{runtime_plugin}]
  # root here lacks CAP_SYS_RESOURCE: without this runc fails with "can't get final child's PID from pipe".
  restrict_oom_score_adj = true
  disable_apparmor = true
  # CDI is always on in containerd 2; these are where it looks, the node's own dir last (highest priority).
  cdi_spec_dirs = [{cdi_dirs}]

[{runtime_plugin}.containerd]
  default_runtime_name = 'runc'

[{runtime_plugin}.containerd.runtimes.runc]
  runtime_type = 'io.containerd.runc.v2'
  # The built shim by path: a shim found on PATH (e.g. a distribution's older one) must never be used.
  runtime_path = '{containerd_bin_dir() / 'containerd-shim-runc-v2'}'

[{runtime_plugin}.containerd.runtimes.runc.options]
  BinaryName = '{runc}'
  SystemdCgroup = false
  Root = '{root / 'runc'}'

[{runtime_plugin}.cni]
  bin_dirs = ['{cni_bin_dir()}']
  conf_dir = '{paths.cni_conf}'

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
"""


def cni_config(paths: NodePaths) -> dict[str, Any]:
    return {
        "cniVersion": "0.4.0",
        "name": "kubeaccel",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": POD_SUBNET}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(paths.cni_ipam),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(layout: Layout, paths: NodePaths, port: int) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": "127.0.0.1",
        "port": port,
        "readOnlyPort": 0,
        "healthzPort": 0,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(layout.cert("ca"))},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{paths.containerd_sock}",
        "imageServiceEndpoint": f"unix://{paths.containerd_sock}",
        "cgroupDriver": "cgroupfs",
        # Pods go below a cgroup of our own, so `down` can find and remove everything they leave.
        "cgroupRoot": f"/{CGROUP_NAME}",
        # This machine uses cgroup v1, which Kubernetes 1.31+ refuses unless told otherwise.
        "failCgroupV1": False,
        "failSwapOn": False,
        "localStorageCapacityIsolation": False,
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        # The locally imported pause and busybox images cannot be pulled again: never collect them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # Faster allocatable updates after a device plugin registers (default 10 s).
        "nodeStatusUpdateFrequency": "3s",
        "resolvConf": "/etc/resolv.conf",
        "serializeImagePulls": False,
        "maxPods": 110,
    }


def _write_node_files(layout: Layout, server: str, kubelet_port: int, runc: str) -> NodePaths:
    paths = node_paths(layout)
    for path in (paths.containerd, paths.cni_conf, paths.cni_ipam, paths.kubelet_root, paths.images, paths.cdi,
                 paths.plugins_registry, paths.kubelet_plugins):
        path.mkdir(parents=True, exist_ok=True)
    paths.containerd_config.write_text(containerd_config(paths, runc))
    (paths.cni_conf / "10-kubeaccel.conflist").write_text(json.dumps(cni_config(paths), indent=2))
    paths.kubelet_config.write_text(yaml.safe_dump(kubelet_config(layout, paths, kubelet_port), sort_keys=False))
    ca = CertificateAuthority.load(layout.cert("ca").read_bytes(), layout.key("ca").read_bytes())
    # The Node authorizer and NodeRestriction admission key on exactly this identity.
    pair = ca.issue(f"system:node:{node_name()}", organization="system:nodes", client=True)
    kubeconfig = layout.component_kubeconfig("kubelet")
    kubeconfig.write_text(dump(build_kubeconfig(server, ca.pair.cert_pem, pair.cert_pem, pair.key_pem, "kubelet")))
    kubeconfig.chmod(0o600)
    return paths


def _snapshot_host(paths: NodePaths) -> None:
    snapshot = {
        "iptables": hostclean.snapshot_iptables(),
        "netns": hostclean.netns_names(),
        "links": hostclean.link_names(),
        "kubelet_root_existed": KUBELET_DEFAULT_ROOT.exists(),
    }
    paths.host_snapshot.write_text(json.dumps(snapshot))


def _ctr_ok(binary: str, sock: Path) -> bool:
    proc = subprocess.run([binary, f"--address={sock}", "version"], capture_output=True, check=False, timeout=10)
    return proc.returncode == 0


# Unix socket paths are limited to 107 bytes; the longest we create lives under the kubelet's root dir.
_LONGEST_SOCKET = "kubelet/pod-resources/kubelet.sock"


def check_state_dir(layout: Layout) -> None:
    longest = layout.node / _LONGEST_SOCKET
    if len(str(longest).encode()) > 107:
        raise ConfigError(
            f"the state dir {layout.root} is too long for the real node's unix sockets ({longest})",
            hint="use a shorter --state-dir (at most about 60 characters)",
        )


def up(layout: Layout, server: str, progress: Progress) -> str:
    """Start containerd and the kubelet; return the node's name once it is Ready."""
    check_host()
    check_state_dir(layout)
    _claim(layout)
    bins = locate(REAL_NODE)
    (kubelet_port,) = pick_free(1)
    paths = _write_node_files(layout, server, kubelet_port, bins["runc"])
    _snapshot_host(paths)
    for cgroup in hostclean.cgroup_dirs(CGROUP_NAME):
        # The kubelet requires its cgroup root to exist in every hierarchy.
        with contextlib.suppress(OSError):
            cgroup.mkdir(exist_ok=True)
    DEVICE_PLUGIN_DIR.mkdir(parents=True, exist_ok=True)
    progress("starting containerd (CRI, runc, CNI bridge)")
    process.start(layout, "containerd", [bins["containerd"], f"--config={paths.containerd_config}"])
    alive = _dead_check(layout, ("containerd",))
    api.wait_until("containerd", lambda: _ctr_ok(bins["ctr"], paths.containerd_sock), 30, alive)
    progress("importing the locally built pause and busybox images")
    for archive in images.build_base_images(paths.images).values():
        images.import_archive(archive, str(paths.containerd_sock), bins["ctr"])
    name = node_name()
    progress(f"starting the kubelet (node {name})")
    process.start(layout, "kubelet", [
        bins["kubelet"],
        f"--config={paths.kubelet_config}",
        f"--kubeconfig={layout.component_kubeconfig('kubelet')}",
        f"--root-dir={paths.kubelet_root}",
        f"--hostname-override={name}",
        "--v=1",
    ])
    client = api.client(layout.kubeconfig)

    def ready() -> bool:
        from lightkube.resources.core_v1 import Node

        return api.node_ready(client.get(Node, name))

    api.wait_until(f"the real node {name} to become Ready", ready, NODE_READY_TIMEOUT,
                   _dead_check(layout, ("containerd", "kubelet")))
    return name


def _dead_check(layout: Layout, names: tuple[str, ...]) -> Callable[[], None]:
    def check() -> None:
        for name in names:
            record = process.read_record(layout, name)
            if record is not None and not record.alive():
                raise UnavailableError(
                    f"{name} exited; last lines of {layout.log(name)}:\n{process.log_tail(layout, name)}",
                    hint="fix the cause shown above, then `kubeaccel cluster up --real-node` again",
                )

    return check


def down(layout: Layout) -> list[str]:
    """Stop the kubelet, the containers and containerd; remove mounts, cgroups, chains, netns and the bridge."""
    paths = node_paths(layout)
    stopped = process.stop_all(layout, grace=2.0, names=("kubelet",))
    # Containers first (they live in our cgroups), then their shims, then containerd itself.
    hostclean.remove_cgroups(hostclean.cgroup_dirs(CGROUP_NAME))
    for pid in hostclean.pids_with_argument(str(paths.containerd_sock), "containerd-shim"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 9)
    stopped += process.stop_all(layout, grace=2.0, names=("containerd",))
    snapshot = host_snapshot(layout)
    new_netns = [n for n in hostclean.netns_names() if n not in set(snapshot.get("netns", []))]
    hostclean.remove_netns(new_netns)
    hostclean.unmount_all([layout.node, KUBELET_DEFAULT_ROOT])
    if snapshot.get("iptables"):
        hostclean.remove_new_chains(snapshot["iptables"])
    hostclean.delete_link(BRIDGE)
    if snapshot.get("kubelet_root_existed", True):
        shutil.rmtree(DEVICE_PLUGIN_DIR, ignore_errors=True)
    else:
        shutil.rmtree(KUBELET_DEFAULT_ROOT, ignore_errors=True)
    with contextlib.suppress(OSError, ValueError, KeyError):
        if Path(json.loads(CLAIM_FILE.read_text())["state_dir"]) == layout.root:
            CLAIM_FILE.unlink()
    # Wait briefly for the kernel to release the last detached mounts before the state dir is removed.
    time.sleep(0.1)
    return stopped


def host_snapshot(layout: Layout) -> dict[str, Any]:
    """What existed on the host before this node's ``up`` (iptables chains, netns, links), for ``down``; a
    node whose ``up`` was killed before writing it gets a snapshot that removes and checks only what is ours
    by name (the bridge, the cgroups)."""
    try:
        snapshot = json.loads(node_paths(layout).host_snapshot.read_text())
    except (OSError, ValueError):
        snapshot = None
    if not isinstance(snapshot, dict):
        return {"iptables": {}, "netns": [], "kubelet_root_existed": True}
    return snapshot


def keep_host_snapshot(layout: Layout, snapshot: dict[str, Any]) -> None:
    paths = node_paths(layout)
    paths.root.mkdir(parents=True, exist_ok=True)
    paths.host_snapshot.write_text(json.dumps(snapshot))


def claimed_by(layout: Layout) -> bool:
    """Whether the machine's real-node claim names this state dir."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        return Path(json.loads(CLAIM_FILE.read_text())["state_dir"]) == layout.root
    return False


def leftovers(snapshot: dict[str, Any]) -> list[str]:
    """What a stopped real node left on the host, against the ``host_snapshot`` taken before it started:
    our cgroups, our bridge, network namespaces and veth links that were not there, KUBE-*/CNI-* chains."""
    found = [f"cgroup {d}" for d in hostclean.cgroup_dirs(CGROUP_NAME) if d.exists()]
    if Path("/sys/class/net", BRIDGE).exists():
        found.append(f"link {BRIDGE}")
    found += [f"netns {n}" for n in hostclean.netns_names() if n not in set(snapshot.get("netns", []))]
    if "links" in snapshot:
        before = set(snapshot["links"])
        found += [f"link {n}" for n in hostclean.link_names() if n.startswith("veth") and n not in before]
    if snapshot.get("iptables"):
        now = {tool: {t: set(c) for t, c in tables.items()} for tool, tables in hostclean.snapshot_iptables().items()}
        for tool, tables in now.items():
            previous = {t: set(c) for t, c in snapshot["iptables"].get(tool, {}).items()}
            for table, chains in hostclean.new_chains(previous, tables).items():
                found += [f"{tool} chain {table}/{c}" for c in sorted(chains)]
    return found
