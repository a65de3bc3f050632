"""Against the real kube-apiserver, controllers, scheduler and kwok nodes of the ``cluster`` fixture.

Matrix: nodes carry the extended resource; kwok pods run and finish on request; ResourceQuota admission
refuses a pod over ``requests.nec.com/ve``; the scheduler places pods only where an extended resource is
free (on nodes the test owns); owner-reference GC deletes a pod's ConfigMap and Service; RBAC confines
a ServiceAccount to its namespace.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from fixtures.cluster import LocalCluster, wait_for

from kubeaccel.cluster import kwok

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def _pod(
    name: str, ve: int = 0, annotations: dict[str, str] | None = None, node: str | None = None,
    resource: str = "nec.com/ve",
) -> str:
    resources = {"limits": {resource: str(ve)}, "requests": {resource: str(ve)}} if ve else {}
    spec: dict[str, object] = {
        "containers": [{"name": "main", "image": "busybox", "resources": resources}],
        "tolerations": [{"operator": "Exists"}],
        "restartPolicy": "Never",
    }
    if node:
        spec["nodeSelector"] = {"kubernetes.io/hostname": node}
    return json.dumps({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "annotations": annotations or {}},
        "spec": spec,
    })


def _get(cluster: LocalCluster, kind: str, name: str, namespace: str) -> dict[str, object] | None:
    proc = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def _phase(cluster: LocalCluster, name: str, namespace: str) -> str:
    pod = _get(cluster, "pod", name, namespace)
    return str(pod["status"].get("phase", "")) if pod else ""  # type: ignore[attr-defined]


def test_kwok_nodes_are_ready_with_extended_resource(cluster: LocalCluster) -> None:
    nodes = json.loads(cluster.kubectl("get", "nodes", "-o", "json").stdout)["items"]
    by_name = {n["metadata"]["name"]: n for n in nodes}
    assert set(cluster.nodes) <= set(by_name)
    assert len(cluster.nodes) >= 2
    for name in cluster.nodes:
        status = by_name[name]["status"]
        assert status["allocatable"]["nec.com/ve"] == "8"
        assert status["capacity"]["nec.com/ve"] == "8"
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["status"] == "True"


def test_pod_runs_and_finishes_when_annotated(cluster: LocalCluster) -> None:
    ns = cluster.create_namespace("kwok")
    cluster.apply(_pod("worker"), ns)
    wait_for("pod Running", lambda: _phase(cluster, "worker", ns) == "Running")
    cluster.kubectl("annotate", "pod", "worker", "-n", ns, "kubeaccel.io/kwok-finish=Succeeded")
    wait_for("pod Succeeded", lambda: _phase(cluster, "worker", ns) == "Succeeded")
    cluster.apply(_pod("failing", annotations={"kubeaccel.io/kwok-finish": "Failed"}), ns)
    wait_for("pod Failed", lambda: _phase(cluster, "failing", ns) == "Failed")
    pod = _get(cluster, "pod", "failing", ns)
    assert pod is not None
    state = pod["status"]["containerStatuses"][0]["state"]  # type: ignore[index]
    assert state["terminated"]["exitCode"] == 1


def test_quota_admission_refuses_pod_over_extended_resource_quota(cluster: LocalCluster) -> None:
    ns = cluster.create_namespace("quota")
    cluster.kubectl("create", "quota", "ve", "-n", ns, "--hard=requests.nec.com/ve=2")
    # The quota controller must have computed usage before admission charges against it.

    def usage_computed() -> bool:
        quota = _get(cluster, "quota", "ve", ns) or {}
        return "requests.nec.com/ve" in quota.get("status", {}).get("used", {})  # type: ignore[attr-defined]

    wait_for("quota usage computed by the controller", usage_computed)
    cluster.apply(_pod("fits", 2), ns)
    refused = cluster.kubectl("apply", "-n", ns, "-f", "-", input=_pod("over", 1), check=False)
    assert refused.returncode != 0
    assert "exceeded quota" in refused.stderr
    assert "requests.nec.com/ve" in refused.stderr
    assert _get(cluster, "pod", "over", ns) is None


@pytest.fixture
def own_nodes(cluster: LocalCluster) -> Iterator[tuple[str, list[str]]]:
    """Two kwok nodes with 8 of a resource nobody else uses, so other tests' pods cannot skew placement."""
    tag = uuid.uuid4().hex[:6]
    resource = f"t{tag}.example.com/dev"
    names = [f"sched-{tag}-0", f"sched-{tag}-1"]
    items = [kwok.node_manifest(n, {"cpu": "8", "memory": "16Gi", "pods": "20", resource: "8"}) for n in names]
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    wait_for("own nodes Ready", lambda: all(
        cluster.kubectl("get", "node", n, "-o", 'jsonpath={.status.conditions[?(@.type=="Ready")].status}',
                                  check=False).stdout == "True" for n in names))
    try:
        yield resource, names
    finally:
        cluster.kubectl("delete", "node", *names, "--wait=false", check=False)


def test_scheduler_places_pods_only_where_extended_resource_is_free(
    cluster: LocalCluster, own_nodes: tuple[str, list[str]]
) -> None:
    resource, (first, second) = own_nodes
    ns = cluster.create_namespace("sched")
    # Fill the first node's 8 devices, then ask for 6 more pinned nowhere: only the second node fits.
    cluster.apply(_pod("fill", 8, node=first, resource=resource), ns)
    wait_for("fill Running", lambda: _phase(cluster, "fill", ns) == "Running")
    cluster.apply(_pod("needs-six", 6, resource=resource), ns)
    wait_for("needs-six Running", lambda: _phase(cluster, "needs-six", ns) == "Running")
    pod = _get(cluster, "pod", "needs-six", ns)
    assert pod is not None and pod["spec"]["nodeName"] == second  # type: ignore[index]
    # Now 2 are free on the second node and none on the first: a pod wanting 3 stays Pending, unschedulable.
    cluster.apply(_pod("too-big", 3, resource=resource), ns)

    def unschedulable() -> bool:
        found = _get(cluster, "pod", "too-big", ns)
        conditions = found["status"].get("conditions", []) if found else []  # type: ignore[attr-defined]
        return any(c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable" for c in conditions)

    wait_for("too-big Unschedulable", unschedulable)
    found = _get(cluster, "pod", "too-big", ns)
    assert found is not None and not found["spec"].get("nodeName")  # type: ignore[attr-defined]
    assert resource in json.dumps(found["status"])
    # Freeing the first node lets the scheduler place it there.
    cluster.kubectl("delete", "pod", "fill", "-n", ns, "--wait=true", timeout=60)
    wait_for("too-big Running", lambda: _phase(cluster, "too-big", ns) == "Running")
    placed = _get(cluster, "pod", "too-big", ns)
    assert placed is not None and placed["spec"]["nodeName"] == first  # type: ignore[index]


def test_owner_reference_gc_deletes_configmap_and_service_with_pod(cluster: LocalCluster) -> None:
    ns = cluster.create_namespace("gc")
    cluster.apply(_pod("driver"), ns)
    uid = json.loads(cluster.kubectl("get", "pod", "driver", "-n", ns, "-o", "json").stdout)["metadata"]["uid"]
    owner = [{"apiVersion": "v1", "kind": "Pod", "name": "driver", "uid": uid, "controller": True}]
    owned = [
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "driver-conf", "ownerReferences": owner},
         "data": {"spark.properties": "spark.app.name=x"}},
        {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "driver-svc", "ownerReferences": owner},
         "spec": {"clusterIP": "None", "selector": {"app": "x"}, "ports": [{"port": 7078}]}},
    ]
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": owned}), ns)
    assert _get(cluster, "configmap", "driver-conf", ns) is not None
    assert _get(cluster, "service", "driver-svc", ns) is not None
    cluster.kubectl("delete", "pod", "driver", "-n", ns, "--wait=true", timeout=60)
    wait_for("owned objects collected", lambda: _get(cluster, "configmap", "driver-conf", ns) is None
          and _get(cluster, "service", "driver-svc", ns) is None)


def test_rbac_confines_service_account_to_its_namespace(cluster: LocalCluster) -> None:
    mine, other = cluster.create_namespace("tenant"), cluster.create_namespace("other")
    cluster.kubectl("create", "serviceaccount", "spark", "-n", mine)
    cluster.kubectl("create", "role", "spark", "-n", mine, "--verb=get,list,create,delete",
                    "--resource=pods,configmaps,services")
    cluster.kubectl("create", "rolebinding", "spark", "-n", mine, "--role=spark", f"--serviceaccount={mine}:spark")
    who = f"--as=system:serviceaccount:{mine}:spark"

    def can(verb: str, resource: str, namespace: str) -> str:
        return cluster.kubectl("auth", "can-i", verb, resource, "-n", namespace, who, check=False).stdout.strip()

    wait_for("role binding effective", lambda: can("create", "pods", mine) == "yes")
    assert can("create", "pods", other) == "no"
    assert can("list", "configmaps", other) == "no"
    # A real request, not just the review: the API server refuses it with 403.
    refused = cluster.kubectl("get", "pods", "-n", other, who, check=False)
    assert refused.returncode != 0
    assert "forbidden" in refused.stderr.lower()
    allowed = cluster.kubectl("create", "configmap", "ok", "-n", mine, who, check=False)
    assert allowed.returncode == 0, allowed.stderr
    denied = cluster.kubectl("create", "configmap", "nope", "-n", other, who, check=False)
    assert denied.returncode != 0 and "forbidden" in denied.stderr.lower()
