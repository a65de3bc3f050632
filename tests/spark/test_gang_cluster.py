"""Gangs on the real control plane (Kubernetes 1.37 API server, scheduler with GenericWorkload, kwok nodes).

Two apps, each a driver (no device) + 4 executors with 1 device, on a node the test owns with 4 devices of
a resource only this test uses. The executors are created by a stand-in that reads the executor pod
template each submit produced, interleaved as two drivers starting together would create them.

* without gangs: both apps end up holding devices with executors still pending: the deadlock;
* with the native API (``--gang``): one app's 4 executors are placed together, the other's none; its
  `spark status` says why (the PodGroup's condition); when the first app ends, the second runs whole;
* a gang on a scheduler whose API is not installed (Volcano, Kueue) is refused, naming the missing
  CustomResourceDefinition, and nothing is created;
* `spark submit --gang` on a second control plane started without the Workload API exits 2 naming the
  feature gate, and nothing is created.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.cluster import LocalCluster, wait_for
from fixtures.spark import ON_KWOK
from fixtures.standin import executor_pod, template_text

from kubeaccel.cluster import kwok
from kubeaccel.errors import ConfigError, KubeaccelError, QuotaError
from kubeaccel.kube.client import Kube
from kubeaccel.kube.rest import CONFIGMAPS, PODS
from kubeaccel.spark import manage
from kubeaccel.spark.builder import Generated
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.gangkube import NATIVE_PODGROUPS
from kubeaccel.spark.rollback import RollbackIncompleteError
from kubeaccel.spark.submit import prepare, submit

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
EXECUTORS = 4


@pytest.fixture
def device_node(cluster: LocalCluster) -> Iterator[str]:
    """One kwok node with 4 devices of a resource no other test uses; yields the resource's vendor."""
    tag = uuid.uuid4().hex[:6]
    vendor = f"t{tag}.example.com"
    name = f"gang-{tag}"
    node = kwok.node_manifest(name, {"cpu": "32", "memory": "128Gi", "pods": "110", f"{vendor}/ve": str(EXECUTORS)})
    cluster.apply(json.dumps(node))
    wait_for("device node Ready", lambda: cluster.kubectl(
        "get", "node", name, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}', check=False,
    ).stdout == "True")
    try:
        yield vendor
    finally:
        cluster.kubectl("delete", "node", name, "--wait=false", check=False)


def _request(cluster: LocalCluster, namespace: str, name: str, vendor: str, **conf: str) -> SubmitRequest:
    return SubmitRequest(
        "local:///opt/spark/examples/src/main/python/pi.py",
        master=f"k8s://{cluster.server}",
        name=name,
        conf={
            "spark.kubernetes.namespace": namespace,
            "spark.kubernetes.container.image": "spark:test",
            "spark.executor.instances": str(EXECUTORS),
            "spark.executor.resource.ve.amount": "1",
            "spark.executor.resource.ve.vendor": vendor,
            "spark.executor.resource.ve.discoveryScript": "/opt/kubeaccel/discover",
            **ON_KWOK,
            **conf,
        },
    )


def _pods(kube: Kube, namespace: str, app_id: str) -> list[dict[str, Any]]:
    return kube.list_raw(PODS, namespace, labels={"spark-app-selector": app_id, "spark-role": "executor"})


def _placed(kube: Kube, namespace: str, app_id: str) -> int:
    return sum(1 for p in _pods(kube, namespace, app_id) if (p.get("spec") or {}).get("nodeName"))


def _unschedulable(pod: dict[str, Any]) -> bool:
    return any(c.get("type") == "PodScheduled" and c.get("status") == "False"
               for c in (pod.get("status") or {}).get("conditions") or [])


def _start_two_apps(
    cluster: LocalCluster, kube: Kube, namespace: str, vendor: str, **conf: str
) -> list[dict[str, Any]]:
    """Submit two apps, wait for their drivers, then create their executors interleaved: A0 B0 A1 B1 ..."""
    drivers = []
    for name in ("first", "second"):
        sid = submit(_request(cluster, namespace, name, vendor, **conf), kube=kube, check_quota=False)
        wait_for(f"{name} driver Running", lambda sid=sid: kube.get_raw(PODS, sid.pod, namespace)
                 .get("status", {}).get("phase") == "Running")
        drivers.append(kube.get_raw(PODS, sid.pod, namespace))
    config_maps = kube.list_raw(CONFIGMAPS, namespace)
    templates = [template_text(config_maps, d["metadata"]["name"]) for d in drivers]
    limits = {f"{vendor}/ve": "1"}
    for index in range(1, EXECUTORS + 1):
        for driver, text in zip(drivers, templates, strict=True):
            kube.create(executor_pod(text, driver, index, limits), namespace=namespace)
    return drivers


def _app_id(driver: dict[str, Any]) -> str:
    return str(driver["metadata"]["labels"]["spark-app-selector"])


def test_without_gangs_two_apps_deadlock(
    cluster: LocalCluster, kube: Kube, spark_namespace: str, device_node: str
) -> None:
    drivers = _start_two_apps(cluster, kube, spark_namespace, device_node)
    ids = [_app_id(d) for d in drivers]

    def settled() -> bool:
        pods = [p for app in ids for p in _pods(kube, spark_namespace, app)]
        placed = sum(1 for p in pods if (p.get("spec") or {}).get("nodeName"))
        return placed == EXECUTORS and sum(1 for p in pods if _unschedulable(p)) == EXECUTORS

    wait_for("all devices taken, the rest unschedulable", settled, timeout=60)
    placed = [_placed(kube, spark_namespace, app) for app in ids]
    # both apps hold devices, neither has all its executors: each waits for devices the other holds
    assert all(0 < n < EXECUTORS for n in placed), placed


def test_native_gang_places_one_app_whole_and_the_other_waits(
    cluster: LocalCluster, kube: Kube, spark_namespace: str, device_node: str
) -> None:
    drivers = _start_two_apps(cluster, kube, spark_namespace, device_node, **{"spark.kubeaccel.gang.enabled": "true"})
    ids = [_app_id(d) for d in drivers]
    groups = kube.list_raw(NATIVE_PODGROUPS, spark_namespace)
    assert sorted(g["spec"]["schedulingPolicy"]["gang"]["minCount"] for g in groups) == [EXECUTORS, EXECUTORS]
    assert all(g["metadata"]["ownerReferences"][0]["kind"] == "Pod" for g in groups)

    wait_for("one gang placed whole", lambda: sorted(_placed(kube, spark_namespace, a) for a in ids) == [0, EXECUTORS])
    placed = {a: _placed(kube, spark_namespace, a) for a in ids}
    waiting = next(a for a, n in placed.items() if n == 0)
    running = next(a for a, n in placed.items() if n == EXECUTORS)
    waiting_driver = next(d for d in drivers if _app_id(d) == waiting)

    def says_why() -> bool:
        (app,) = manage.status(kube, f"{spark_namespace}:{waiting_driver['metadata']['name']}")
        return "gang " in app.reason and "Unschedulable" in app.reason

    wait_for("status of the waiting gang says why", says_why, timeout=60)
    (app,) = manage.status(kube, f"{spark_namespace}:{waiting_driver['metadata']['name']}")
    # e.g. "gang second-…: Unschedulable: minCount (4) cannot be satisfied: 0 scheduled, 3 remaining, …"
    assert "minCount (4) cannot be satisfied" in app.reason, app.reason

    # the first app ends (its executors go): the second gang is placed, whole
    for pod in _pods(kube, spark_namespace, running):
        kube.delete(PODS, pod["metadata"]["name"], spark_namespace, grace_period=0, missing_ok=True)
    wait_for("the waiting gang placed whole", lambda: _placed(kube, spark_namespace, waiting) == EXECUTORS,
             timeout=60)


@pytest.mark.parametrize(("conf", "named"), [
    ({"spark.kubeaccel.gang.scheduler": "volcano"}, "podgroups.scheduling.volcano.sh"),
    ({"spark.kubeaccel.queue": "team-a"}, "localqueues.kueue.x-k8s.io"),
])
def test_gang_without_its_api_is_refused_and_nothing_is_created(
    cluster: LocalCluster, kube: Kube, spark_namespace: str, conf: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError) as info:
        submit(_request(cluster, spark_namespace, "refused", "nec.com", **conf), kube=kube, check_quota=False)
    assert named in info.value.message
    assert kube.list_raw(PODS, spark_namespace) == []
    assert all(c["metadata"]["name"] == "kube-root-ca.crt" for c in kube.list_raw(CONFIGMAPS, spark_namespace))


def test_gang_larger_than_the_cluster_is_refused_with_numbers(
    cluster: LocalCluster, kube: Kube, spark_namespace: str, device_node: str
) -> None:
    conf = {"spark.kubeaccel.gang.enabled": "true", "spark.executor.instances": str(EXECUTORS + 1)}
    with pytest.raises(QuotaError) as info:
        submit(_request(cluster, spark_namespace, "too-big", device_node, **conf), kube=kube)
    assert f"needs {EXECUTORS + 1} {device_node}/ve, the cluster has {EXECUTORS}" in info.value.message
    assert kube.list_raw(PODS, spark_namespace) == []


def test_a_failure_after_the_pod_group_rolls_it_back(cluster: LocalCluster, kube: Kube, spark_namespace: str) -> None:
    generated = Generated.fresh("tester")
    kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"clash-{generated.name_id}-driver-svc"},
                 "spec": {"clusterIP": "None", "ports": [{"port": 1}]}}, namespace=spark_namespace)
    request = _request(cluster, spark_namespace, "clash", "nec.com", **{"spark.kubeaccel.gang.enabled": "true"})
    with pytest.raises(KubeaccelError, match="already exists") as info:
        submit(request, kube=kube, generated=generated, check_quota=False)
    assert not isinstance(info.value, RollbackIncompleteError), info.value.message  # everything was removed
    assert kube.list_raw(PODS, spark_namespace) == []
    # deleted by the rollback; the PodGroup's protection finalizer goes once no pod names it
    wait_for("the PodGroup gone", lambda: kube.list_raw(NATIVE_PODGROUPS, spark_namespace) == [], timeout=60)


def _volcano_crd() -> dict[str, Any]:
    """Volcano's PodGroup CustomResourceDefinition, written here from the facts of its published schema
    (volcano-sh/volcano config/crd/volcano/bases/scheduling.volcano.sh_podgroups.yaml, v1beta1): the spec's
    field names and types. Unknown fields are pruned by the API server, so what we send must come back."""
    quantity = {"anyOf": [{"type": "integer"}, {"type": "string"}], "x-kubernetes-int-or-string": True,
                "pattern": r"^(\+|-)?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))(([KMGTPE]i)|[numkMGTPE]|([eE](\+|-)?"
                           r"(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"}
    spec = {"type": "object", "properties": {
        "minMember": {"type": "integer", "format": "int32"},
        "minResources": {"type": "object", "additionalProperties": quantity},
        "minTaskMember": {"type": "object", "additionalProperties": {"type": "integer", "format": "int32"}},
        "priorityClassName": {"type": "string"},
        "queue": {"type": "string", "default": "default"},
        "preemptable": {"type": "boolean"},
    }}
    return {
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": "podgroups.scheduling.volcano.sh"},
        "spec": {"group": "scheduling.volcano.sh", "scope": "Namespaced",
                 "names": {"kind": "PodGroup", "listKind": "PodGroupList", "plural": "podgroups",
                           "singular": "podgroup"},
                 "versions": [{"name": "v1beta1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                     "type": "object", "properties": {
                         "spec": spec, "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}}}}}]},
    }


def test_volcano_pod_group_is_created_as_its_schema_takes_it(
    cluster: LocalCluster, kube: Kube, spark_namespace: str
) -> None:
    """Last in this module: the CRD exists only during this test (the refusal test above needs it absent)."""
    cluster.apply(json.dumps(_volcano_crd()))
    try:
        wait_for("the CRD Established", lambda: cluster.kubectl(  # a new CRD may have no status yet: ask again
            "wait", "--for=condition=Established", "--timeout=10s", "crd/podgroups.scheduling.volcano.sh",
            check=False, timeout=30).returncode == 0, timeout=90)
        conf = {"spark.kubeaccel.gang.scheduler": "volcano", "spark.kubeaccel.queue": "batch"}
        generated = Generated.fresh("tester")
        request = _request(cluster, spark_namespace, "vc", "nec.com", **conf)
        (built,) = prepare(request, generated=generated).manifests.gang_objects
        sid = submit(request, kube=kube, generated=generated, check_quota=False)
        from kubeaccel.spark.gangkube import VOLCANO_PODGROUPS

        (stored,) = kube.list_raw(VOLCANO_PODGROUPS, spark_namespace)
        assert stored["spec"] == built["spec"]  # every field taken as sent: none pruned, none refused
        assert stored["spec"]["minMember"] == 1 and stored["spec"]["queue"] == "batch"
        assert stored["spec"]["minResources"]["nec.com/ve"] == str(EXECUTORS)
        assert stored["metadata"]["ownerReferences"][0]["name"] == sid.pod
        driver = kube.get_raw(PODS, sid.pod, spark_namespace)
        assert driver["spec"]["schedulerName"] == "volcano"
        assert driver["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == stored["metadata"]["name"]
    finally:
        cluster.kubectl("delete", "crd", "podgroups.scheduling.volcano.sh", "--wait=true", check=False, timeout=90)


def test_gang_on_a_cluster_without_the_workload_api_exits_2_naming_the_gate(tmp_path: Path) -> None:
    """A second local control plane started without the Workload API (ClusterSpec(workload_api=False): no
    GenericWorkload gate, scheduling.k8s.io/v1beta1 not served): `spark submit --gang` is refused, exit 2,
    naming the gate, and nothing is created in the namespace."""
    from fixtures.spark import run_cli

    from kubeaccel.cluster.lifecycle import down, up
    from kubeaccel.cluster.spec import ClusterSpec

    state_dir = Path(tempfile.mkdtemp(prefix="kubeaccel-noworkload-"))
    try:
        info = up(ClusterSpec(state_dir=state_dir, nodes=0, workload_api=False))
        without = LocalCluster(info.kubeconfig, info.server, info.state_dir, [])
        assert "podgroups" not in without.kubectl("api-resources", "--api-group=scheduling.k8s.io").stdout
        namespace = without.create_namespace("nogang")
        code, output, error = run_cli([
            "spark", "submit", "--kubeconfig", str(info.kubeconfig), "--master", f"k8s://{info.server}", "--gang",
            "--conf", f"spark.kubernetes.namespace={namespace}", "--conf", "spark.kubernetes.container.image=spark:t",
            "--conf", "spark.executor.instances=2", "--no-preflight", "local:///opt/app.py"])
        assert code == 2, (code, output, error)
        assert isinstance(error, ConfigError), error
        said = f"{error.message} {error.hint}"
        assert "scheduling.k8s.io/v1beta1" in said and "GenericWorkload" in said and "runtime-config" in said, said
        kube = Kube.connect(kubeconfig=info.kubeconfig)
        try:
            assert kube.list_raw(PODS, namespace) == []
            assert [c["metadata"]["name"] for c in kube.list_raw(CONFIGMAPS, namespace)] == ["kube-root-ca.crt"]
        finally:
            kube.close()
    finally:
        down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)
