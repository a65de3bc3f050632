"""Spark on DRA in `kubeaccel spark submit`: confs → ResolvedApp → claim templates, pods, quota.

Pure: the builder's objects (template per role, driver claim without the extended-resource limit,
executor pod template with the claim and the annotation, the quota in DeviceClass devices).
Real API server (Kubernetes 1.37, kwok nodes): the template is created, owned by the driver pod and
gone with it; a failure after it (a clashing Service, a CEL selector the API server refuses) rolls it
back; the quota pre-flight counts `<class>.deviceclass.resource.k8s.io/devices`; the admission policy
in deploy/dra strips the limits Spark adds to an executor that claims its devices.
"""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.cluster import wait_for
from fixtures.spark import ON_KWOK, SPARK_USER

from kubeaccel.errors import ConfigError, KubeaccelError, QuotaError
from kubeaccel.kube.client import Kube
from kubeaccel.kube.tenancy import create_tenant
from kubeaccel.spark.builder import Generated, build
from kubeaccel.spark.claims import CLAIMED_ANNOTATION
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.model import resolve
from kubeaccel.spark.submit import submit

POLICY = Path(__file__).resolve().parents[2] / "deploy" / "dra" / "spark-claims-policy.yaml"
DRA = {
    "spark.kubeaccel.dra.enabled": "true",
    "spark.executor.instances": "3",
    "spark.executor.resource.ve.amount": "2",
    "spark.executor.resource.ve.vendor": "nec.com",
    "spark.executor.resource.ve.discoveryScript": "/opt/kubeaccel/discover",
    "spark.kubeaccel.dra.executor.ve.numaNode": "1",
}
GEN = Generated("spark-0123", "abc123def", "svc999", "cm777", "dir-uuid", 1_700_000_000_000, "alice")


def _request(
    namespace: str, server: str = "https://127.0.0.1:6443", name: str = "dra-app", **conf: str
) -> SubmitRequest:
    return SubmitRequest(
        "local:///opt/spark/examples/src/main/python/pi.py",
        master=f"k8s://{server}",
        name=name,
        conf={"spark.kubernetes.namespace": namespace, "spark.kubernetes.container.image": "spark:test",
              **ON_KWOK, **DRA, **conf},
    )


def test_resolved_app_carries_the_claims_and_the_builder_uses_them() -> None:
    driver_conf = {"spark.driver.resource.ve.amount": "1", "spark.driver.resource.ve.vendor": "nec.com",
                   "spark.driver.resource.ve.discoveryScript": "/opt/kubeaccel/discover"}
    app = resolve(_request("team-a", **driver_conf)).placed(None)
    claims = [(c.role, c.name, c.device_class, c.count) for c in app.executor_claims]
    assert claims == [("executor", "ve", "ve.nec.com", 2)]
    assert [(c.role, c.count) for c in app.driver_claims] == [("driver", 1)]
    assert app.executor.accelerators == () and app.driver.accelerators == ()
    assert app.executor_claimed_limits == ("nec.com/ve",)
    requests = app.app_requests()
    assert requests["ve.nec.com.deviceclass.resource.k8s.io/devices"] == Decimal(7)
    assert "requests.nec.com/ve" not in requests

    manifests = build(app, GEN)
    by_role = {t["metadata"]["labels"]["spark-role"]: t for t in manifests.claim_templates}
    request = by_role["executor"]["spec"]["spec"]["devices"]["requests"][0]
    assert request["exactly"]["count"] == 2
    numa = 'device.attributes["dra.kubeaccel.io"].numaNode == 1'
    assert request["exactly"]["selectors"] == [{"cel": {"expression": numa}}]
    assert manifests.owned[:2] == manifests.claim_templates  # created right after the driver pod, before the rest
    # every claim made from a template carries the app's selector label (the DRA driver's `app` metric label)
    assert {t["spec"]["metadata"]["labels"]["spark-app-selector"] for t in manifests.claim_templates} == {GEN.app_id}
    pod = manifests.driver_pod
    container = pod["spec"]["containers"][-1]
    assert pod["spec"]["resourceClaims"] == [
        {"name": "accelerators", "resourceClaimTemplateName": by_role["driver"]["metadata"]["name"]}]
    assert container["resources"]["claims"] == [{"name": "accelerators"}]
    assert "nec.com/ve" not in container["resources"]["limits"]  # the claim serves it; a limit would add a 2nd VE
    executor = yaml.safe_load(manifests.extra_config_maps[0]["data"]["podspec-configmap-key"])
    assert executor["spec"]["resourceClaims"][0]["resourceClaimTemplateName"] == by_role["executor"]["metadata"]["name"]
    assert executor["spec"]["containers"][0]["resources"]["claims"] == [{"name": "accelerators"}]
    assert executor["metadata"]["annotations"][CLAIMED_ANNOTATION] == "nec.com/ve"
    assert manifests.driver_conf["spark.kubernetes.executor.podTemplateFile"].endswith("pod-spec-template.yml")
    # two submissions of one app never share a template
    other = build(app, Generated("spark-4567", "zzz999yyy", "svc1", "cm1", "dir-2", 1, "alice"))
    assert other.claim_templates[0]["metadata"]["name"] != manifests.claim_templates[0]["metadata"]["name"]


def test_a_users_executor_template_keeps_its_content(tmp_path: Path) -> None:
    template = tmp_path / "exec.yaml"
    template.write_text(yaml.safe_dump({"kind": "Pod", "metadata": {"labels": {"team": "a"}}, "spec": {
        "containers": [{"name": "side"}, {"name": "main", "resources": {"claims": [{"name": "other"}]}}],
        "resourceClaims": [{"name": "other", "resourceClaimName": "shared"}]}}))
    app = resolve(_request("team-a", **{"spark.kubernetes.executor.podTemplateFile": str(template),
                                        "spark.kubernetes.executor.podTemplateContainerName": "main"})).placed(None)
    pod = yaml.safe_load(build(app, GEN).extra_config_maps[0]["data"]["podspec-configmap-key"])
    assert pod["metadata"]["labels"] == {"team": "a"}
    assert [c["name"] for c in pod["spec"]["resourceClaims"]] == ["other", "accelerators"]
    assert pod["spec"]["containers"][1]["resources"]["claims"] == [{"name": "other"}, {"name": "accelerators"}]
    assert "resources" not in pod["spec"]["containers"][0]


def test_bad_dra_confs_fail_before_anything() -> None:
    with pytest.raises(ConfigError, match="numaNode"):
        resolve(_request("team-a", **{"spark.kubeaccel.dra.executor.ve.numaNode": "x"}))


# ---- against the real API server -------------------------------------------------------------------------


def _templates(kube: Kube, namespace: str) -> list[dict[str, Any]]:
    from lightkube.resources.resource_v1 import ResourceClaimTemplate

    return kube.list_raw(ResourceClaimTemplate, namespace)


@pytest.mark.cluster
def test_template_is_created_owned_and_deleted_with_the_driver(kube: Kube, spark_namespace: str,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from lightkube.resources.core_v1 import Pod

    monkeypatch.setenv("SPARK_USER", SPARK_USER)
    sid = submit(_request(spark_namespace, kube.server), kube=kube, check_quota=False)
    driver = kube.get(Pod, sid.pod, namespace=spark_namespace)
    (template,) = _templates(kube, spark_namespace)
    assert template["metadata"]["ownerReferences"][0]["uid"] == driver.metadata.uid
    assert template["spec"]["spec"]["devices"]["requests"][0]["exactly"]["deviceClassName"] == "ve.nec.com"
    kube.delete(Pod, sid.pod, namespace=spark_namespace, grace_period=0)
    wait_for("the garbage collector to delete the template", lambda: _templates(kube, spark_namespace) == [], 90)


@pytest.mark.cluster
def test_a_failure_after_the_template_rolls_it_back(kube: Kube, spark_namespace: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from lightkube.resources.core_v1 import Pod

    monkeypatch.setenv("SPARK_USER", SPARK_USER)
    generated = Generated.fresh(SPARK_USER)
    kube.create({"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"clash-{generated.name_id}-driver-svc"},
                 "spec": {"clusterIP": "None", "ports": [{"port": 1}]}}, namespace=spark_namespace)
    with pytest.raises(KubeaccelError, match="already exists"):
        submit(_request(spark_namespace, kube.server, "clash"), kube=kube, generated=generated, check_quota=False)
    assert kube.list(Pod, namespace=spark_namespace) == []
    assert _templates(kube, spark_namespace) == []

    # a CEL expression only the API server can judge: refused with its message, the driver rolled back
    bad = {"spark.kubeaccel.dra.executor.ve.selector": "device.attributes[ no"}
    with pytest.raises(KubeaccelError) as info:
        submit(_request(spark_namespace, kube.server, **bad), kube=kube, check_quota=False)
    assert "selector" in info.value.message.lower() or "cel" in info.value.message.lower(), info.value.message
    assert kube.list(Pod, namespace=spark_namespace) == []
    assert _templates(kube, spark_namespace) == []


@pytest.mark.cluster
def test_quota_preflight_counts_deviceclass_devices(kube: Kube, spark_namespace: str,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from lightkube.resources.core_v1 import Pod

    monkeypatch.setenv("SPARK_USER", SPARK_USER)
    create_tenant(kube, spark_namespace, {"ve.nec.com.deviceclass.resource.k8s.io/devices": "4"})
    with pytest.raises(QuotaError) as info:
        submit(_request(spark_namespace, kube.server), kube=kube)
    assert "ve.nec.com.deviceclass.resource.k8s.io/devices: the app needs 6" in info.value.message
    assert kube.list(Pod, namespace=spark_namespace) == []
    # two executors of 2 VEs fit; then the admitted app's executors still to come leave no room for one more
    submit(_request(spark_namespace, kube.server, **{"spark.executor.instances": "2"}), kube=kube)
    with pytest.raises(QuotaError, match="other apps' executors still need"):
        submit(_request(spark_namespace, kube.server, **{"spark.executor.instances": "1"}), kube=kube)


@pytest.mark.cluster
def test_admission_policy_removes_the_limits_spark_adds(kube: Kube, spark_namespace: str) -> None:
    """An executor-like pod (claim + annotation + Spark's limit) is stored without the limit; others keep it."""
    policy, binding = list(yaml.safe_load_all(POLICY.read_text()))
    kube.apply(policy)
    kube.apply(binding)

    def pod(name: str, annotated: bool) -> dict[str, Any]:
        return {"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": name, "annotations": {CLAIMED_ANNOTATION: "nec.com/ve"} if annotated else {}},
            "spec": {"nodeSelector": {"type": "kwok"}, "resourceClaims": [
                {"name": "accelerators", "resourceClaimTemplateName": "t"}], "containers": [
                {"name": "side", "image": "busybox", "resources": {"limits": {"nec.com/ve": "1"}}},
                {"name": "executor", "image": "busybox", "resources": {
                    "limits": {"nec.com/ve": "2", "memory": "1Gi"}, "claims": [{"name": "accelerators"}]}}]}}

    name = f"exec-{uuid.uuid4().hex[:6]}"

    def limits(created: dict[str, Any]) -> list[dict[str, Any]]:
        return [c["resources"] for c in created["spec"]["containers"]]

    def create_until_mutated() -> dict[str, Any]:
        # a new policy takes a moment to reach the admission chain: create until it has acted
        created = kube.create(pod(name, True), namespace=spark_namespace)
        if "nec.com/ve" not in json.dumps(limits(created)[1]):
            return created
        from lightkube.resources.core_v1 import Pod

        kube.delete(Pod, name, namespace=spark_namespace, grace_period=0)
        wait_for("the pod to go", lambda: not kube.list(Pod, namespace=spark_namespace), 30)
        return {}

    holder: dict[str, Any] = {}
    wait_for("the admission policy to act", lambda: bool(holder.update(create_until_mutated()) or holder), 60, 2)
    side, executor = limits(holder)
    assert executor["limits"] == {"memory": "1Gi"} and "nec.com/ve" not in executor.get("requests", {})
    assert side["limits"] == {"nec.com/ve": "1"}  # only Spark's container (the last) is changed
    plain = kube.create(pod(f"plain-{uuid.uuid4().hex[:6]}", False), namespace=spark_namespace)
    assert limits(plain)[1]["limits"]["nec.com/ve"] == "2"
