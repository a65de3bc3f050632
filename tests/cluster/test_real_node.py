"""Tier 2, the real node: a kubelet with containerd, runc and the CNI bridge, joined to the session cluster.

Matrix: the node runs containerd 2 (built from upstream, config version 3) on the Kubernetes of
versions.env, with the kubelet's plugin registration dir under its own root dir; a busybox pod (locally
built image, no registry) runs to completion and its logs come back through the API server -> kubelet
path; our device plugin daemon (``kubeaccel plugin run``, simulated devices) registers with this real
kubelet, the node advertises ``example.com/sim``, and a pod asking for it receives the devices our
Allocate chose, as indices in the ``KUBEACCEL_DEVICES_EXAMPLE_COM_SIM`` env var; a health flip lowers
allocatable; with ``cdi: true`` the names Allocate returns are resolved by containerd from a spec in the
node's own CDI dir, and the container gets that spec's env, device node and mount.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.cluster import LocalCluster, RealNode, wait_for

from kubeaccel.cluster.images import BUSYBOX_IMAGE
from kubeaccel.cluster.realnode import DEVICE_PLUGIN_DIR
from kubeaccel.cluster.versions import CONTAINERD_VERSION, KUBE_VERSION

pytestmark = [pytest.mark.real_node, pytest.mark.cluster, pytest.mark.slow]
KUBEACCEL = str(Path(sys.executable).with_name("kubeaccel"))


def _pod(name: str, node: str, command: str, limits: dict[str, str] | None = None) -> str:
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                "command": ["sh", "-c", command],
                "resources": {"limits": limits or {}},
            }],
        },
    })


def _phase(cluster: LocalCluster, name: str, ns: str) -> str:
    return cluster.kubectl("get", "pod", name, "-n", ns, "-o", "jsonpath={.status.phase}", check=False).stdout


def _allocatable(cluster: LocalCluster, node: str, resource: str) -> str:
    path = "{.status.allocatable." + resource.replace(".", "\\.") + "}"
    return cluster.kubectl("get", "node", node, "-o", f"jsonpath={path}").stdout


def test_node_is_ready_and_real(real_node: RealNode) -> None:
    node = json.loads(real_node.cluster.kubectl("get", "node", real_node.node_name, "-o", "json").stdout)
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"] == f"containerd://{CONTAINERD_VERSION}"
    assert node["status"]["nodeInfo"]["kubeletVersion"] == f"v{KUBE_VERSION}"
    assert next(c for c in node["status"]["conditions"] if c["type"] == "Ready")["status"] == "True"
    assert (DEVICE_PLUGIN_DIR / "kubelet.sock").is_socket()
    # The kubelet watches its plugin registration dir (DRA drivers register there) under its own root dir.
    assert real_node.plugins_registry.is_dir() and real_node.kubelet_plugins.is_dir()
    assert real_node.plugins_registry.parent == real_node.kubelet_plugins.parent
    config = (Path(real_node.containerd_address).parent / "config.toml").read_text()
    assert config.startswith("version = 3") and str(real_node.cdi_dir) in config


def test_busybox_pod_runs_to_completion_and_logs_come_back(real_node: RealNode) -> None:
    cluster = real_node.cluster
    ns = cluster.create_namespace("real")
    cluster.apply(_pod("hello", real_node.node_name, "echo hello from $(hostname); cat /proc/1/cgroup | head -1"), ns)
    wait_for("pod Succeeded", lambda: _phase(cluster, "hello", ns) in ("Succeeded", "Failed"))
    assert _phase(cluster, "hello", ns) == "Succeeded"
    logs = cluster.kubectl("logs", "hello", "-n", ns).stdout
    assert "hello from hello" in logs
    # A failing command is reported as Failed with its exit code: the container really ran.
    cluster.apply(_pod("fails", real_node.node_name, "exit 3"), ns)
    wait_for("pod Failed", lambda: _phase(cluster, "fails", ns) in ("Succeeded", "Failed"))
    code = cluster.kubectl("get", "pod", "fails", "-n", ns, "-o",
                           "jsonpath={.status.containerStatuses[0].state.terminated.exitCode}").stdout
    assert code == "3"


def test_second_real_node_on_the_machine_is_refused_before_starting_anything(real_node: RealNode) -> None:
    # Short, so the unix-socket length check passes and the claim check is what answers.
    other = Path(tempfile.mkdtemp(prefix="kubeaccel-other-")) / "s"
    proc = subprocess.run([KUBEACCEL, "cluster", "up", "--real-node", "--state-dir", str(other)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "a real node is already running" in proc.stderr and "kubeaccel cluster down --state-dir" in proc.stderr
    assert not (other / "run").exists()
    shutil.rmtree(other.parent)


@pytest.fixture
def sim_plugin(real_node: RealNode, tmp_path: Path) -> Iterator[Path]:
    """Our device plugin daemon on 4 simulated devices, registered with the real kubelet."""
    state = tmp_path / "sim-state.json"
    config = tmp_path / "sim.yaml"
    config.write_text(
        "version: v1\nresources:\n  - name: example.com/sim\n    backend: simulated\n    count: 4\n"
        f"    numaNodes: 2\n    stateFile: {state}\n    deviceDir: {tmp_path / 'simdev'}\n"
    )
    log = open(tmp_path / "plugin.log", "wb")  # noqa: SIM115 - closed in teardown
    daemon = subprocess.Popen([KUBEACCEL, "plugin", "run", "--config", str(config), "--socket-dir",
                               str(DEVICE_PLUGIN_DIR)], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield state
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()


def test_device_plugin_end_to_end_on_the_real_kubelet(real_node: RealNode, sim_plugin: Path) -> None:
    cluster, node = real_node.cluster, real_node.node_name
    wait_for("example.com/sim allocatable", lambda: _allocatable(cluster, node, "example.com/sim") == "4")
    ns = cluster.create_namespace("dp")
    cluster.apply(_pod("gets-two", node,
                       "echo DEVICES=$KUBEACCEL_DEVICES_EXAMPLE_COM_SIM; "
                       "for d in /dev/sim-*; do [ -c $d ] && echo NODE=$d; done",
                       {"example.com/sim": "2"}), ns)
    wait_for("pod Succeeded", lambda: _phase(cluster, "gets-two", ns) in ("Succeeded", "Failed"))
    assert _phase(cluster, "gets-two", ns) == "Succeeded"
    log = cluster.kubectl("logs", "gets-two", "-n", ns).stdout.splitlines()
    line = next(x for x in log if x.startswith("DEVICES="))
    # The env var carries the allocated devices' indices (Spark's resource addresses): sim-N has index N.
    indices = sorted(line.removeprefix("DEVICES=").split(","))
    # The kubelet asked GetPreferredAllocation: both from one NUMA node (sim-0/1 or sim-2/3).
    assert indices in (["0", "1"], ["2", "3"])
    # Allocate's device specs: the container has exactly those devices' nodes, as character devices.
    nodes = sorted(x.removeprefix("NODE=") for x in log if x.startswith("NODE="))
    assert nodes == [f"/dev/sim-{i}" for i in indices]
    # A device turning unhealthy reaches the node's allocatable through ListAndWatch.
    sim_plugin.write_text(json.dumps({"sim-3": "Unhealthy"}))
    wait_for("allocatable 3 after a health flip", lambda: _allocatable(cluster, node, "example.com/sim") == "3")


def test_cdi_names_from_allocate_are_resolved_from_the_nodes_cdi_dir(real_node: RealNode, tmp_path: Path) -> None:
    from kubeaccel.devices import cdi
    from kubeaccel.devices.model import DeviceNode, Mount

    resource = "example.com/cditest"
    shared = tmp_path / "cdi-shared"
    shared.mkdir()
    (shared / "info").write_text("mounted by CDI\n")
    edits = {
        str(i): cdi.ContainerEdits.of(
            env={"CDI_TEST_INDEX": str(i)},
            device_nodes=[DeviceNode(host_path="/dev/null", container_path=f"/dev/cditest-{i}")],
        )
        for i in range(2)
    }
    common = cdi.ContainerEdits.of(mounts=[Mount(host_path=str(shared), container_path="/cdi", read_only=True)])
    spec_file = cdi.spec_file_name(f"test-{tmp_path.name}")
    cdi.write_spec(real_node.cdi_dir, spec_file, cdi.spec(cdi.kind_for(resource), edits, common))
    config = tmp_path / "cdi.yaml"
    config.write_text(
        f"version: v1\nresources:\n  - name: {resource}\n    backend: simulated\n    count: 2\n    cdi: true\n"
        f"    stateFile: {tmp_path / 'state.json'}\n    deviceDir: {tmp_path / 'dev'}\n"
    )
    log = open(tmp_path / "plugin.log", "wb")  # noqa: SIM115 - closed below
    daemon = subprocess.Popen([KUBEACCEL, "plugin", "run", "--config", str(config), "--socket-dir",
                               str(DEVICE_PLUGIN_DIR)], stdout=log, stderr=subprocess.STDOUT)
    cluster, node = real_node.cluster, real_node.node_name
    try:
        wait_for(f"{resource} allocatable", lambda: _allocatable(cluster, node, resource) == "2")
        ns = cluster.create_namespace("cdi")
        cluster.apply(_pod("cdi", node, "echo INDEX=$CDI_TEST_INDEX; ls /dev/ | grep cditest; cat /cdi/info",
                           {resource: "1"}), ns)
        wait_for("pod Succeeded", lambda: _phase(cluster, "cdi", ns) in ("Succeeded", "Failed"))
        out = cluster.kubectl("logs", "cdi", "-n", ns).stdout
        assert _phase(cluster, "cdi", ns) == "Succeeded", out
        index = next(line for line in out.splitlines() if line.startswith("INDEX=")).removeprefix("INDEX=")
        assert index in ("0", "1")
        assert f"cditest-{index}" in out.split() and "mounted by CDI" in out
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=10)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
        log.close()
        cdi.remove_spec(real_node.cdi_dir, spec_file)


def test_own_image_built_from_a_rootfs_runs_and_bad_archive_is_refused(real_node: RealNode, tmp_path: Path) -> None:
    from kubeaccel.cluster.images import ImageConfig, build_archive, busybox_rootfs
    from kubeaccel.errors import KubeaccelError

    rootfs = busybox_rootfs(tmp_path / "rootfs")
    (rootfs / "app").mkdir()
    (rootfs / "app" / "run.sh").write_text("#!/bin/sh\necho \"app says $GREETING from $(pwd)\"\n")
    (rootfs / "app" / "run.sh").chmod(0o755)
    name = f"kubeaccel.local/test-app:{tmp_path.name[-8:].lower().replace('_', '-')}"
    archive = build_archive(rootfs, name, tmp_path / "app.oci.tar",
                            ImageConfig(entrypoint=("/app/run.sh",), env={"GREETING": "hi"}, workdir="/app"))
    real_node.import_image(archive)
    cluster = real_node.cluster
    ns = cluster.create_namespace("img")
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"},
        "spec": {"nodeName": real_node.node_name, "restartPolicy": "Never",
                 "containers": [{"name": "app", "image": name, "imagePullPolicy": "Never"}]},
    }
    cluster.apply(json.dumps(pod), ns)
    wait_for("app Succeeded", lambda: _phase(cluster, "app", ns) in ("Succeeded", "Failed"))
    assert cluster.kubectl("logs", "app", "-n", ns).stdout.strip() == "app says hi from /app"

    (tmp_path / "junk.tar").write_bytes(b"not an image")
    with pytest.raises(KubeaccelError, match=r"importing .* failed") as err:
        real_node.import_image(tmp_path / "junk.tar")
    assert err.value.hint


def test_dead_kubelet_is_repaired_by_up_on_the_same_node(real_node: RealNode) -> None:
    """Last in this module on purpose: the session's real node is restarted (and is usable afterwards)."""
    from kubeaccel.cluster import process
    from kubeaccel.cluster.layout import Layout
    from kubeaccel.cluster.lifecycle import up
    from kubeaccel.cluster.spec import ClusterSpec

    cluster = real_node.cluster
    layout = Layout(cluster.state_dir)
    kubelet = process.read_record(layout, "kubelet")
    assert kubelet is not None
    apiserver = process.read_record(layout, "kube-apiserver")
    os.kill(kubelet.pid, signal.SIGKILL)
    wait_for("kubelet gone", lambda: not kubelet.alive(), timeout=10)
    info = up(ClusterSpec(state_dir=cluster.state_dir, nodes=len(cluster.nodes), real_node=True))
    assert info.repaired == ["containerd", "kubelet"] and info.real_node == real_node.node_name
    assert info.server == cluster.server
    assert process.read_record(layout, "kube-apiserver") == apiserver, "the control plane was left alone"
    ns = cluster.create_namespace("again")
    cluster.apply(_pod("again", real_node.node_name, "echo back"), ns)
    wait_for("pod Succeeded", lambda: _phase(cluster, "again", ns) in ("Succeeded", "Failed"))
    assert cluster.kubectl("logs", "again", "-n", ns).stdout.strip() == "back"
