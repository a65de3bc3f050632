"""The generated CRDs: structural (pure checks), accepted by the real API server, and refusing bad specs.

Matrix: every schema node is structural (typed or preserve-unknown, no $ref/anyOf) | kubeflow-shaped
examples apply | each invalid spec is refused by `kubectl apply` naming its field (schema minimum, pattern,
CEL rule on the spec, on dynamicAllocation, on the cron schedule) | `kubeaccel operator crds` prints them.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from fixtures.cluster import LocalCluster, wait_for
from fixtures.sparkapps import ALL_APPS, SPARK_PI, SPARK_PI_SCHEDULED, load

from kubeaccel.operator import api, crds


def _nodes(node: Any, path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    if isinstance(node, dict):
        yield path, node
        for name, child in (node.get("properties") or {}).items():
            yield from _nodes(child, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                yield from _nodes(node[key], f"{path}[{key}]")


@pytest.mark.parametrize("crd", crds.all_crds(), ids=lambda c: c["spec"]["names"]["kind"])
def test_schema_is_structural(crd: dict[str, Any]) -> None:
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    for path, node in _nodes(schema):
        assert "$ref" not in node and "anyOf" not in node and "title" not in node, path
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields"), path


def test_schema_names_are_kubeflows() -> None:
    spec = crds.spark_application_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    names = set(spec["properties"])
    assert {"mainApplicationFile", "sparkConf", "hadoopConfigMap", "batchSchedulerOptions", "sparkUIOptions"} <= names
    status = crds.spark_application_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["status"]
    assert {"submissionID", "sparkApplicationId", "applicationState", "executorState"} <= set(status["properties"])
    assert "webUIServiceName" in status["properties"]["driverInfo"]["properties"]


@pytest.mark.parametrize("text", [*ALL_APPS.values(), SPARK_PI_SCHEDULED])
def test_examples_parse(text: str) -> None:
    document = load(text)
    model = api.ScheduledSparkApplication if document["kind"] == "ScheduledSparkApplication" else api.SparkApplication
    parsed = model.model_validate(document)
    assert parsed.wire()["spec"] == document["spec"]  # nothing lost, nothing renamed


def test_cli_prints_both() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "from kubeaccel.cli import main; main(['operator', 'crds'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kinds = [d["spec"]["names"]["kind"] for d in yaml.safe_load_all(out) if d]
    assert kinds == ["SparkApplication", "ScheduledSparkApplication"]


ESTABLISHED = "jsonpath={.status.conditions[?(@.type=='Established')].status}"


@pytest.fixture(scope="module")
def with_crds(cluster: LocalCluster) -> LocalCluster:
    cluster.apply(crds.crds_yaml())
    for crd in crds.all_crds():
        name = crd["metadata"]["name"]
        wait_for(
            f"CRD {name} established",
            lambda n=name: cluster.kubectl("get", "crd", n, "-o", ESTABLISHED).stdout == "True",
        )
    return cluster


def _with(text: str, path: str, value: Any) -> str:
    document = load(text)
    node = document
    keys = path.split(".")
    for key in keys[:-1]:
        node = node.setdefault(key, {})
    if value is None:
        node.pop(keys[-1], None)
    else:
        node[keys[-1]] = value
    return yaml.safe_dump(document)


@pytest.mark.cluster
@pytest.mark.parametrize("name, text", [*ALL_APPS.items(), ("scheduled", SPARK_PI_SCHEDULED)])
def test_examples_apply(with_crds: LocalCluster, name: str, text: str) -> None:
    namespace = with_crds.create_namespace("crd")
    with_crds.apply(text, namespace)


INVALID = [
    (SPARK_PI, "spec.executor.instances", -1, "spec.executor.instances"),
    (SPARK_PI, "spec.mainClass", None, "spec.mainClass"),
    (SPARK_PI, "spec.driver.memory", "lots", "spec.driver.memory"),
    (SPARK_PI, "spec.driver.cores", 0, "spec.driver.cores"),
    (SPARK_PI, "spec.type", "Go", "spec.type"),
    (SPARK_PI, "spec.restartPolicy.type", "Sometimes", "spec.restartPolicy.type"),
    (SPARK_PI, "spec.restartPolicy.onFailureRetries", -2, "spec.restartPolicy.onFailureRetries"),
    (SPARK_PI, "spec.dynamicAllocation", {"enabled": True, "minExecutors": 5, "maxExecutors": 2}, "minExecutors"),
    (SPARK_PI_SCHEDULED, "spec.schedule", "every minute", "spec.schedule"),
    (SPARK_PI_SCHEDULED, "spec.schedule", "* * * *", "spec.schedule"),
    (SPARK_PI_SCHEDULED, "spec.concurrencyPolicy", "Sometimes", "spec.concurrencyPolicy"),
]


@pytest.mark.cluster
@pytest.mark.parametrize("text, path, value, named", INVALID, ids=[f"{p}={v}" for _, p, v, _ in INVALID])
def test_invalid_spec_refused_naming_the_field(
    with_crds: LocalCluster, text: str, path: str, value: Any, named: str
) -> None:
    namespace = with_crds.create_namespace("crd")
    proc = with_crds.kubectl("apply", "-n", namespace, "-f", "-", input=_with(text, path, value), check=False)
    assert proc.returncode != 0, proc.stdout
    assert "is invalid" in proc.stderr and named in proc.stderr, proc.stderr
