"""A `spark submit` command line -> the SparkApplication that runs the same app (`--emit-application`). Pure
apart from reading a --properties-file.

The command line's conf is merged first (spark-submit's precedence), so what the YAML says is what the
command would have run: the confs with a spec field of their own (image, pull policy, cores, memory,
instances, ServiceAccount, packages) become that field, the application's dependencies become `deps`,
and every other conf stays in `sparkConf`. `kubeaccel.operator.mapping.to_submission` turns it back into the same conf.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from kubeaccel.errors import ConfigError
from kubeaccel.spark.conf import SubmitRequest, resolve_conf, split_list
from kubeaccel.spark.labels import name_prefix_base

Json = dict[str, Any]
# kubeflow's API, which kubeaccel's controller (kubeaccel.operator) serves
API_VERSION = "sparkoperator.k8s.io/v1beta2"
APP_KIND = "SparkApplication"
IN_CLUSTER_MASTER = "k8s://https://kubernetes.default.svc"

# conf key -> (spec path); the inverse of what mapping.to_submission sets
_FIELDS: dict[str, tuple[str, ...]] = {
    "spark.kubernetes.container.image": ("image",),
    "spark.kubernetes.container.image.pullPolicy": ("imagePullPolicy",),
    "spark.driver.memory": ("driver", "memory"),
    "spark.executor.memory": ("executor", "memory"),
    "spark.kubernetes.authenticate.driver.serviceAccountName": ("driver", "serviceAccount"),
    "spark.kubernetes.authenticate.executor.serviceAccountName": ("executor", "serviceAccount"),
    "spark.driver.memoryOverhead": ("driver", "memoryOverhead"),
    "spark.executor.memoryOverhead": ("executor", "memoryOverhead"),
}
_INT_FIELDS: dict[str, tuple[str, ...]] = {
    "spark.driver.cores": ("driver", "cores"),
    "spark.executor.cores": ("executor", "cores"),
    "spark.executor.instances": ("executor", "instances"),
}
_LIST_FIELDS: dict[str, tuple[str, ...]] = {
    "spark.jars.packages": ("deps", "packages"),
    "spark.jars.repositories": ("deps", "repositories"),
    "spark.jars.excludes": ("deps", "excludePackages"),
    "spark.kubernetes.container.image.pullSecrets": ("imagePullSecrets",),
}
# what spark-submit itself derives, or the controller sets from the app's own metadata
_DERIVED = {
    "spark.master",
    "spark.submit.deployMode",
    "spark.app.name",
    "spark.kubernetes.namespace",
    "spark.jars",
    "spark.files",
    "spark.archives",
    "spark.submit.pyFiles",
}


def _put(spec: Json, path: tuple[str, ...], value: Any) -> None:
    node = spec
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value


def _app_type(request: SubmitRequest) -> str:
    if request.is_python:
        return "Python"
    if request.is_r:
        return "R"
    return "Scala"


def application_for(request: SubmitRequest) -> Json:
    """The SparkApplication manifest for the command line."""
    if request.master is None and "spark.master" not in request.conf and request.properties_file is None:
        request = dataclasses.replace(request, master=IN_CLUSTER_MASTER)  # the controller sets its own
    conf = resolve_conf(request)
    name = name_prefix_base(conf["spark.app.name"])[:253].strip("-.")
    if not name:
        raise ConfigError(
            f"app name {conf['spark.app.name'][:100]!r} makes no Kubernetes object name",
            hint="pass --name with letters or digits, e.g. --name etl",
        )
    spec: Json = {"type": _app_type(request), "mode": "cluster", "mainApplicationFile": request.app_resource}
    if request.main_class and not (request.is_python or request.is_r):
        spec["mainClass"] = request.main_class
    if request.app_args:
        spec["arguments"] = list(request.app_args)
    jars = split_list(conf.get("spark.jars", ""))
    if not (request.is_python or request.is_r) and jars and jars[-1] == request.app_resource:
        jars = jars[:-1]  # spark-submit adds the app's jar itself
    deps = {
        "jars": jars,
        "files": split_list(conf.get("spark.files", "")),
        "pyFiles": split_list(conf.get("spark.submit.pyFiles", "")),
        "archives": split_list(conf.get("spark.archives", "")),
    }
    spark_conf: dict[str, str] = {}
    for key, value in conf.items():
        if key in _DERIVED:
            continue
        if key in _FIELDS:
            _put(spec, _FIELDS[key], value)
        elif key in _INT_FIELDS and value.strip().isdigit() and (int(value) >= 1 or key == "spark.executor.instances"):
            _put(spec, _INT_FIELDS[key], int(value))
        elif key in _LIST_FIELDS:
            _put(spec, _LIST_FIELDS[key], split_list(value))
        else:
            spark_conf[key] = value
    for key, values in deps.items():
        if values:
            spec.setdefault("deps", {})[key] = values
    if spark_conf:
        spec["sparkConf"] = dict(sorted(spark_conf.items()))
    metadata: Json = {"name": name}
    if conf.get("spark.kubernetes.namespace"):
        metadata["namespace"] = conf["spark.kubernetes.namespace"]
    return {"apiVersion": API_VERSION, "kind": APP_KIND, "metadata": metadata, "spec": spec}
