"""Kube.create and Kube.list_raw against the real apiserver: plain JSON in and out, errors translated.

create POSTs the manifest as it is (no lightkube model in between), so these pin that the namespace
comes from the argument or else the manifest, that the API's own validation errors still arrive as
a ConfigError naming the object, that a clash is a clear 409 error, and that an unknown kind is
refused before any request.
"""

from __future__ import annotations

import gc
import uuid

import pytest

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
