"""A local cluster that never loses data, on a cluster of its own (these tests kill its processes).

Matrix: the controller-manager killed -> restarted by the supervisor (same command line, restart counted in
`cluster status`), controllers work again; the API server killed -> restarted on the same port, data kept;
the API server paused (SIGSTOP) 15 s then resumed -> whatever exited meanwhile is restarted and new pods are
scheduled and run; the supervisor gone and parts dead -> `cluster up` repairs in place with the same port,
certificates and data; only `--fresh` wipes; a different --apiserver-port is refused, not a silent wipe.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.cluster import LocalCluster, processes_of, wait_for

from kubeaccel.cluster import process, supervisor
from kubeaccel.cluster.layout import Layout

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
KUBEACCEL = str(Path(sys.executable).with_name("kubeaccel"))
# On a loaded 2-core machine a restarted controller-manager first waits out the dead one's leader lease (15 s).
RECOVERY_TIMEOUT = 120.0


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBEACCEL, "cluster", *args], capture_output=True, text=True, timeout=300, check=False)


@pytest.fixture(scope="module")
def own_cluster() -> Iterator[LocalCluster]:
    from kubeaccel.cluster.lifecycle import down, up
    from kubeaccel.cluster.spec import ClusterSpec

    state_dir = Path(tempfile.mkdtemp(prefix="kubeaccel-cluster-sup-"))
    try:
        info = up(ClusterSpec(state_dir=state_dir, nodes=1))
        yield LocalCluster(info.kubeconfig, info.server, info.state_dir, info.nodes)
    finally:
        down(state_dir)
        left = processes_of(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)  # only the user's files are left: no mount points
    assert left == [], f"processes of the cluster survived `down`: {left}"


def _record(cluster: LocalCluster, name: str) -> process.ProcessRecord:
    record = process.read_record(Layout(cluster.state_dir), name)
    assert record is not None, f"no record of {name}"
    return record


def _kill(cluster: LocalCluster, name: str) -> process.ProcessRecord:
    record = _record(cluster, name)
    os.kill(record.pid, signal.SIGKILL)
    wait_for(f"{name} gone", lambda: not record.alive(), timeout=10)
    return record


def _restarted(cluster: LocalCluster, name: str, old: process.ProcessRecord) -> bool:
    now = process.read_record(Layout(cluster.state_dir), name)
    return now is not None and now.pid != old.pid and now.alive()


def _marker(cluster: LocalCluster) -> str:
    """Data to survive: a namespace with a ConfigMap."""
    ns = cluster.create_namespace("keep")
    cluster.kubectl("create", "configmap", "precious", "-n", ns, "--from-literal=k=v")
    return ns


def _data_kept(cluster: LocalCluster, ns: str) -> None:
    got = cluster.kubectl("get", "configmap", "precious", "-n", ns, "-o", "jsonpath={.data.k}", timeout=30)
    assert got.stdout == "v"


def _controllers_and_scheduler_work(cluster: LocalCluster) -> None:
    """A Deployment needs the controller-manager (ReplicaSet, Pod), the scheduler (binding) and kwok (Running)."""
    ns = cluster.create_namespace("works")
    name = f"d-{uuid.uuid4().hex[:6]}"
    cluster.kubectl("create", "deployment", name, "-n", ns, "--image=busybox", timeout=30)

    def running() -> bool:
        out = cluster.kubectl("get", "pods", "-n", ns, "-l", f"app={name}", "-o",
                              "jsonpath={.items[*].status.phase}", check=False, timeout=30).stdout
        return out.split() == ["Running"]

    wait_for("a Deployment's pod Running", running, timeout=RECOVERY_TIMEOUT, interval=1)


def _status(cluster: LocalCluster) -> dict[str, object]:
    proc = _cli("status", "--state-dir", str(cluster.state_dir), "--json")
    return dict(json.loads(proc.stdout))


def test_supervisor_restarts_a_killed_controller_manager(own_cluster: LocalCluster) -> None:
    ns = _marker(own_cluster)
    old = _kill(own_cluster, "kube-controller-manager")
    wait_for("the supervisor restarting kube-controller-manager",
             lambda: _restarted(own_cluster, "kube-controller-manager", old), timeout=30)
    new = _record(own_cluster, "kube-controller-manager")
    assert new.argv == old.argv and new.restarts == old.restarts + 1
    _controllers_and_scheduler_work(own_cluster)
    _data_kept(own_cluster, ns)
    report = _status(own_cluster)
    assert report["healthy"] is True
    assert report["restarts"]["kube-controller-manager"] == new.restarts  # type: ignore[index]
    text = _cli("status", "--state-dir", str(own_cluster.state_dir)).stdout
    assert "kube-controller-manager:up (restarted" in text


def test_killed_apiserver_comes_back_on_the_same_port_with_the_data(own_cluster: LocalCluster) -> None:
    ns = _marker(own_cluster)
    old = _kill(own_cluster, "kube-apiserver")
    wait_for("kube-apiserver restarted", lambda: _restarted(own_cluster, "kube-apiserver", old), timeout=30)
    assert _record(own_cluster, "kube-apiserver").argv == old.argv  # same --secure-port, same etcd
    wait_for("a healthy cluster", lambda: _status(own_cluster).get("healthy") is True, timeout=RECOVERY_TIMEOUT)
    _data_kept(own_cluster, ns)
    _controllers_and_scheduler_work(own_cluster)


def test_apiserver_paused_15_s_then_resumed(own_cluster: LocalCluster) -> None:
    ns = _marker(own_cluster)
    apiserver = _record(own_cluster, "kube-apiserver")
    os.kill(apiserver.pid, signal.SIGSTOP)
    try:
        time.sleep(15)
    finally:
        os.kill(apiserver.pid, signal.SIGCONT)
    # The controller-manager and scheduler may have lost their leases and exited meanwhile: restarted, not gone.
    wait_for("a healthy cluster", lambda: _status(own_cluster).get("healthy") is True, timeout=RECOVERY_TIMEOUT)
    assert _record(own_cluster, "kube-apiserver").pid == apiserver.pid
    _controllers_and_scheduler_work(own_cluster)
    _data_kept(own_cluster, ns)


def test_cluster_up_repairs_in_place_without_a_supervisor(own_cluster: LocalCluster) -> None:
    ns = _marker(own_cluster)
    layout = Layout(own_cluster.state_dir)
    _kill(own_cluster, supervisor.NAME)
    etcd = _record(own_cluster, "etcd")
    dead = {name: _kill(own_cluster, name) for name in ("kube-controller-manager", "kube-scheduler")}
    broken = _cli("status", "--state-dir", str(own_cluster.state_dir))
    assert broken.returncode == 4 and "repairs it in place" in broken.stderr

    repaired = _cli("up", "--state-dir", str(own_cluster.state_dir), "--nodes", "1")
    assert repaired.returncode == 0, repaired.stderr
    assert "cluster repaired" in repaired.stderr and own_cluster.server in repaired.stderr
    assert "kube-controller-manager" in repaired.stderr and "kube-scheduler" in repaired.stderr
    assert repaired.stdout.strip() == str(own_cluster.kubeconfig)
    # The live parts were left alone; the dead ones run the same command lines again.
    assert _record(own_cluster, "etcd").pid == etcd.pid
    for name, old in dead.items():
        assert _restarted(own_cluster, name, old) and _record(own_cluster, name).argv == old.argv
    assert _record(own_cluster, supervisor.NAME).alive()
    assert all(r.alive() for r in process.records(layout))
    _data_kept(own_cluster, ns)
    _controllers_and_scheduler_work(own_cluster)


def test_other_port_is_refused_and_only_fresh_wipes(own_cluster: LocalCluster) -> None:
    ns = _marker(own_cluster)
    state = str(own_cluster.state_dir)
    port = own_cluster.server.rsplit(":", 1)[1]
    other = str(int(port) + 1)
    refused = _cli("up", "--state-dir", state, "--apiserver-port", other)
    assert refused.returncode == 2
    assert f"uses apiserver-port {port}" in refused.stderr and "--fresh" in refused.stderr
    _data_kept(own_cluster, ns)

    fresh = _cli("up", "--state-dir", state, "--nodes", "1", "--fresh")
    assert fresh.returncode == 0, fresh.stderr
    assert "--fresh: removing" in fresh.stderr
    gone = own_cluster.kubectl("get", "namespace", ns, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
