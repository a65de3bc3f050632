"""``kubeaccel devices`` against the chart on the real node (tier 2): the holder the table shows is the
container the kubelet gave the device, and the index is the one the plugin's Allocate handed it
(``KUBEACCEL_DEVICES_*``). This is what the chart's PodResources mount (``podResourcesDir``) is for:
before it, ``kubeaccel_device_allocated`` was always empty under Helm.
"""

from __future__ import annotations

import json
from pathlib import Path

import deploy.test_helm_real_node as chart_on_node
import pytest
from deploy.chart import CHART
from deploy.test_helm_real_node import NAMESPACE, RELEASE, RESOURCE, helm_on, values, wait_for_plugin
from fixtures.cluster import LocalCluster, RealNode, wait_for
from view.cluster import kubeaccel

from kubeaccel.cluster.images import BUSYBOX_IMAGE
from kubeaccel.cluster.nodepaths import node_paths

pytestmark = [pytest.mark.real_node, pytest.mark.cluster, pytest.mark.slow]
# the chart tests' fixtures: the plugin image imported into the node, simulated /dev nodes, uninstall after
plugin_image = chart_on_node.plugin_image
sim_dev = chart_on_node.sim_dev
release = chart_on_node.release


def test_the_table_names_the_container_holding_each_device(
    real_node: RealNode, plugin_image: str, sim_dev: Path, release: None
) -> None:
    cluster, node = real_node.cluster, real_node.node_name
    # the real node's kubelet runs with its own --root-dir: its PodResources socket is there
    pod_resources = node_paths(cluster.state_dir).kubelet_root / "pod-resources"
    helm_on(real_node, "install", RELEASE, str(CHART), "-n", NAMESPACE,
            vals={**values(plugin_image, node, count=2), "podResourcesDir": str(pod_resources)})
    wait_for_plugin(cluster, node, "2")
    ns = cluster.create_namespace("view")
    cluster.apply(json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "holder", "labels": {"spark-app-selector": "spark-v"}},
        "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                 "command": ["sh", "-c", "echo DEVICES=$KUBEACCEL_DEVICES_NEC_COM_VE; sleep 600"],
                                 "resources": {"limits": {RESOURCE: "1"}}}]},
    }), ns)

    def given() -> str:
        log = cluster.kubectl("logs", "holder", "-n", ns, check=False).stdout
        return next((x.removeprefix("DEVICES=") for x in log.splitlines() if x.startswith("DEVICES=")), "")

    wait_for("the holder's device env", lambda: given() != "", timeout=120)

    def rows() -> list[dict[str, str]]:
        code, out, err = kubeaccel("devices", "--kubeconfig", str(cluster.kubeconfig), "--node", node,
                                   "--resource", RESOURCE, "-o", "json")
        assert code == 0, err + out
        return json.loads(out)["devices"]  # type: ignore[no-any-return]

    wait_for("the holder in the table", lambda: any(r["pod"] == "holder" for r in rows()), timeout=30)
    table = rows()
    assert len(table) == 2 and {r["health"] for r in table} == {"Healthy"}
    (held,) = [r for r in table if r["pod"]]
    assert (held["namespace"], held["pod"], held["container"], held["app"], held["mode"]) == (
        ns, "holder", "main", "spark-v", "plugin")
    assert held["index"] == given()
    # gone before the next test: the kubelet counts a terminating pod's device as held, and a pod bound by
    # nodeName that finds no free device is rejected for good (UnexpectedAdmissionError), not queued
    cluster.kubectl("delete", "namespace", ns, "--wait=true", "--timeout=120s")


def _wait_until_no_pod_holds(cluster: LocalCluster, node: str) -> None:
    """Until no live pod on ``node`` (another test's, still terminating) holds the resource. A pod that ended
    (Succeeded, or Failed as a pod the kubelet rejected) holds nothing: the kubelet frees its devices."""

    def holders() -> list[str]:
        pods = json.loads(cluster.kubectl("get", "pods", "-A", "--field-selector", f"spec.nodeName={node}",
                                          "-o", "json").stdout)["items"]  # fmt: skip
        return [
            f"{p['metadata']['namespace']}/{p['metadata']['name']} ({p['status'].get('phase')})"
            for p in pods
            if p["status"].get("phase") not in ("Succeeded", "Failed")
            and any(RESOURCE in ((c.get("resources") or {}).get("limits") or {}) for c in p["spec"]["containers"])
        ]

    try:
        wait_for(f"no pod on {node} holding {RESOURCE}", lambda: not holders(), timeout=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}: {', '.join(holders())}") from None


_DISCOVER_THEN_WAIT = (
    "import runpy, sys, time\n"
    "sys.argv = ['kubeaccel-discover', 'nec.com/ve']\n"
    "try:\n    runpy.run_module('kubeaccel.spark.discover', run_name='__main__')\n"
    "except SystemExit:\n    pass\n"
    "sys.stdout.flush()\ntime.sleep(600)\n"
)


def test_spark_status_devices_matches_what_discovery_handed_each_executor(
    real_node: RealNode, plugin_image: str, sim_dev: Path, release: None
) -> None:
    """Executors on the real node run the discovery script Spark runs (``kubeaccel-discover``, here from the
    plugin image, which carries the same package); `spark status --devices` must list exactly the addresses
    each one printed. The driver sits on a kwok node: only executors hold devices here."""
    cluster, node = real_node.cluster, real_node.node_name
    pod_resources = node_paths(cluster.state_dir).kubelet_root / "pod-resources"
    helm_on(real_node, "install", RELEASE, str(CHART), "-n", NAMESPACE,
            vals={**values(plugin_image, node, count=3), "podResourcesDir": str(pod_resources)})
    wait_for_plugin(cluster, node, "3")
    _wait_until_no_pod_holds(cluster, node)
    ns = cluster.create_namespace("view")
    labels = {"spark-app-selector": "spark-disc", "spark-app-name": "disc"}
    cluster.apply(json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "disc-driver", "labels": {**labels,
                                                                                           "spark-role": "driver"}},
        "spec": {"nodeName": cluster.nodes[0], "containers": [{"name": "spark-kubernetes-driver", "image": "x"}]},
    }), ns)
    for name, count in (("disc-exec-1", 2), ("disc-exec-2", 1)):
        cluster.apply(json.dumps({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "labels": {**labels, "spark-role": "executor"}},
            "spec": {"nodeName": node, "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "spark-kubernetes-executor", "image": plugin_image,
                                     "imagePullPolicy": "Never",
                                     "command": ["/usr/bin/python3", "-c", _DISCOVER_THEN_WAIT],
                                     "resources": {"limits": {RESOURCE: str(count)}}}]},
        }), ns)

    def discovered(pod: str) -> list[str]:
        reason = cluster.kubectl("get", "pod", pod, "-n", ns, "-o", "jsonpath={.status.reason}: {.status.message}",
                                 check=False).stdout  # fmt: skip
        assert not reason.startswith("UnexpectedAdmissionError"), f"{pod} rejected by the kubelet: {reason}"
        log = cluster.kubectl("logs", pod, "-n", ns, check=False).stdout
        for line in log.splitlines():
            if line.startswith("{"):
                answer = json.loads(line)
                return [str(a) for a in answer["addresses"]]
        return []

    # two pods started on the real node: seconds when quiet, minutes with other real-node work on 2 busy cores
    wait_for("both executors' discovery output", lambda: all(discovered(p) for p in ("disc-exec-1", "disc-exec-2")),
             timeout=300)
    handed = {p: discovered(p) for p in ("disc-exec-1", "disc-exec-2")}
    assert sorted(len(a) for a in handed.values()) == [1, 2]
    sid = f"{ns}:disc-driver"

    def shown() -> dict[str, list[str]]:
        code, out, err = kubeaccel("spark", "status", sid, "--devices", "--kubeconfig", str(cluster.kubeconfig),
                                   "-o", "json")
        report = json.loads(out)
        # the driver's kwok node has no plugin: where the view counts it as a source that did not answer, that
        # is said (exit 7), as it could hide the driver's devices; the executors' devices are the point here
        unavailable = [p["node"] for p in report["devicesUnavailable"]]
        assert (code, unavailable) in ((7, [cluster.nodes[0]]), (0, [])), err + out
        return {p["pod"]: p["addresses"] for p in report["devices"].get(sid, [])}

    wait_for("both executors' devices in spark status", lambda: len(shown()) == 2, timeout=30)
    assert shown() == handed
    cluster.kubectl("delete", "namespace", ns, "--wait=false")
