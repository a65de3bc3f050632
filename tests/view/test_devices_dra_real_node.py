"""``kubeaccel devices`` and ``spark status --devices`` for DRA on the real node (tier 2): our DRA driver
registered with the real kubelet, a pod whose claim the scheduler allocates and the kubelet prepares;
the addresses the views show are exactly the ``KUBEACCEL_DEVICES_*`` the container got through CDI,
which is what the discovery script hands Spark.
"""

from __future__ import annotations

import json

import pytest
from dra import conftest as dra_fixtures
from dra.node import SIM, DraNode, claim_pod, pod_phase
from fixtures.cluster import RealNode, wait_for
from view.cluster import kubeaccel

pytestmark = [pytest.mark.real_node, pytest.mark.cluster, pytest.mark.slow]
real_dra = dra_fixtures.real_dra  # the DRA tests' fixture: our driver on the real node's kubelet


def test_dra_devices_and_app_devices_match_what_the_container_got(real_node: RealNode, real_dra: DraNode) -> None:
    cluster = real_node.cluster
    ns = cluster.create_namespace("viewdra")
    claim_pod(cluster, ns, real_node.node_name, "exec-1", 'echo "VAR=$KUBEACCEL_DEVICES_EXAMPLE_COM_SIM"; sleep 300')
    wait_for("the pod to run", lambda: pod_phase(cluster, ns, "exec-1") == "Running", timeout=180)
    wait_for("the pod's output", lambda: "VAR=" in cluster.kubectl("logs", "exec-1", "-n", ns, check=False).stdout,
             timeout=60)
    log = cluster.kubectl("logs", "exec-1", "-n", ns).stdout
    given = next(x.removeprefix("VAR=") for x in log.splitlines() if x.startswith("VAR=")).split(",")
    assert len(given) == 2

    code, out, err = kubeaccel("devices", "--kubeconfig", str(cluster.kubeconfig), "--node", real_node.node_name,
                               "--resource", SIM, "-o", "json")
    assert code == 0, err
    rows = json.loads(out)["devices"]
    assert {r["mode"] for r in rows} == {"dra"} and len(rows) == 4
    held = [r for r in rows if r["pod"] == "exec-1"]
    assert sorted(r["index"] for r in held) == sorted(given)
    assert {r["namespace"] for r in held} == {ns}

    # the same pod as a Spark executor of an app whose driver sits on a kwok node
    cluster.kubectl("label", "pod", "exec-1", "-n", ns, "spark-app-selector=spark-dra", "spark-role=executor")
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "driver", "labels": {"spark-app-selector": "spark-dra", "spark-role": "driver"}},
        "spec": {"nodeName": cluster.nodes[0], "containers": [{"name": "spark-kubernetes-driver", "image": "x"}]}}),
        ns)
    code, out, err = kubeaccel("spark", "status", f"{ns}:driver", "--devices", "--kubeconfig",
                               str(cluster.kubeconfig), "-o", "json")
    assert code in (0, 7), err  # 7: the driver's kwok node has no plugin, which is said
    (pod,) = json.loads(out)["devices"][f"{ns}:driver"]
    assert (pod["pod"], pod["mode"], pod["resource"]) == ("exec-1", "dra", SIM)
    assert pod["addresses"] == given
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
