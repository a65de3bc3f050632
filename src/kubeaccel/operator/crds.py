"""The CustomResourceDefinitions of SparkApplication and ScheduledSparkApplication, generated from the models.

Pure: pydantic's JSON Schema of `api.SparkApplicationSpec` (and friends) is turned into a Kubernetes
structural schema: `$ref`s inlined, optional fields without the `null` branch, Kubernetes core types as
objects that keep their unknown fields, titles and defaults dropped (the controller applies the defaults,
so what is stored is what the user wrote). CEL rules (`x-kubernetes-validations`) and patterns carried by
the models make `kubectl apply` refuse what can be refused without the cluster: a malformed cron, a
negative instance count, a Java app without mainClass.

    kubeaccel operator crds | kubectl apply -f -
"""

from __future__ import annotations

import copy
from typing import Any

from pydantic import BaseModel

from kubeaccel.operator import api

_DROP = ("title", "default", "description")


def structural(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON Schema as a Kubernetes structural schema (OpenAPI v3 subset)."""
    schema = model.model_json_schema(by_alias=True, mode="validation")
    definitions = schema.pop("$defs", {})
    converted: dict[str, Any] = _convert(schema, definitions)
    return converted


def _convert(node: Any, definitions: dict[str, Any]) -> Any:
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(definitions[node["$ref"].rsplit("/", 1)[-1]])
        merged = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return _convert(merged, definitions)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(branches) == 1:
            return _convert({**branches[0], **rest}, definitions)
        raise ValueError(f"a union the CRD schema cannot express: {node}")
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP:
            continue
        if key == "properties":
            out[key] = {name: _convert(prop, definitions) for name, prop in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = _convert(value, definitions)
        elif key == "additionalProperties" and value is False:
            continue  # pruning already drops unknown fields
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = copy.deepcopy(value)
    if out.get("type") == "object" and "properties" not in out and out.get("additionalProperties") in (True, None):
        # dict[str, Any]: a Kubernetes type (Volume, Affinity, a pod template) checked when the pod is made
        out.pop("additionalProperties", None)
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "enum" in out and "type" not in out:
        out["type"] = "string"
    if "enum" in out and out.get("type") == "string":
        out["enum"] = [str(v) for v in out["enum"]]
    return out


_STATUS_COLUMNS = [
    {"name": "Status", "type": "string", "jsonPath": ".status.applicationState.state"},
    {"name": "Attempts", "type": "string", "jsonPath": ".status.executionAttempts"},
    {"name": "Start", "type": "string", "jsonPath": ".status.lastSubmissionAttemptTime"},
    {"name": "Finish", "type": "string", "jsonPath": ".status.terminationTime"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]
_SCHEDULED_COLUMNS = [
    {"name": "Schedule", "type": "string", "jsonPath": ".spec.schedule"},
    {"name": "Suspend", "type": "string", "jsonPath": ".spec.suspend"},
    {"name": "Last Run", "type": "date", "jsonPath": ".status.lastRun"},
    {"name": "Last Run Name", "type": "string", "jsonPath": ".status.lastRunName"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _crd(  # noqa: PLR0917 - one CRD's facts, in the order the call sites list them
    kind: str, plural: str, short: str, spec: type[BaseModel], status: type[BaseModel], columns: list[dict[str, str]]
) -> dict[str, Any]:
    root = {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": structural(spec),
            "status": structural(status),
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{plural}.{api.GROUP}",
            "labels": {"app.kubernetes.io/managed-by": "kubeaccel"},
            # sparkoperator.k8s.io is a protected group: the API server wants the approval kubeflow's API has
            "annotations": {"api-approved.kubernetes.io": "https://github.com/kubeflow/spark-operator/pull/1298"},
        },
        "spec": {
            "group": api.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": plural.removesuffix("s"),
                "shortNames": [short],
            },
            "versions": [
                {
                    "name": api.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


def spark_application_crd() -> dict[str, Any]:
    return _crd(
        api.APP_KIND,
        "sparkapplications",
        "sparkapp",
        api.SparkApplicationSpec,
        api.SparkApplicationStatus,
        _STATUS_COLUMNS,
    )


def scheduled_spark_application_crd() -> dict[str, Any]:
    return _crd(
        api.SCHEDULED_KIND,
        "scheduledsparkapplications",
        "scheduledsparkapp",
        api.ScheduledSparkApplicationSpec,
        api.ScheduledSparkApplicationStatus,
        _SCHEDULED_COLUMNS,
    )


def all_crds() -> list[dict[str, Any]]:
    return [spark_application_crd(), scheduled_spark_application_crd()]


def crds_yaml() -> str:
    import yaml

    return "".join("---\n" + yaml.safe_dump(crd, sort_keys=False) for crd in all_crds())
