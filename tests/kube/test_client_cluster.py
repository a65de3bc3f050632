"""The door against the real apiserver: create/list_raw as plain JSON, and every refusal typed.

Pins that the namespace comes from the argument or else the manifest, that the API's own validation
errors arrive as an InvalidError naming the field, that a clash is AlreadyExistsError, that an unknown
kind is refused before any request, and that a 403 is told apart by who refused it (RBAC, the quota,
Pod Security admission) with the documented exit codes 5, 6 and 2, and an http:// client on the https
port gets "unreachable" (4), not a traceback.
"""

from __future__ import annotations

import gc
import uuid
from pathlib import Path

import pytest
import yaml

from kubeaccel import errors
from kubeaccel.errors import ConfigError, KubeaccelError
from kubeaccel.kube.client import Kube

pytestmark = pytest.mark.cluster


def _config_map(name: str, **metadata: str) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, **metadata}, "data": {"k": "v"}}


def test_create_returns_the_stored_object_as_json(kube: Kube, spark_namespace: str) -> None:
    from lightkube.resources.core_v1 import ConfigMap

    created = kube.create(_config_map("plain"), namespace=spark_namespace)
    assert created["metadata"]["namespace"] == spark_namespace
    assert created["metadata"]["uid"]
    assert created["data"] == {"k": "v"}
    assert created["metadata"]["managedFields"][0]["manager"] == "kubeaccel"
    assert kube.get(ConfigMap, "plain", namespace=spark_namespace).metadata.uid == created["metadata"]["uid"]


def test_create_takes_the_namespace_from_the_manifest_when_none_is_given(kube: Kube, spark_namespace: str) -> None:
    created = kube.create(_config_map("from-manifest", namespace=spark_namespace))
    assert created["metadata"]["namespace"] == spark_namespace


def test_create_errors_are_translated(kube: Kube, spark_namespace: str) -> None:
    kube.create(_config_map("twice"), namespace=spark_namespace)
    with pytest.raises(KubeaccelError) as clash:
        kube.create(_config_map("twice"), namespace=spark_namespace)
    assert clash.value.message.startswith("cannot create configmap twice in namespace")
    assert "already exists" in clash.value.message

    invalid = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "no-containers"}, "spec": {"containers": []}}
    with pytest.raises(ConfigError) as rejected:
        kube.create(invalid, namespace=spark_namespace)
    assert rejected.value.message.startswith("the API server rejected pod no-containers")
    assert "spec.containers" in rejected.value.message

    with pytest.raises(ConfigError) as unknown:
        kube.create({"apiVersion": "v1", "kind": "NoSuchKind", "metadata": {"name": "x"}}, namespace=spark_namespace)
    assert "cannot encode NoSuchKind" in unknown.value.message


def test_list_raw_filters_by_label(kube: Kube, spark_namespace: str) -> None:
    from lightkube.resources.core_v1 import ConfigMap

    tag = uuid.uuid4().hex[:6]
    for index in range(3):
        manifest = _config_map(f"labelled-{index}")
        manifest["metadata"] = {"name": f"labelled-{index}", "labels": {"tag": tag}}
        kube.create(manifest, namespace=spark_namespace)
    kube.create(_config_map("unlabelled"), namespace=spark_namespace)
    found = kube.list_raw(ConfigMap, spark_namespace, labels={"tag": tag})
    assert sorted(item["metadata"]["name"] for item in found) == ["labelled-0", "labelled-1", "labelled-2"]
    assert gc.isenabled(), "the collector is paused only while a page is decoded"


def test_quota_refusal_is_exit_6(kube: Kube, spark_namespace: str) -> None:
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "two-maps"},
            "spec": {"hard": {"count/configmaps": "2"}},
        },
        namespace=spark_namespace,
    )
    # wait until the quota controller has counted the namespace (kube-root-ca.crt may still be on its way)
    import time

    from lightkube.resources.core_v1 import ResourceQuota

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        quota = kube.get(ResourceQuota, "two-maps", namespace=spark_namespace)
        if quota.status and quota.status.used:
            break
        time.sleep(0.2)
    # create until the quota refuses: 2 fit at most, whether or not kube-root-ca.crt was counted yet
    refused = None
    for n in range(6):
        try:
            kube.create(_config_map(f"map-{n}"), namespace=spark_namespace)
        except errors.QuotaExceededError as exc:
            refused = exc
            break
        time.sleep(0.3)
    assert refused is not None, "the quota admitted more ConfigMaps than it allows"
    assert refused.exit_code == 6 and refused.reason == "Forbidden"


def test_admission_refusal_is_not_an_rbac_problem(kube: Kube, spark_namespace: str) -> None:
    from lightkube.resources.core_v1 import Namespace

    kube.client.patch(
        Namespace,
        spark_namespace,
        {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}},
    )
    privileged = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "privileged"},
        "spec": {"containers": [{"name": "c", "image": "i", "securityContext": {"privileged": True}}]},
    }
    with pytest.raises(errors.AdmissionRefusedError) as refused:
        kube.create(privileged, namespace=spark_namespace)
    assert refused.value.exit_code == 2
    assert "RBAC" not in (refused.value.hint or "")


def test_rbac_refusal_is_exit_5(kube: Kube, kubeconfig: Path, spark_namespace: str, tmp_path: Path) -> None:
    from lightkube.models.authentication_v1 import TokenRequestSpec
    from lightkube.models.meta_v1 import ObjectMeta
    from lightkube.resources.core_v1 import ServiceAccount

    # a ServiceAccount with no RBAC permissions at all, with a real bearer token
    kube.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "nobody", "namespace": spark_namespace}},
        namespace=spark_namespace,
    )
    request = ServiceAccount.Token(
        metadata=ObjectMeta(name="nobody", namespace=spark_namespace), spec=TokenRequestSpec(audiences=[])
    )
    token = kube.client.create(request, "nobody", namespace=spark_namespace).status.token
    config = yaml.safe_load(kubeconfig.read_text())
    for user in config["users"]:
        user["user"] = {"token": token}
    (tmp_path / "nobody").write_text(yaml.safe_dump(config))
    nobody = Kube.connect(kubeconfig=tmp_path / "nobody")
    with pytest.raises(errors.ForbiddenError) as refused:
        nobody.create(_config_map("nope"), namespace=spark_namespace)
    assert refused.value.exit_code == 5 and "RBAC" in (refused.value.hint or "")


def test_http_on_the_https_port_is_unreachable_not_a_traceback(kubeconfig: Path, kube: Kube) -> None:
    from lightkube.resources.core_v1 import Pod

    plain = Kube.connect(kubeconfig=kubeconfig, server=kube.server.replace("https://", "http://"))
    with pytest.raises(errors.UnavailableError) as unreachable:
        plain.list(Pod, namespace="default")
    assert unreachable.value.exit_code == 4 and unreachable.value.retryable
