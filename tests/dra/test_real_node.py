"""Tier 2: our DRA driver with the real kubelet (1.37) of the session's real node.

The kubelet's plugin watcher finds our registration socket and registers the driver; a pod with a
claim on the real node is scheduled onto a device we publish and the kubelet itself calls
NodePrepareResources (the claim lands in our checkpoint, its CDI spec in the node's CDI dir) and, once
the pod is gone, NodeUnprepareResources; a kubelet restart re-registers the driver; a daemon
restart keeps the prepared claim, which the kubelet then unprepares through the new process.
(That the container sees exactly the claimed devices through CDI: test_real_node_cdi.py.)
"""

from __future__ import annotations

import json
import time

import pytest
from dra.node import DraNode, claim_pod, pod_phase
from fixtures.cluster import LocalCluster, RealNode, wait_for

from kubeaccel.cluster import process
from kubeaccel.cluster.layout import Layout

pytestmark = [pytest.mark.real_node, pytest.mark.cluster, pytest.mark.slow]


def _registered(node: DraNode) -> bool:
    return node.daemon.registration is not None and node.daemon.registration.registered.is_set()


def _claim_uid(cluster: LocalCluster, ns: str) -> str:
    items = json.loads(cluster.kubectl("get", "resourceclaims", "-n", ns, "-o", "json").stdout)["items"]
    return str(items[0]["metadata"]["uid"]) if items else ""


def test_the_real_kubelet_registers_the_driver(real_dra: DraNode) -> None:
    wait_for("the kubelet's NotifyRegistrationStatus", lambda: _registered(real_dra), timeout=60)
    assert real_dra.daemon.registration.info_calls >= 1
    assert real_dra.daemon.registration.error == ""


def test_kubelet_prepares_and_unprepares_a_pods_claim(real_node: RealNode, real_dra: DraNode) -> None:
    cluster = real_node.cluster
    wait_for("registration", lambda: _registered(real_dra), timeout=60)
    ns = cluster.create_namespace("drareal")
    claim_pod(cluster, ns, real_node.node_name, "p", "sleep 3")
    wait_for("the pod to run", lambda: pod_phase(cluster, ns, "p") in ("Running", "Succeeded", "Failed"), timeout=120)
    uid = _claim_uid(cluster, ns)
    checkpoint = real_dra.daemon.driver.checkpoint.claims
    assert uid in checkpoint  # the kubelet called NodePrepareResources
    assert len(checkpoint[uid].devices) == 2
    assert (real_dra.options.cdi_dir / f"kubeaccel-dra-{uid}.json").exists()
    wait_for("the pod to finish", lambda: pod_phase(cluster, ns, "p") in ("Succeeded", "Failed"), timeout=120)
    cluster.kubectl("delete", "pod", "p", "-n", ns, "--wait=true", "--timeout=60s")
    wait_for("NodeUnprepareResources", lambda: uid not in real_dra.daemon.driver.checkpoint.claims, timeout=60)
    assert not (real_dra.options.cdi_dir / f"kubeaccel-dra-{uid}.json").exists()


def test_kubelet_restart_re_registers(real_node: RealNode, real_dra: DraNode) -> None:
    wait_for("registration", lambda: _registered(real_dra), timeout=60)
    layout = Layout(real_node.cluster.state_dir)
    record = process.read_record(layout, "kubelet")
    assert record is not None and record.alive()
    calls = real_dra.daemon.registration.info_calls
    process.stop_all(layout, names=["kubelet"])
    real_dra.daemon.registration.registered.clear()
    process.start(layout, "kubelet", record.argv)
    wait_for("re-registration", lambda: _registered(real_dra), timeout=90)
    assert real_dra.daemon.registration.info_calls > calls


def test_daemon_restart_keeps_a_prepared_claim(real_node: RealNode, real_dra: DraNode) -> None:
    cluster = real_node.cluster
    wait_for("registration", lambda: _registered(real_dra), timeout=60)
    ns = cluster.create_namespace("drarestart")
    claim_pod(cluster, ns, real_node.node_name, "long", "sleep 600", count=1)
    wait_for("the pod to run", lambda: pod_phase(cluster, ns, "long") == "Running", timeout=120)
    uid = _claim_uid(cluster, ns)
    before = real_dra.daemon.driver.checkpoint.claims[uid]
    real_dra.restart()
    assert real_dra.daemon.driver.checkpoint.claims[uid] == before  # restored, not re-prepared
    wait_for("registration after the restart", lambda: _registered(real_dra), timeout=60)
    cluster.kubectl("delete", "pod", "long", "-n", ns, "--wait=true", "--timeout=60s")
    deadline = time.monotonic() + 60
    while uid in real_dra.daemon.driver.checkpoint.claims and time.monotonic() < deadline:
        time.sleep(0.2)
    assert uid not in real_dra.daemon.driver.checkpoint.claims  # unprepared through the new process
