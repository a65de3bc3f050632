"""Device capacity and attributes through a real API server and scheduler (Kubernetes 1.37, kwok nodes).

Two kwok nodes, each with our real DRA daemon publishing 2 simulated devices: 40Gi of memory on the
first node, 80Gi on the second (the simulated backend's ``memory`` key). Then what Spark on DRA
builds from confs (``spark.kubeaccel.dra.executor.<name>.minMemory`` and ``.selector``):

* the API server keeps the capacity and the standard ``resource.kubernetes.io/numaNode`` as published;
* it compiles the capacity CEL, and the scheduler places an executor-shaped pod (the claim template
  and pod fragment of ``kubeaccel.spark.dra``, no node selector) on the 80Gi node only; a pod
  asking for more than any device has stays unschedulable;
* a selector the API server cannot compile is refused, and the error names the conf.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from dra.node import DRIVER, DraNode, make_node
from fixtures.cluster import LocalCluster, wait_for

from kubeaccel.dra.daemon import KubeAccess
from kubeaccel.errors import InvalidError
from kubeaccel.kube import dra as kdra
from kubeaccel.spark import dra as spark_dra

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

MEMORY = ("40Gi", "80Gi")  # per kwok node, in order


def _devices(cluster: LocalCluster, node: str) -> list[dict[str, Any]]:
    kube = kdra.connect(cluster.kubeconfig)
    try:
        return [d for s in kdra.list_slices(kube, driver=DRIVER, node=node) for d in s["spec"].get("devices") or []]
    finally:
        kube.close()


@pytest.fixture
def two_nodes(cluster: LocalCluster) -> Iterator[list[DraNode]]:
    started: list[DraNode] = []
    try:
        for name, memory in zip(cluster.nodes[:2], MEMORY, strict=True):
            node = make_node(publish=True, access=KubeAccess(cluster.kubeconfig), node=name, count=2,
                             device_classes=True, withdraw=True)
            config = yaml.safe_load(node.config_path.read_text())
            config["resources"][0]["memory"] = memory
            node.config_path.write_text(yaml.safe_dump(config))
            started.append(node.start())
        for name in cluster.nodes[:2]:
            wait_for(f"{name}'s slice", lambda n=name: len(_devices(cluster, n)) == 2, timeout=30)
        yield started
    finally:
        for node in started:
            node.stop()
            shutil.rmtree(node.base, ignore_errors=True)


def _executor_pod(name: str, app: str) -> dict[str, Any]:
    """An executor pod as submit builds it, reduced to what scheduling reads: the claim, no node selector."""
    fragment = spark_dra.pod_fragment(app, "executor")["spec"]
    container = {"name": "spark-kubernetes-executor", "image": "busybox", **fragment["containers"][0]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name},
            "spec": {"resourceClaims": fragment["resourceClaims"], "containers": [container],
                     "tolerations": [{"operator": "Exists"}]}}


def _pod(cluster: LocalCluster, ns: str, name: str) -> dict[str, Any]:
    return json.loads(cluster.kubectl("get", "pod", name, "-n", ns, "-o", "json").stdout)  # type: ignore[no-any-return]


def _conf(**dra_keys: str) -> dict[str, str]:
    return {"spark.executor.resource.sim.amount": "1", "spark.executor.resource.sim.vendor": "example.com",
            spark_dra.ENABLED: "true", **{f"spark.kubeaccel.dra.executor.sim.{k}": v for k, v in dra_keys.items()}}


def test_memory_selector_places_the_executor_on_a_device_with_enough(cluster: LocalCluster,
                                                                     two_nodes: list[DraNode]) -> None:
    small, large = cluster.nodes[:2]
    for node, memory in ((small, "40Gi"), (large, "80Gi")):
        for device in _devices(cluster, node):
            assert device["capacity"] == {"memory": {"value": memory}}, device
            assert device["attributes"]["resource.kubernetes.io/numaNode"]["int"] in (0, 1)
    ns = cluster.create_namespace("dramem")
    kube = kdra.connect(cluster.kubeconfig)
    try:
        for app, keys in (("big", {"minMemory": "64Gi"}),
                          ("huge", {"selector": f'device.capacity["{DRIVER}"].memory'
                                                '.compareTo(quantity("100Gi")) >= 0'})):
            template = spark_dra.claim_template(app, ns, "executor", spark_dra.requests(_conf(**keys), "executor"))
            kube.create(template, ns)  # the API server compiled the CEL
            cluster.apply(json.dumps(_executor_pod(f"{app}-exec-1", app)), namespace=ns)
        wait_for("the executor to be scheduled", lambda: _pod(cluster, ns, "big-exec-1")["spec"].get("nodeName"),
                 timeout=60)
        assert _pod(cluster, ns, "big-exec-1")["spec"]["nodeName"] == large
        claims = json.loads(cluster.kubectl("get", "resourceclaims", "-n", ns, "-o", "json").stdout)["items"]
        (big,) = [c for c in claims if c["metadata"]["name"].startswith("big-exec-1")]
        (result,) = big["status"]["allocation"]["devices"]["results"]
        assert result["pool"].startswith(f"{large}/") and result["driver"] == DRIVER

        def unschedulable() -> bool:
            conditions = _pod(cluster, ns, "huge-exec-1")["status"].get("conditions") or []
            return any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conditions)

        wait_for("the 100Gi executor to be found unschedulable", unschedulable, timeout=60)
        assert not _pod(cluster, ns, "huge-exec-1")["spec"].get("nodeName")

        # Comparing a quantity with an int does not type-check: refused, and reported by its conf.
        bad = spark_dra.requests(_conf(selector=f'device.capacity["{DRIVER}"].memory >= 80'), "executor")
        template = spark_dra.claim_template("bad", ns, "executor", bad)
        with pytest.raises(InvalidError) as refused:
            kube.create(template, ns)
        named = spark_dra.invalid_selector(template, refused.value)
        assert named is not None, refused.value.message
        assert named.message.startswith("spark.kubeaccel.dra.executor.sim.selector: "), named.message
    finally:
        kube.close()
        cluster.kubectl("delete", "pods", "--all", "-n", ns, "--grace-period=0", "--force", check=False)
        cluster.kubectl("delete", "resourceclaims", "--all", "-n", ns, "--wait=false", check=False)


# The selectors docs/dra.md and docs/backends.md show, over the attribute types we publish.
DOC_SELECTORS = [
    f'device.capacity["{DRIVER}"].memory.compareTo(quantity("80Gi")) >= 0',
    f'device.attributes["{DRIVER}"].cudaComputeCapability.isGreaterThan(semver("8.0.0"))',
    f'device.attributes["{DRIVER}"].driverVersion.compareTo(semver("550.0.0")) >= 0',
    f'device.attributes["{DRIVER}"].architecture == "Hopper"',
    'device.attributes["resource.kubernetes.io"].numaNode == 1',
    'device.attributes["resource.kubernetes.io"].pcieRoot == "pci0000:3a"',
]


def test_documented_selectors_compile(cluster: LocalCluster) -> None:
    ns = cluster.create_namespace("dracel")
    kube = kdra.connect(cluster.kubeconfig)
    try:
        for i, expression in enumerate(DOC_SELECTORS):
            requests = spark_dra.requests(_conf(selector=expression), "executor")
            kube.create(spark_dra.claim_template(f"doc-{i}", ns, "executor", requests), ns)
        # The model shorthand too (a VE's model is an int attribute, a simulated one's a string).
        conf = {**_conf(selector="true"), "spark.kubeaccel.dra.executor.sim.model": "3"}
        kube.create(spark_dra.claim_template("doc-model", ns, "executor", spark_dra.requests(conf, "executor")), ns)
    finally:
        kube.close()
