"""Tier 2 with containerd 2 (CDI): the container sees exactly the devices of its claim; health flips taint.

* a pod with a claim for 2 devices prints ``KUBEACCEL_DEVICES_EXAMPLE_COM_SIM`` and its ``/dev/sim-*``
  nodes: exactly the indices and nodes of the devices the scheduler allocated (from the claim status);
* a health flip taints the device in our ResourceSlice, a new claim avoids it, and after recovery
  the taint is gone.
"""

from __future__ import annotations

import json

import pytest
from dra.node import DRIVER, DraNode, claim_pod, pod_phase
from fixtures.cluster import RealNode, wait_for

pytestmark = [pytest.mark.real_node, pytest.mark.cluster, pytest.mark.slow]


def _allocated(cluster, ns: str) -> list[str]:
    items = json.loads(cluster.kubectl("get", "resourceclaims", "-n", ns, "-o", "json").stdout)["items"]
    results = items[0]["status"]["allocation"]["devices"]["results"]
    return sorted(r["device"] for r in results)


def test_container_sees_exactly_its_claimed_devices(real_node: RealNode, real_dra: DraNode) -> None:
    cluster = real_node.cluster
    ns = cluster.create_namespace("dracdi")
    # the claim made from the template goes when the pod ends: keep the pod running while we look
    claim_pod(cluster, ns, real_node.node_name, "see",
              'echo "VAR=$KUBEACCEL_DEVICES_EXAMPLE_COM_SIM"; echo "DEVS=$(ls /dev | grep "^sim-" | sort | '
              'tr "\\n" " ")"; sleep 300')
    wait_for("the pod to run", lambda: pod_phase(cluster, ns, "see") == "Running", timeout=180)
    devices = _allocated(cluster, ns)
    wait_for("the pod's output", lambda: "DEVS=" in cluster.kubectl("logs", "see", "-n", ns, check=False).stdout,
             timeout=60)
    logs = cluster.kubectl("logs", "see", "-n", ns).stdout
    indices = ",".join(d.removeprefix("sim-") for d in devices)
    assert f"VAR={indices}" in logs
    devs = next(line for line in logs.splitlines() if line.startswith("DEVS="))
    assert devs.removeprefix("DEVS=").split() == devices
    cluster.kubectl("delete", "pod", "see", "-n", ns, "--wait=false")


def test_unhealthy_device_is_avoided_then_recovers(real_node: RealNode, real_dra: DraNode) -> None:
    from kubeaccel.kube import dra as kdra

    cluster = real_node.cluster
    kube = kdra.connect(cluster.kubeconfig)

    def tainted() -> list[str]:
        slices = kdra.list_slices(kube, driver=DRIVER, node=real_node.node_name)
        return sorted(d["name"] for s in slices for d in s["spec"].get("devices") or [] if d.get("taints"))

    ns = cluster.create_namespace("drahealth")
    real_dra.set_states({"sim-0": "Unhealthy", "sim-1": "Unhealthy", "sim-2": "Unhealthy"})
    try:
        wait_for("the taints", lambda: tainted() == ["sim-0", "sim-1", "sim-2"], timeout=30)
        claim_pod(cluster, ns, real_node.node_name, "one", "sleep 300", count=1)
        wait_for("the pod to run", lambda: pod_phase(cluster, ns, "one") == "Running", timeout=180)
        assert _allocated(cluster, ns) == ["sim-3"]
        cluster.kubectl("delete", "pod", "one", "-n", ns, "--wait=false")
    finally:
        real_dra.set_states({})
    wait_for("the recovery", lambda: tainted() == [], timeout=30)
    kube.close()
