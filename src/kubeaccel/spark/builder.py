"""The objects Spark's Kubernetes submission client creates for a cluster-mode app, as plain data.

Pure: resolved conf + generated identifiers in, Kubernetes manifests (dicts) out. The field-for-field
facts (labels, ports, env, volume names, the conf ConfigMap, the headless Service, the NetworkPolicy)
are Spark 4.3's; the reference test compares this output against the real spark-submit's.
"""

from __future__ import annotations

import copy
import re
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from kubeaccel.errors import ConfigError
from kubeaccel.spark.conf import PYTHON_RUNNER, R_RUNNER, SubmitRequest, format_properties
from kubeaccel.spark.resources import accelerators, cpu_request, default_overhead_factor, pod_memory_mib

SPARK_VERSION = "4.3.0"
CONF_DIR = "/opt/spark/conf"
PROPERTIES_FILE = "spark.properties"
POD_TEMPLATE_DIR = "/opt/spark/pod-template"
POD_TEMPLATE_FILE = "pod-spec-template.yml"
POD_TEMPLATE_KEY = "podspec-configmap-key"
DRIVER_CONTAINER = "spark-kubernetes-driver"
LABEL_APP_ID = "spark-app-selector"
LABEL_ROLE = "spark-role"
LABEL_APP_NAME = "spark-app-name"
LABEL_VERSION = "spark-version"

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Generated:
    """Everything Spark makes up per submission; injected so the builder stays deterministic."""

    app_id: str
    name_id: str
    service_id: str
    config_map_id: str
    local_dir_id: str
    submit_time_ms: int
    spark_user: str

    @classmethod
    def fresh(cls, spark_user: str) -> Generated:
        return cls(
            app_id="spark-" + uuid.uuid4().hex,
            name_id=unique_id(),
            service_id=unique_id(),
            config_map_id=unique_id(),
            local_dir_id=str(uuid.uuid4()),
            submit_time_ms=int(time.time() * 1000),
            spark_user=spark_user,
        )


def unique_id() -> str:
    """Spark's short unique ID: 3 random bytes then the low 40 bits of the clock in ms, in hex."""
    return secrets.token_hex(3) + format(int(time.time() * 1000) & 0xFFFFFFFFFF, "x")


def _sanitize(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9\-]", "-", text.strip().lower()))


def app_name_label(app_name: str) -> str:
    return _sanitize(app_name)[:63].strip("-")


@dataclass
class AppManifests:
    """The driver pod plus what is created after it, owned by it."""

    namespace: str
    driver_pod: Manifest
    service: Manifest
    config_map: Manifest
    network_policy: Manifest
    extra_config_maps: list[Manifest] = field(default_factory=list)
    driver_conf: dict[str, str] = field(default_factory=dict)

    @property
    def driver_pod_name(self) -> str:
        name: str = self.driver_pod["metadata"]["name"]
        return name

    @property
    def owned(self) -> list[Manifest]:
        """Created after the pod, in Spark's order, each with an owner reference to the pod."""
        return [self.service, self.network_policy, *self.extra_config_maps, self.config_map]


def owner_reference(pod_name: str, pod_uid: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "Pod", "controller": True, "name": pod_name, "uid": pod_uid}


def _prefixed(conf: Mapping[str, str], prefix: str) -> dict[str, str]:
    return {k[len(prefix) :]: v for k, v in conf.items() if k.startswith(prefix) and len(k) > len(prefix)}


def _int_conf(conf: Mapping[str, str], key: str, default: int) -> int:
    raw = conf.get(key)
    if raw is None:
        return default
    if not re.fullmatch(r"[0-9]+", raw.strip()):
        raise ConfigError(f"{key}={raw!r} is not a port number", hint=f"e.g. {key}={default}")
    return int(raw)


def build(
    request: SubmitRequest,
    conf: Mapping[str, str],
    namespace: str,
    generated: Generated,
    *,
    driver_template: Manifest | None = None,
    executor_template_text: str | None = None,
) -> AppManifests:
    """Spark's cluster-mode objects for `request` with the already resolved `conf`."""
    conf = dict(conf)
    if request.is_python:
        conf["spark.kubernetes.resource.type"] = "python"
    elif request.is_r:
        conf["spark.kubernetes.resource.type"] = "r"
    else:
        conf["spark.kubernetes.resource.type"] = "java"
    image = conf.get("spark.kubernetes.driver.container.image") or conf.get("spark.kubernetes.container.image")
    if not image:
        raise ConfigError(
            "no container image for the driver",
            hint="set spark.kubernetes.container.image (or spark.kubernetes.driver.container.image)",
        )
    pull_policy = conf.get("spark.kubernetes.container.image.pullPolicy", "IfNotPresent")
    if pull_policy not in ("Always", "IfNotPresent", "Never"):
        raise ConfigError(
            f"spark.kubernetes.container.image.pullPolicy={pull_policy!r} is not a pull policy",
            hint="use Always, IfNotPresent or Never",
        )
    app_name = conf["spark.app.name"]
    prefix = _sanitize(f"{app_name}-{generated.name_id}").lstrip("-")
    pod_name = conf.get("spark.kubernetes.driver.pod.name") or f"{prefix}-driver"
    service_name = f"{prefix}-driver-svc"
    if len(service_name) > 63:
        service_name = f"spark-{generated.service_id}-driver-svc"
    config_map_name = f"spark-drv-{generated.config_map_id}-conf-map"
    driver_port = _int_conf(conf, "spark.driver.port", 7078)
    block_manager_port = _int_conf(
        conf, "spark.driver.blockManager.port", _int_conf(conf, "spark.blockManager.port", 7079)
    )
    ui_port = _int_conf(conf, "spark.ui.port", 4040)
    connect_port = _int_conf(conf, "spark.connect.grpc.binding.port", 15002)

    labels = {
        LABEL_VERSION: SPARK_VERSION,
        LABEL_APP_ID: generated.app_id,
        LABEL_APP_NAME: app_name_label(app_name),
        LABEL_ROLE: "driver",
        **_prefixed(conf, "spark.kubernetes.driver.label."),
    }
    annotations = {
        k: v.replace("{{APP_ID}}", generated.app_id).replace("{{EXECUTOR_ID}}", "")
        for k, v in _prefixed(conf, "spark.kubernetes.driver.annotation.").items()
    }

    pod, container, sidecars = _from_template(driver_template, conf)
    metadata = pod.setdefault("metadata", {})
    metadata.pop("namespace", None)
    metadata["name"] = pod_name
    metadata["labels"] = {**metadata.get("labels", {}), **labels}
    if annotations or metadata.get("annotations"):
        metadata["annotations"] = {**metadata.get("annotations", {}), **annotations}

    memory = f"{pod_memory_mib(conf, 'driver')}Mi"
    resources = container.setdefault("resources", {})
    requests = resources.setdefault("requests", {})
    limits = resources.setdefault("limits", {})
    requests["cpu"] = cpu_request(conf, "driver")
    limit_cores = conf.get("spark.kubernetes.driver.limit.cores")
    if limit_cores:
        limits["cpu"] = limit_cores
    requests["memory"] = memory
    limits["memory"] = memory
    for accel in accelerators(conf, "driver"):
        limits[accel.resource_name] = str(accel.amount)
    accelerators(conf, "executor")  # validated here so a bad executor conf fails the submit, not the driver

    local_dir = f"/var/data/spark-{generated.local_dir_id}"
    container["name"] = container.get("name") or DRIVER_CONTAINER
    container["image"] = image
    container["imagePullPolicy"] = pull_policy
    container["ports"] = [
        *container.get("ports", []),
        {"containerPort": driver_port, "name": "driver-rpc-port", "protocol": "TCP"},
        {"containerPort": block_manager_port, "name": "blockmanager", "protocol": "TCP"},
        {"containerPort": ui_port, "name": "spark-ui", "protocol": "TCP"},
        {"containerPort": connect_port, "name": "spark-connect", "protocol": "TCP"},
    ]
    container["env"] = [
        *container.get("env", []),
        {"name": "SPARK_USER", "value": generated.spark_user},
        {"name": "SPARK_APPLICATION_ID", "value": generated.app_id},
        *({"name": k, "value": v} for k, v in _prefixed(conf, "spark.kubernetes.driverEnv.").items()),
        *_python_env(request, conf),
        {
            "name": "SPARK_DRIVER_BIND_ADDRESS",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}},
        },
        {"name": "SPARK_LOCAL_DIRS", "value": local_dir},
        {"name": "SPARK_CONF_DIR", "value": CONF_DIR},
    ]
    container.setdefault("securityContext", {}).setdefault("allowPrivilegeEscalation", False)
    main_class = request.main_class
    if request.is_python:
        main_class = PYTHON_RUNNER
    elif request.is_r:
        main_class = R_RUNNER
    container["args"] = [
        "driver",
        "--properties-file",
        f"{CONF_DIR}/{PROPERTIES_FILE}",
        "--class",
        str(main_class),
        request.app_resource,
        *request.app_args,
    ]

    spec = pod.setdefault("spec", {})
    mounts: list[Manifest] = []
    volumes: list[Manifest] = []
    extra_config_maps: list[Manifest] = []
    if executor_template_text is not None:
        template_map = f"{prefix}-driver-podspec-conf-map"
        mounts.append({"mountPath": POD_TEMPLATE_DIR, "name": "pod-template-volume"})
        volumes.append(
            {
                "configMap": {"items": [{"key": POD_TEMPLATE_KEY, "path": POD_TEMPLATE_FILE}], "name": template_map},
                "name": "pod-template-volume",
            }
        )
        extra_config_maps.append(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": template_map},
                "data": {POD_TEMPLATE_KEY: executor_template_text},
                "immutable": True,
            }
        )
    local_volume: Manifest = {"emptyDir": {}, "name": "spark-local-dir-1"}
    if conf.get("spark.kubernetes.local.dirs.tmpfs", "false").lower() == "true":
        local_volume["emptyDir"] = {"medium": "Memory"}
    mounts += [
        {"mountPath": local_dir, "name": "spark-local-dir-1"},
        {"mountPath": CONF_DIR, "name": "spark-conf-volume-driver"},
    ]
    volumes += [
        local_volume,
        {
            "configMap": {
                "items": [{"key": PROPERTIES_FILE, "mode": 420, "path": PROPERTIES_FILE}],
                "name": config_map_name,
            },
            "name": "spark-conf-volume-driver",
        },
    ]
    container["volumeMounts"] = [*container.get("volumeMounts", []), *mounts]
    spec["containers"] = [*sidecars, container]
    spec["restartPolicy"] = "Never"
    spec["volumes"] = [*spec.get("volumes", []), *volumes]
    node_selector = {
        **_prefixed(conf, "spark.kubernetes.node.selector."),
        **_prefixed(conf, "spark.kubernetes.driver.node.selector."),
    }
    if node_selector:
        spec["nodeSelector"] = {**spec.get("nodeSelector", {}), **node_selector}
    service_account = conf.get("spark.kubernetes.authenticate.driver.serviceAccountName")
    if service_account:
        spec["serviceAccount"] = service_account
        spec["serviceAccountName"] = service_account
    pull_secrets = [
        s.strip() for s in conf.get("spark.kubernetes.container.image.pullSecrets", "").split(",") if s.strip()
    ]
    if pull_secrets:
        spec["imagePullSecrets"] = [*spec.get("imagePullSecrets", []), *({"name": s} for s in pull_secrets)]
    scheduler = conf.get("spark.kubernetes.driver.scheduler.name") or conf.get("spark.kubernetes.scheduler.name")
    if scheduler:
        spec["schedulerName"] = scheduler

    driver_conf = dict(conf)
    driver_conf.update(
        {
            "spark.app.id": generated.app_id,
            "spark.app.submitTime": str(generated.submit_time_ms),
            "spark.kubernetes.namespace": namespace,
            "spark.kubernetes.driver.pod.name": pod_name,
            "spark.kubernetes.submitInDriver": "true",
            "spark.kubernetes.memoryOverheadFactor": repr(default_overhead_factor(conf)),
            "spark.driver.host": f"{service_name}.{namespace}.svc",
            "spark.driver.port": str(driver_port),
            "spark.driver.blockManager.port": str(block_manager_port),
        }
    )
    if executor_template_text is not None:
        driver_conf["spark.kubernetes.executor.podTemplateFile"] = f"{POD_TEMPLATE_DIR}/{POD_TEMPLATE_FILE}"
    stamp = datetime.fromtimestamp(generated.submit_time_ms / 1000, UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
    properties = format_properties(
        driver_conf, header=[f"Java properties built from Kubernetes config map with name: {config_map_name}", stamp]
    )
    config_map: Manifest = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": config_map_name},
        "data": {PROPERTIES_FILE: properties, "spark.kubernetes.namespace": namespace},
        "immutable": True,
    }
    ip_families = conf.get("spark.kubernetes.driver.service.ipFamilies", "IPv4")
    service: Manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": service_name,
            "labels": {LABEL_APP_ID: generated.app_id, **_prefixed(conf, "spark.kubernetes.driver.service.label.")},
        },
        "spec": {
            "clusterIP": "None",
            "ipFamilies": [f.strip() for f in ip_families.split(",")],
            "ipFamilyPolicy": conf.get("spark.kubernetes.driver.service.ipFamilyPolicy", "SingleStack"),
            "ports": [
                {"name": "driver-rpc-port", "port": driver_port, "targetPort": driver_port},
                {"name": "blockmanager", "port": block_manager_port, "targetPort": block_manager_port},
                {"name": "spark-ui", "port": ui_port, "targetPort": ui_port},
                {"appProtocol": "grpc", "name": "spark-connect", "port": connect_port, "targetPort": connect_port},
            ],
            "publishNotReadyAddresses": False,
            "selector": dict(labels),
        },
    }
    service_annotations = _prefixed(conf, "spark.kubernetes.driver.service.annotation.")
    if service_annotations:
        service["metadata"]["annotations"] = service_annotations
    network_policy: Manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": f"{prefix}-policy", "labels": {LABEL_APP_ID: generated.app_id}},
        "spec": {
            "ingress": [{"from": [{"podSelector": {"matchLabels": {LABEL_APP_ID: generated.app_id}}}]}],
            "podSelector": {"matchLabels": {LABEL_ROLE: "executor", LABEL_APP_ID: generated.app_id}},
        },
    }
    return AppManifests(
        namespace,
        {"apiVersion": "v1", "kind": "Pod", **pod},
        service,
        config_map,
        network_policy,
        extra_config_maps,
        driver_conf,
    )


def _python_env(request: SubmitRequest, conf: Mapping[str, str]) -> list[Manifest]:
    """The interpreters Spark's Python driver step passes on. Spark also copies the submitter's own
    PYSPARK_PYTHON environment variable, a path on the submitting machine; we take only the confs."""
    if not request.is_python:
        return []
    python = conf.get("spark.pyspark.python")
    driver_python = conf.get("spark.pyspark.driver.python") or python
    pairs = [("PYSPARK_PYTHON", python), ("PYSPARK_DRIVER_PYTHON", driver_python)]
    return [{"name": name, "value": value} for name, value in pairs if value]


def _from_template(template: Manifest | None, conf: Mapping[str, str]) -> tuple[Manifest, Manifest, list[Manifest]]:
    """Split a pod template into (pod, the Spark container, the other containers), as Spark selects it."""
    if template is None:
        return {"metadata": {}, "spec": {}}, {}, []
    pod = copy.deepcopy(template)
    pod.pop("apiVersion", None)
    pod.pop("kind", None)
    pod.pop("status", None)
    containers = list(pod.get("spec", {}).pop("containers", None) or [])
    wanted = conf.get("spark.kubernetes.driver.podTemplateContainerName")
    index = next((i for i, c in enumerate(containers) if wanted and c.get("name") == wanted), 0 if containers else None)
    if index is None:
        return pod, {}, []
    container = containers.pop(index)
    return pod, container, containers
