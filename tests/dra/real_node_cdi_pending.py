"""Tier 2 with a CDI runtime: the container sees exactly the devices of its claim; health flips taint.

PENDING, not collected (the file name does not start with ``test_``): it needs the real node on
containerd 2 (CDI on by default), which the platform work lands on main. After ``git merge main``
with containerd 2, rename this file to ``test_real_node_cdi.py``; it must then pass in CI.

* a pod with a claim for 2 devices prints ``KUBEACCEL_DEVICES_EXAMPLE_COM_SIM`` and its ``/dev/sim-*``
  nodes: exactly the indices and nodes of the devices the scheduler allocated (from the claim status);
* a health flip taints the device in our ResourceSlice, a new claim avoids it, and after recovery
  the taint is gone.
"""

from __future__ import annotations

import json

import pytest
from dra.node import DraNode
from dra.test_real_node import _phase, claim_pod
from fixtures.cluster import RealNode, wait_for

pytestmark = [pytest.mark.real_node, pytest.mark.cluster, pytest.mark.slow]


def _allocated(cluster, ns: str) -> list[str]:
    items = json.loads(cluster.kubectl("get", "resourceclaims", "-n", ns, "-o", "json").stdout)["items"]
    results = items[0]["status"]["allocation"]["devices"]["results"]
    return sorted(r["device"] for r in results)


def test_container_sees_exactly_its_claimed_devices(real_node: RealNode, real_dra: DraNode) -> None:
    cluster = real_node.cluster
    ns = cluster.create_namespace("dracdi")
    claim_pod(cluster, ns, real_node.node_name, "see",
              'echo "VAR=$KUBEACCEL_DEVICES_EXAMPLE_COM_SIM"; ls /dev | grep "^sim-" | sort | tr "\\n" " "')
    wait_for("the pod to finish", lambda: _phase(cluster, ns, "see") in ("Succeeded", "Failed"), timeout=180)
    assert _phase(cluster, ns, "see") == "Succeeded"
    devices = _allocated(cluster, ns)
    logs = cluster.kubectl("logs", "see", "-n", ns).stdout
    indices = ",".join(d.removeprefix("sim-") for d in devices)
    assert f"VAR={indices}" in logs
    assert logs.strip().splitlines()[-1].split() == devices


def test_unhealthy_device_is_avoided_then_recovers(real_node: RealNode, real_dra: DraNode) -> None:
    cluster = real_node.cluster
    ns = cluster.create_namespace("drahealth")
    real_dra.set_states({"sim-0": "Unhealthy", "sim-1": "Unhealthy", "sim-2": "Unhealthy"})
    try:
        wait_for("the taints", lambda: real_dra.daemon.publisher is not None
                 and real_dra.daemon.publisher.published.is_set()
                 and real_dra.daemon.publisher.published_version == real_dra.daemon.inventory.version, timeout=30)
        claim_pod(cluster, ns, real_node.node_name, "one", "true", count=1)
        wait_for("the pod to finish", lambda: _phase(cluster, ns, "one") in ("Succeeded", "Failed"), timeout=180)
        assert _allocated(cluster, ns) == ["sim-3"]
    finally:
        real_dra.set_states({})
