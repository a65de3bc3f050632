"""Queues with Kueue 0.17 (built from its Go module, run as a local process: fixtures/kueue.py) on the real
control plane with kwok nodes.

A ClusterQueue with a quota of 8 ``<vendor>/ve`` (a resource only this test uses), two apps of
1 driver + 4 executors, 1 device each (5 each: one fits, two do not), submitted with ``--queue``:

* one app is admitted whole: its driver runs, the executors the stand-in driver creates from its
  template are let through and all placed; `spark status` says admitted;
* the other waits in the queue holding nothing: its driver is gated, no pod placed, and `spark status`
  says it is queued, with Kueue's message;
* when the first app ends, the second is admitted and runs whole.

The same with DRA (``spark.kubeaccel.dra.enabled=true``): the session's Kueue maps the DeviceClass
``DRA_DEVICE_CLASS`` onto the logical resource ``DRA_RESOURCE`` (its ``resources.deviceClassMappings``,
feature gate DynamicResourceAllocation), a ClusterQueue has a quota of 4 of them, and two apps of
1 driver + 2 executors claiming 1 device each through their ResourceClaimTemplates (3 each) are queued:
one is admitted whole, its Workload counting 3 devices of the class; the other waits holding nothing
(no pod placed, no claim allocated).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fixtures.cluster import LocalCluster, wait_for
from fixtures.kueue import DRA_DEVICE_CLASS, DRA_RESOURCE, kueue  # noqa: F401 - the fixture
from fixtures.spark import ON_KWOK
from fixtures.standin import executor_pod, template_text

from kubeaccel.cluster import kwok
from kubeaccel.kube.client import Kube
from kubeaccel.kube.rest import CONFIGMAPS, PODS
from kubeaccel.spark import manage
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.submit import submit

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
EXECUTORS = 4


@pytest.fixture
def queue(cluster: LocalCluster, kueue: Any, spark_namespace: str) -> Iterator[tuple[str, str]]:  # noqa: F811
    """A node with 10 devices, a ClusterQueue with a quota of 8 of them, a LocalQueue in the namespace."""
    tag = uuid.uuid4().hex[:6]
    vendor = f"t{tag}.example.com"
    device = f"{vendor}/ve"
    node = f"kueue-{tag}"
    cluster.apply(json.dumps(kwok.node_manifest(node, {"cpu": "64", "memory": "256Gi", "pods": "110", device: "10"})))
    objects = [
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": f"flavor-{tag}"}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": f"cq-{tag}"},
         "spec": {"namespaceSelector": {}, "resourceGroups": [{
             "coveredResources": ["cpu", "memory", device],
             "flavors": [{"name": f"flavor-{tag}", "resources": [
                 {"name": "cpu", "nominalQuota": "64"}, {"name": "memory", "nominalQuota": "256Gi"},
                 {"name": device, "nominalQuota": "8"}]}]}]}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
         "metadata": {"name": "batch", "namespace": spark_namespace}, "spec": {"clusterQueue": f"cq-{tag}"}},
    ]
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    try:
        yield vendor, "batch"
    finally:
        cluster.kubectl("delete", "clusterqueue", f"cq-{tag}", "--wait=false", check=False)
        cluster.kubectl("delete", "resourceflavor", f"flavor-{tag}", "--wait=false", check=False)
        cluster.kubectl("delete", "node", node, "--wait=false", check=False)


def _request(cluster: LocalCluster, namespace: str, name: str, vendor: str, queue: str) -> SubmitRequest:
    conf = {"spark.kubernetes.namespace": namespace, "spark.kubernetes.container.image": "spark:test",
            "spark.executor.instances": str(EXECUTORS), "spark.kubeaccel.queue": queue, **ON_KWOK}
    for role in ("driver", "executor"):
        conf |= {f"spark.{role}.resource.ve.amount": "1", f"spark.{role}.resource.ve.vendor": vendor,
                 f"spark.{role}.resource.ve.discoveryScript": "/opt/kubeaccel/discover"}
    return SubmitRequest("local:///opt/app.py", master=f"k8s://{cluster.server}", name=name, conf=conf)


def _app_pods(kube: Kube, namespace: str, driver: dict[str, Any]) -> list[dict[str, Any]]:
    app_id = driver["metadata"]["labels"]["spark-app-selector"]
    return kube.list_raw(PODS, namespace, labels={"spark-app-selector": app_id})


def _placed(pods: list[dict[str, Any]]) -> int:
    return sum(1 for p in pods if (p.get("spec") or {}).get("nodeName"))


def _start_executors(kube: Kube, namespace: str, driver: dict[str, Any], vendor: str) -> None:
    text = template_text(kube.list_raw(CONFIGMAPS, namespace), driver["metadata"]["name"])
    for index in range(1, EXECUTORS + 1):
        kube.create(executor_pod(text, driver, index, {f"{vendor}/ve": "1"}), namespace=namespace)


def test_queue_admits_one_app_whole_and_the_other_waits_holding_nothing(
    cluster: LocalCluster, kube: Kube, spark_namespace: str, queue: tuple[str, str]
) -> None:
    vendor, name = queue
    ns = spark_namespace
    sids = [submit(_request(cluster, ns, app, vendor, name), kube=kube, check_quota=False) for app in ("one", "two")]

    def driver(i: int) -> dict[str, Any]:
        return kube.get_raw(PODS, sids[i].pod, ns)

    wait_for("one driver admitted and running", lambda: sorted(
        (driver(i).get("status") or {}).get("phase", "") for i in range(2)) == ["Pending", "Running"], timeout=90)
    running = next(i for i in range(2) if driver(i)["status"]["phase"] == "Running")
    waiting = 1 - running
    assert driver(waiting)["spec"].get("schedulingGates"), "the queued driver is gated by Kueue"

    _start_executors(kube, ns, driver(running), vendor)
    wait_for("the admitted app placed whole", lambda: _placed(_app_pods(kube, ns, driver(running))) == 1 + EXECUTORS,
             timeout=90)
    assert _placed(_app_pods(kube, ns, driver(waiting))) == 0  # holds no device while it waits

    (queued,) = manage.status(kube, f"{ns}:{sids[waiting].pod}")
    assert "queued" in queued.reason, queued.reason

    # the first app ends: the second is admitted and runs whole
    for pod in _app_pods(kube, ns, driver(running)):
        kube.delete(PODS, pod["metadata"]["name"], ns, grace_period=0, missing_ok=True)
    wait_for("the queued app admitted", lambda: (driver(waiting).get("status") or {}).get("phase") == "Running",
             timeout=120)
    _start_executors(kube, ns, driver(waiting), vendor)
    wait_for("the second app placed whole", lambda: _placed(_app_pods(kube, ns, driver(waiting))) == 1 + EXECUTORS,
             timeout=90)


# ---- DRA: a quota counted in devices of a DeviceClass ------------------------------------------------------

DRA_VENDOR = DRA_RESOURCE.split("/")[0]  # so the app's default DeviceClass, ve.<vendor>, is DRA_DEVICE_CLASS
DRA_EXECUTORS = 2


@pytest.fixture
def dra_queue(cluster: LocalCluster, kueue: Any, spark_namespace: str) -> Iterator[str]:  # noqa: F811
    """A node with 6 DRA devices of DRA_DEVICE_CLASS, a ClusterQueue with a quota of 4 of them, a LocalQueue."""
    tag = uuid.uuid4().hex[:6]
    node = f"kueue-dra-{tag}"
    cluster.apply(json.dumps(kwok.node_manifest(node, {"cpu": "64", "memory": "256Gi", "pods": "110"})))
    objects = [
        {"apiVersion": "resource.k8s.io/v1", "kind": "DeviceClass", "metadata": {"name": DRA_DEVICE_CLASS},
         "spec": {"selectors": [{"cel": {"expression": f'device.driver == "{DRA_VENDOR}"'}}]}},
        {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice", "metadata": {"name": f"{node}-ve"},
         "spec": {"driver": DRA_VENDOR, "nodeName": node, "pool": {"name": node, "generation": 1,
                                                                   "resourceSliceCount": 1},
                  "devices": [{"name": f"ve{i}"} for i in range(6)]}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": f"flavor-{tag}"}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": f"cq-{tag}"},
         "spec": {"namespaceSelector": {}, "resourceGroups": [{
             "coveredResources": ["cpu", "memory", DRA_RESOURCE],
             "flavors": [{"name": f"flavor-{tag}", "resources": [
                 {"name": "cpu", "nominalQuota": "64"}, {"name": "memory", "nominalQuota": "256Gi"},
                 {"name": DRA_RESOURCE, "nominalQuota": "4"}]}]}]}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
         "metadata": {"name": "dra", "namespace": spark_namespace}, "spec": {"clusterQueue": f"cq-{tag}"}},
    ]
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))
    try:
        yield "dra"
    finally:
        cluster.kubectl("delete", "clusterqueue", f"cq-{tag}", "--wait=false", check=False)
        cluster.kubectl("delete", "resourceflavor", f"flavor-{tag}", "--wait=false", check=False)
        cluster.kubectl("delete", "resourceslice", f"{node}-ve", "--wait=false", check=False)
        cluster.kubectl("delete", "deviceclass", DRA_DEVICE_CLASS, "--wait=false", check=False)
        cluster.kubectl("delete", "node", node, "--wait=false", check=False)


def _dra_request(cluster: LocalCluster, namespace: str, name: str, queue: str) -> SubmitRequest:
    conf = {"spark.kubernetes.namespace": namespace, "spark.kubernetes.container.image": "spark:test",
            "spark.executor.instances": str(DRA_EXECUTORS), "spark.kubeaccel.queue": queue,
            "spark.kubeaccel.dra.enabled": "true", **ON_KWOK}
    for role in ("driver", "executor"):
        conf |= {f"spark.{role}.resource.ve.amount": "1", f"spark.{role}.resource.ve.vendor": DRA_VENDOR,
                 f"spark.{role}.resource.ve.discoveryScript": "/opt/kubeaccel/discover"}
    return SubmitRequest("local:///opt/app.py", master=f"k8s://{cluster.server}", name=name, conf=conf)


def _start_dra_executors(kube: Kube, namespace: str, driver: dict[str, Any]) -> None:
    text = template_text(kube.list_raw(CONFIGMAPS, namespace), driver["metadata"]["name"])
    for index in range(1, DRA_EXECUTORS + 1):
        pod = executor_pod(text, driver, index, {})
        # the stand-in sets the container's limits as Spark does; the template's claim stays the container's
        pod["spec"]["containers"][0]["resources"]["claims"] = [{"name": "accelerators"}]
        kube.create(pod, namespace=namespace)


def _allocated_claim_owners(kube: Kube, namespace: str) -> set[str]:
    from lightkube.resources.resource_v1 import ResourceClaim

    return {ref["name"] for claim in kube.list_raw(ResourceClaim, namespace)
            if (claim.get("status") or {}).get("allocation")
            for ref in claim["metadata"].get("ownerReferences") or []}


def _reserved(cluster: LocalCluster, namespace: str) -> list[dict[str, str]]:
    """What Kueue reserved for each admitted Workload of the namespace (its podSetAssignments' resourceUsage)."""
    out = cluster.kubectl("get", "workloads.kueue.x-k8s.io", "-n", namespace, "-o", "json").stdout
    return [assignment.get("resourceUsage") or {} for wl in json.loads(out)["items"]
            for assignment in ((wl.get("status") or {}).get("admission") or {}).get("podSetAssignments") or []]


def test_queue_quota_counts_deviceclass_devices(
    cluster: LocalCluster, kube: Kube, spark_namespace: str, dra_queue: str
) -> None:
    ns = spark_namespace
    sids = [submit(_dra_request(cluster, ns, app, dra_queue), kube=kube, check_quota=False) for app in ("one", "two")]

    def driver(i: int) -> dict[str, Any]:
        return kube.get_raw(PODS, sids[i].pod, ns)

    wait_for("one DRA driver admitted and running", lambda: sorted(
        (driver(i).get("status") or {}).get("phase", "") for i in range(2)) == ["Pending", "Running"], timeout=90)
    running = next(i for i in range(2) if driver(i)["status"]["phase"] == "Running")
    waiting = 1 - running
    assert driver(waiting)["spec"].get("schedulingGates"), "the queued driver is gated by Kueue"
    # the admitted app's quota is its devices of the class: the driver's claim times driver + executors
    assert [usage.get(DRA_RESOURCE) for usage in _reserved(cluster, ns)] == [str(1 + DRA_EXECUTORS)]

    _start_dra_executors(kube, ns, driver(running))
    whole = {p["metadata"]["name"] for p in _app_pods(kube, ns, driver(running))}
    wait_for("the admitted app placed whole, its claims allocated", lambda: (
        _placed(_app_pods(kube, ns, driver(running))) == 1 + DRA_EXECUTORS
        and _allocated_claim_owners(kube, ns) == whole), timeout=90)
    # the queued app holds nothing: no pod placed, no claim allocated
    assert _placed(_app_pods(kube, ns, driver(waiting))) == 0
    assert sids[waiting].pod not in _allocated_claim_owners(kube, ns)
    (queued,) = manage.status(kube, f"{ns}:{sids[waiting].pod}")
    assert "queued" in queued.reason, queued.reason


def test_kueue_holds_a_claim_with_a_cel_selector_inadmissible(
    cluster: LocalCluster, kube: Kube, spark_namespace: str, dra_queue: str
) -> None:
    """Why `--queue` refuses a DRA selector on the driver's claim (kubeaccel.spark.gang._check_kueue_claims):
    Kueue 0.17 will not count such a claim, and holds the pod inadmissible."""
    ns = spark_namespace
    cluster.apply(json.dumps({
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate", "metadata": {"name": "selected"},
        "spec": {"spec": {"devices": {"requests": [{"name": "ve", "exactly": {
            "deviceClassName": DRA_DEVICE_CLASS, "count": 1,
            "selectors": [{"cel": {"expression": 'device.attributes["x"].numaNode == 1'}}]}}]}}}}), namespace=ns)
    kube.create({"apiVersion": "v1", "kind": "Pod", "metadata": {
        "name": "selected", "labels": {"kueue.x-k8s.io/queue-name": dra_queue}}, "spec": {
        "nodeSelector": {"type": "kwok"}, "resourceClaims": [{"name": "ve", "resourceClaimTemplateName": "selected"}],
        "containers": [{"name": "c", "image": "busybox", "resources": {"claims": [{"name": "ve"}]}}]}}, namespace=ns)

    def messages() -> str:
        out = cluster.kubectl("get", "workloads.kueue.x-k8s.io", "-n", ns, "-o", "json").stdout
        return " ".join(c.get("message", "") for wl in json.loads(out)["items"]
                        for c in (wl.get("status") or {}).get("conditions") or [])

    wait_for("Kueue to refuse the claim", lambda: "CEL selectors are not supported" in messages(), timeout=60)
    assert kube.get_raw(PODS, "selected", ns)["spec"].get("schedulingGates"), "held, gated, for ever"
