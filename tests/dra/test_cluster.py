"""The DRA driver against a real API server (Kubernetes 1.37, ``resource.k8s.io/v1``) with kwok nodes.

ResourceSlices published, re-published with a higher generation on every change, tainted when a
device fails and untainted when it recovers, stale ones cleaned; the real scheduler allocates
claims (explicit ones with CEL selectors, and ``limits: {example.com/sim: 1}`` through the
DeviceClass's ``extendedResourceName``) from what we publish and avoids tainted devices; the daemon
prepares what the scheduler allocated; ``kubeaccel dra check`` passes our driver and fails a broken
one; the deploy manifests are accepted by the API server.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from dra.broken import BROKEN_DRIVER, BrokenDriver
from dra.node import DRIVER, SIM, DraNode, make_node
from fixtures.cluster import LocalCluster, wait_for

from kubeaccel.conformance import Result
from kubeaccel.dra._generated import dra_v1_pb2
from kubeaccel.dra.checker import run_checks
from kubeaccel.dra.daemon import KubeAccess
from kubeaccel.dra.model import HEALTH_TAINT_KEY, device_class, pool_name
from kubeaccel.errors import NotFoundError
from kubeaccel.kube import dra as kdra

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "dra"


def _slices(cluster: LocalCluster, node: str) -> list[dict[str, Any]]:
    kube = kdra.connect(cluster.kubeconfig)
    try:
        return kdra.list_slices(kube, driver=DRIVER, node=node)
    finally:
        kube.close()


def _devices(cluster: LocalCluster, node: str) -> dict[str, dict[str, Any]]:
    return {d["name"]: d for s in _slices(cluster, node) for d in s["spec"].get("devices") or []}


@pytest.fixture
def published(cluster: LocalCluster) -> Iterator[DraNode]:
    """Our driver publishing for the first kwok node, with the DeviceClass applied."""
    node = make_node(publish=True, access=_Access(cluster.kubeconfig), node=cluster.nodes[0], device_classes=True,
                     withdraw=True)
    node.start()
    try:
        wait_for("the ResourceSlice", lambda: len(_devices(cluster, cluster.nodes[0])) == 4, timeout=30)
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.base, ignore_errors=True)


class _Access(KubeAccess):
    """The real API server, counting claim reads."""

    def __init__(self, kubeconfig: Path) -> None:
        super().__init__(kubeconfig)
        self.reads = 0

    async def read_claim(self, namespace: str, name: str):
        self.reads += 1
        return await super().read_claim(namespace, name)


def test_slices_follow_health_and_are_withdrawn(cluster: LocalCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    from kubeaccel.dra import publisher

    monkeypatch.setattr(publisher, "RESYNC_S", 0.5)
    node_name = cluster.nodes[0]
    kube = kdra.connect(cluster.kubeconfig)
    stale = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
             "metadata": {"name": f"stale-{uuid.uuid4().hex[:6]}"},
             "spec": {"driver": DRIVER, "nodeName": node_name,
                      "pool": {"name": f"{node_name}/old", "generation": 41, "resourceSliceCount": 1},
                      "devices": []}}
    kdra.apply_slice(kube, stale)
    node = make_node(publish=True, access=_Access(cluster.kubeconfig), node=node_name, withdraw=True)
    node.start()
    try:
        wait_for("our slice only", lambda: [s["metadata"]["name"] for s in _slices(cluster, node_name)]
                 == [node.daemon.publisher._desired().popitem()[0]], timeout=30)
        (first,) = _slices(cluster, node_name)
        assert first["spec"]["pool"]["name"] == pool_name(node_name, SIM)
        assert first["spec"]["pool"]["generation"] > 41  # continues above what was there
        attrs = {d["name"]: d["attributes"] for d in first["spec"]["devices"]}
        assert attrs["sim-3"]["numaNode"] == {"int": 1} and attrs["sim-3"]["index"] == {"int": 3}
        node.set_states({"sim-1": "Unhealthy"})
        wait_for("the taint", lambda: _devices(cluster, node_name)["sim-1"].get("taints"), timeout=30)
        (tainted,) = _slices(cluster, node_name)
        assert tainted["spec"]["pool"]["generation"] > first["spec"]["pool"]["generation"]
        assert tainted["spec"]["devices"][1]["taints"][0]["key"] == HEALTH_TAINT_KEY
        node.set_states({})
        wait_for("the recovery", lambda: not _devices(cluster, node_name)["sim-1"].get("taints"), timeout=30)
        cluster.kubectl("delete", "resourceslice", first["metadata"]["name"])  # someone deletes ours
        wait_for("the slice to be back", lambda: len(_devices(cluster, node_name)) == 4, timeout=30)
    finally:
        node.stop()
        kube.close()
        shutil.rmtree(node.base, ignore_errors=True)
    assert _slices(cluster, node_name) == []  # withdrawn on a clean stop


@pytest.fixture
def ns(cluster: LocalCluster) -> Iterator[str]:
    """A namespace whose pods and claims are gone afterwards, so later tests find every device free."""
    name = cluster.create_namespace("dra")
    yield name
    cluster.kubectl("delete", "pods", "--all", "-n", name, "--grace-period=0", "--force", check=False)
    cluster.kubectl("delete", "resourceclaims", "--all", "-n", name, "--wait=false", check=False)
    wait_for("the claims to go", lambda: json.loads(cluster.kubectl(
        "get", "resourceclaims", "-n", name, "-o", "json").stdout)["items"] == [], timeout=60)


def _pod(name: str, namespace: str, node: str, *, limits: dict[str, str] | None = None,
         claim_template: str | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "busybox"}
    spec: dict[str, Any] = {"containers": [container], "nodeSelector": {"kubernetes.io/hostname": node},
                            "tolerations": [{"operator": "Exists"}]}
    if limits:
        container["resources"] = {"limits": limits}
    if claim_template:
        spec["resourceClaims"] = [{"name": "dev", "resourceClaimTemplateName": claim_template}]
        container["resources"] = {"claims": [{"name": "dev"}]}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def _allocation(cluster: LocalCluster, namespace: str, pod: str) -> tuple[dict[str, Any], list[str]]:
    out = json.loads(cluster.kubectl("get", "resourceclaims", "-n", namespace, "-o", "json").stdout)
    mine = [c for c in out["items"] if any(o.get("name") == pod for o in c["metadata"].get("ownerReferences") or [])]
    if not mine or not (mine[0].get("status") or {}).get("allocation"):
        return {}, []
    claim = mine[0]
    return claim, [r["device"] for r in claim["status"]["allocation"]["devices"]["results"]]


def _prepare(node: DraNode, claim: dict[str, Any]) -> list[str]:
    meta = claim["metadata"]
    ref = dra_v1_pb2.Claim(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])
    result = node.prepare(ref).claims[meta["uid"]]
    assert result.error == ""
    return [d.device_name for d in result.devices]


def test_scheduler_allocates_what_we_publish_and_we_prepare_it(
    cluster: LocalCluster, published: DraNode, ns: str
) -> None:
    node_name = cluster.nodes[0]
    # an explicit claim with a CEL selector: only NUMA node 1 (sim-2, sim-3)
    template = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                "metadata": {"name": "numa1", "namespace": ns},
                "spec": {"spec": {"devices": {"requests": [{"name": "ve", "exactly": {
                    "deviceClassName": "sim.example.com", "count": 2,
                    "selectors": [{"cel": {"expression": f'device.attributes["{DRIVER}"].numaNode == 1'}}]}}]}}}}
    cluster.apply(yaml.safe_dump(template), namespace=ns)
    cluster.apply(yaml.safe_dump(_pod("explicit", ns, node_name, claim_template="numa1")), namespace=ns)
    wait_for("the explicit claim's allocation", lambda: _allocation(cluster, ns, "explicit")[1], timeout=60)
    claim, devices = _allocation(cluster, ns, "explicit")
    assert sorted(devices) == ["sim-2", "sim-3"]
    assert sorted(_prepare(published, claim)) == ["sim-2", "sim-3"]
    # the extended-resource path: limits {example.com/sim: 1} served by the DeviceClass
    cluster.apply(yaml.safe_dump(_pod("extended", ns, node_name, limits={SIM: "1"})), namespace=ns)
    wait_for("the extended-resource claim", lambda: _allocation(cluster, ns, "extended")[1], timeout=60)
    claim, devices = _allocation(cluster, ns, "extended")
    assert len(devices) == 1 and devices[0] in {"sim-0", "sim-1"}  # sim-2/3 are taken
    assert _prepare(published, claim) == devices
    scheduled = json.loads(cluster.kubectl("get", "pod", "extended", "-n", ns, "-o", "json").stdout)
    assert scheduled["spec"]["nodeName"] == node_name


def test_new_claims_avoid_a_tainted_device(cluster: LocalCluster, published: DraNode, ns: str) -> None:
    node_name = cluster.nodes[0]
    published.set_states({"sim-0": "Unhealthy", "sim-1": "Unhealthy", "sim-2": "Unhealthy"})
    wait_for("three taints", lambda: sum(bool(d.get("taints")) for d in _devices(cluster, node_name).values()) == 3,
             timeout=30)
    cluster.apply(yaml.safe_dump(_pod("p", ns, node_name, limits={SIM: "1"})), namespace=ns)
    wait_for("the allocation", lambda: _allocation(cluster, ns, "p")[1], timeout=60)
    assert _allocation(cluster, ns, "p")[1] == ["sim-3"]


def test_checker_passes_our_driver(cluster: LocalCluster, published: DraNode) -> None:
    ns = cluster.create_namespace("drack")
    report = asyncio.run(run_checks(published.options.registry_dir, node=cluster.nodes[0], namespace=ns,
                                    kubeconfig=cluster.kubeconfig, cdi_dir=published.options.cdi_dir, timeout=10))
    table = "\n".join(f"{s.name}: {s.result} {s.detail}" for s in report.steps)
    assert report.passed, table
    assert [s.result for s in report.steps] == [Result.PASS] * len(report.steps), table
    assert report.driver == DRIVER and report.service == "v1.DRAPlugin"
    left = json.loads(cluster.kubectl("get", "resourceclaims", "-n", ns, "-o", "json").stdout)["items"]
    assert left == []  # the checker cleans up its claim


def test_checker_fails_a_broken_driver(cluster: LocalCluster) -> None:
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="kbrk-"))
    (base / "registry").mkdir()
    node_name = cluster.nodes[1]
    pool = f"{node_name}/broken"
    kube = kdra.connect(cluster.kubeconfig)
    kdra.apply_slice(kube, {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
                            "metadata": {"name": f"broken-{node_name}"},
                            "spec": {"driver": BROKEN_DRIVER, "nodeName": node_name,
                                     "pool": {"name": pool, "generation": 1, "resourceSliceCount": 1},
                                     "devices": [{"name": "dev-0"}]}})

    def exists(namespace: str, name: str) -> bool:
        try:
            kdra.get_claim(kube, namespace, name)
        except NotFoundError:
            return False
        return True

    ns = cluster.create_namespace("drabrk")
    try:
        with BrokenDriver(base, pool, "dev-0", exists):
            report = asyncio.run(run_checks(base / "registry", node=node_name, namespace=ns,
                                            kubeconfig=cluster.kubeconfig, timeout=3))
    finally:
        kdra.delete_slice(kube, f"broken-{node_name}")
        kube.close()
        shutil.rmtree(base, ignore_errors=True)
    results = {s.name: s.result for s in report.steps}
    assert not report.passed
    assert results["GetInfo"] == Result.PASS
    assert results["claim created and allocated"] == Result.PASS
    assert results["NodePrepareResources"] == Result.FAIL  # malformed CDI IDs
    # A whole-call error for a claim that does not exist is legal (the kubelet never sends one): WARN.
    assert results["unknown claim"] == Result.WARN
    assert results["health stream"] == Result.SKIP
    # The kubelet re-dials the registration socket it finds; it never deletes one, so a driver that
    # never re-creates its socket is found again.
    assert results["kubelet restart: re-register"] == Result.PASS
    detail = {s.name: s.detail for s in report.steps}
    assert "malformed CDI device IDs" in detail["NodePrepareResources"]


def test_unreachable_api_server_at_start_keeps_serving(cluster: LocalCluster, tmp_path: Path) -> None:
    dead = tmp_path / "kubeconfig"
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    for entry in config["clusters"]:
        entry["cluster"]["server"] = "https://127.0.0.1:9"  # discard port: nothing listens
    dead.write_text(yaml.safe_dump(config))
    node = make_node(publish=True, access=_Access(dead), node=cluster.nodes[0])
    node.start()
    try:
        wait_for("a failed publish attempt", lambda: node.daemon.publisher.errors >= 2, timeout=30)
        ref = dra_v1_pb2.Claim(namespace="default", name="x", uid=str(uuid.uuid4()))
        error = node.prepare(ref).claims[ref.uid].error
        assert "cannot reach the Kubernetes API server" in error
    finally:
        node.stop()
        shutil.rmtree(node.base, ignore_errors=True)


def test_deploy_manifests_are_accepted(cluster: LocalCluster) -> None:
    for path in sorted(DEPLOY.glob("*.yaml")):
        cluster.kubectl("apply", "--dry-run=server", "-f", str(path))
    classes = [d for d in yaml.safe_load_all((DEPLOY / "deviceclasses.yaml").read_text()) if d]
    assert classes == [device_class(DRIVER, "nec.com/ve")]


def test_spark_claim_templates_are_accepted_and_bad_cel_is_a_clear_error(cluster: LocalCluster) -> None:
    from kubeaccel.errors import ConfigError
    from kubeaccel.spark import dra as spark_dra

    ns = cluster.create_namespace("sparkdra")
    conf = {"spark.executor.resource.ve.amount": "2", "spark.executor.resource.ve.vendor": "nec.com",
            spark_dra.ENABLED: "true", "spark.kubeaccel.dra.executor.ve.numaNode": "1",
            "spark.kubeaccel.dra.executor.ve.model": "VE3"}
    template = spark_dra.claim_template("app", ns, "executor", spark_dra.requests(conf, "executor"))
    kube = kdra.connect(cluster.kubeconfig)
    try:
        created = kube.create(template, ns)
        assert created["spec"]["spec"]["devices"]["requests"][0]["exactly"]["count"] == 2
        bad = spark_dra.requests({**conf, "spark.kubeaccel.dra.executor.ve.selector": "device.attributes[["},
                                 "executor")
        broken = spark_dra.claim_template("bad", ns, "executor", bad)
        with pytest.raises(ConfigError, match="the API server rejected"):
            kube.create(broken, ns)
    finally:
        kube.close()


def test_rbac_lets_the_daemon_write_only_its_own_nodes_slices(cluster: LocalCluster) -> None:
    cluster.kubectl("apply", "-f", str(DEPLOY / "rbac.yaml"))
    try:
        _check_rbac(cluster)
    finally:  # the session's cluster is shared: a Helm release of the chart must be able to own these names
        cluster.kubectl("delete", "--ignore-not-found", "--wait=false", "-f", str(DEPLOY / "rbac.yaml"))


def _check_rbac(cluster: LocalCluster) -> None:
    sa = "system:serviceaccount:kube-system:kubeaccel-dra"
    as_daemon = [f"--as={sa}", "--as-group=system:serviceaccounts",
                 f"--as-user-extra=authentication.kubernetes.io/node-name={cluster.nodes[0]}"]

    def can(verb: str, resource: str) -> bool:
        out = cluster.kubectl("auth", "can-i", verb, resource, *as_daemon, check=False).stdout.strip()
        return out == "yes"

    assert can("create", "resourceslices.resource.k8s.io")
    assert can("get", "resourceclaims.resource.k8s.io")
    assert not can("update", "resourceclaims.resource.k8s.io")
    assert not can("create", "deviceclasses.resource.k8s.io")
    assert not can("get", "secrets")

    def slice_for(node: str) -> str:
        return json.dumps({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceSlice",
                           "metadata": {"name": f"rbac-{node}-{uuid.uuid4().hex[:6]}"},
                           "spec": {"driver": DRIVER, "nodeName": node,
                                    "pool": {"name": f"{node}/rbac", "generation": 1, "resourceSliceCount": 1},
                                    "devices": []}})

    wait_for("the admission policy to be active", lambda: "may only manage ResourceSlices of its own node" in
             cluster.kubectl("create", "--dry-run=server", "-f", "-", *as_daemon, input=slice_for(cluster.nodes[1]),
                             check=False).stderr, timeout=30)
    mine = cluster.kubectl("create", "--dry-run=server", "-f", "-", *as_daemon, input=slice_for(cluster.nodes[0]),
                           check=False)
    assert mine.returncode == 0, mine.stderr
