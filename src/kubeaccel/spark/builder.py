"""The objects Spark's Kubernetes submission client creates for a cluster-mode app, as plain data.

Pure: a `ResolvedApp` + the identifiers generated per submission in, Kubernetes manifests (dicts) out,
one function per object: `driver_pod`, `conf_config_map`, `executor_template_config_map`, `service`,
`network_policy`, and `driver_conf` (what the conf ConfigMap carries). The field-for-field facts (labels,
ports, env, volume names) are Spark 4.3's; the reference test compares the output with the real
spark-submit's.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubeaccel.spark import claims, gang
from kubeaccel.spark.conf import format_properties
from kubeaccel.spark.labels import LABEL_APP_ID, LABEL_APP_NAME, LABEL_ROLE, app_name_label, name_prefix
from kubeaccel.spark.resources import FACTOR_KEY, PodResources

if TYPE_CHECKING:
    from kubeaccel.spark.model import ResolvedApp

SPARK_VERSION = "4.3.0"
CONF_DIR = "/opt/spark/conf"
PROPERTIES_FILE = "spark.properties"
POD_TEMPLATE_DIR = "/opt/spark/pod-template"
POD_TEMPLATE_FILE = "pod-spec-template.yml"
POD_TEMPLATE_KEY = "podspec-configmap-key"
DRIVER_CONTAINER = "spark-kubernetes-driver"
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
        import uuid  # here, not at the top: status/list/kill import the labels but never make IDs

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
    import secrets

    return secrets.token_hex(3) + format(int(time.time() * 1000) & 0xFFFFFFFFFF, "x")


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
    claim_templates: list[Manifest] = field(default_factory=list)  # Spark on DRA: see kubeaccel.spark.claims
    gang_objects: list[Manifest] = field(default_factory=list)  # the app's PodGroup: see kubeaccel.spark.gang

    @property
    def driver_pod_name(self) -> str:
        name: str = self.driver_pod["metadata"]["name"]
        return name

    @property
    def owned(self) -> list[Manifest]:
        """Created after the pod, in Spark's order, each with an owner reference to the pod."""
        return [
            *self.gang_objects, *self.claim_templates, self.service, self.network_policy, *self.extra_config_maps,
            self.config_map,
        ]


def owner_reference(pod_name: str, pod_uid: str) -> Manifest:
    return {"apiVersion": "v1", "kind": "Pod", "controller": True, "name": pod_name, "uid": pod_uid}


@dataclass(frozen=True)
class Names:
    """The names of one submission's objects, as Spark derives them."""

    prefix: str
    pod: str
    service: str
    config_map: str
    template_map: str
    policy: str
    local_dir: str


def names(app: ResolvedApp, generated: Generated) -> Names:
    prefix = name_prefix(app.app_name, generated.name_id)
    service = f"{prefix}-driver-svc"
    if len(service) > 63:
        service = f"spark-{generated.service_id}-driver-svc"
    return Names(
        prefix=prefix,
        pod=app.driver_pod_name or f"{prefix}-driver",
        service=service,
        config_map=f"spark-drv-{generated.config_map_id}-conf-map",
        template_map=f"{prefix}-driver-podspec-conf-map",
        policy=f"{prefix}-policy",
        local_dir=f"/var/data/spark-{generated.local_dir_id}",
    )


def driver_labels(app: ResolvedApp, generated: Generated) -> dict[str, str]:
    return {
        LABEL_VERSION: SPARK_VERSION,
        LABEL_APP_ID: generated.app_id,
        LABEL_APP_NAME: app_name_label(app.app_name),
        LABEL_ROLE: "driver",
        **app.pod.driver_labels,
    }


def _namespace(app: ResolvedApp) -> str:
    if app.namespace is None:
        raise ValueError("the app has no namespace yet: call ResolvedApp.placed() first")
    return app.namespace


def driver_conf(app: ResolvedApp, generated: Generated) -> dict[str, str]:
    """The conf the driver reads from its ConfigMap: the app's plus what Spark adds per submission."""
    n = names(app, generated)
    namespace = _namespace(app)
    conf = dict(app.conf)
    conf.update(
        {
            "spark.app.id": generated.app_id,
            "spark.app.submitTime": str(generated.submit_time_ms),
            "spark.kubernetes.namespace": namespace,
            "spark.kubernetes.driver.pod.name": n.pod,
            "spark.kubernetes.submitInDriver": "true",
            FACTOR_KEY: repr(app.overhead_factor),
            "spark.driver.host": f"{n.service}.{namespace}.svc",
            "spark.driver.port": str(app.ports.driver),
            "spark.driver.blockManager.port": str(app.ports.block_manager),
        }
    )
    if app.executor_template_text is not None:
        conf["spark.kubernetes.executor.podTemplateFile"] = f"{POD_TEMPLATE_DIR}/{POD_TEMPLATE_FILE}"
    return conf


def _resources(pod: PodResources, container: Manifest) -> Manifest:
    resources = copy.deepcopy(container.get("resources") or {})
    requests = resources.setdefault("requests", {})
    limits = resources.setdefault("limits", {})
    memory = f"{pod.memory_mib}Mi"
    requests["cpu"] = pod.cpu_request
    if pod.cpu_limit:
        limits["cpu"] = pod.cpu_limit
    requests["memory"] = memory
    limits["memory"] = memory
    for accel in pod.accelerators:
        limits[accel.resource_name] = str(accel.amount)
    return resources


def _driver_env(app: ResolvedApp, generated: Generated, n: Names) -> list[Manifest]:
    return [
        {"name": "SPARK_USER", "value": generated.spark_user},
        {"name": "SPARK_APPLICATION_ID", "value": generated.app_id},
        *({"name": k, "value": v} for k, v in app.pod.driver_env.items()),
        *_python_env(app),
        {
            "name": "SPARK_DRIVER_BIND_ADDRESS",
            "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}},
        },
        {"name": "SPARK_LOCAL_DIRS", "value": n.local_dir},
        {"name": "SPARK_CONF_DIR", "value": CONF_DIR},
    ]


def _driver_container(app: ResolvedApp, generated: Generated, n: Names, container: Manifest) -> Manifest:
    ports = app.ports
    container["name"] = container.get("name") or DRIVER_CONTAINER
    container["image"] = app.image
    container["imagePullPolicy"] = app.pull_policy
    container["resources"] = _resources(app.driver, container)
    container["ports"] = [
        *container.get("ports", []),
        {"containerPort": ports.driver, "name": "driver-rpc-port", "protocol": "TCP"},
        {"containerPort": ports.block_manager, "name": "blockmanager", "protocol": "TCP"},
        {"containerPort": ports.ui, "name": "spark-ui", "protocol": "TCP"},
        {"containerPort": ports.connect, "name": "spark-connect", "protocol": "TCP"},
    ]
    container["env"] = [*container.get("env", []), *_driver_env(app, generated, n)]
    container.setdefault("securityContext", {}).setdefault("allowPrivilegeEscalation", False)
    container["args"] = [
        "driver",
        "--properties-file",
        f"{CONF_DIR}/{PROPERTIES_FILE}",
        "--class",
        app.main_class,
        app.app_resource,
        *app.app_args,
    ]
    mounts: list[Manifest] = []
    if app.executor_template_text is not None:
        mounts.append({"mountPath": POD_TEMPLATE_DIR, "name": "pod-template-volume"})
    mounts += [
        {"mountPath": n.local_dir, "name": "spark-local-dir-1"},
        {"mountPath": CONF_DIR, "name": "spark-conf-volume-driver"},
    ]
    container["volumeMounts"] = [*container.get("volumeMounts", []), *mounts]
    return container


def _driver_volumes(app: ResolvedApp, n: Names) -> list[Manifest]:
    volumes: list[Manifest] = []
    if app.executor_template_text is not None:
        volumes.append(
            {
                "configMap": {"items": [{"key": POD_TEMPLATE_KEY, "path": POD_TEMPLATE_FILE}], "name": n.template_map},
                "name": "pod-template-volume",
            }
        )
    local_volume: Manifest = {"emptyDir": {}, "name": "spark-local-dir-1"}
    if app.local_dirs_tmpfs:
        local_volume["emptyDir"] = {"medium": "Memory"}
    volumes += [
        local_volume,
        {
            "configMap": {
                "items": [{"key": PROPERTIES_FILE, "mode": 420, "path": PROPERTIES_FILE}],
                "name": n.config_map,
            },
            "name": "spark-conf-volume-driver",
        },
    ]
    return volumes


def driver_pod(app: ResolvedApp, generated: Generated) -> Manifest:
    """The driver pod: the template (if any) with Spark's container, labels, volumes and scheduling added."""
    n = names(app, generated)
    pod, container, sidecars = _from_template(app.driver_template, app.pod.driver_container)
    metadata = pod.setdefault("metadata", {})
    metadata.pop("namespace", None)
    metadata["name"] = n.pod
    metadata["labels"] = {**metadata.get("labels", {}), **driver_labels(app, generated)}
    annotations = {
        k: v.replace("{{APP_ID}}", generated.app_id).replace("{{EXECUTOR_ID}}", "")
        for k, v in app.pod.driver_annotations.items()
    }
    if annotations or metadata.get("annotations"):
        metadata["annotations"] = {**metadata.get("annotations", {}), **annotations}

    spec = pod.setdefault("spec", {})
    spec["containers"] = [*sidecars, _driver_container(app, generated, n, container)]
    spec["restartPolicy"] = "Never"
    spec["volumes"] = [*spec.get("volumes", []), *_driver_volumes(app, n)]
    if app.pod.node_selector:
        spec["nodeSelector"] = {**spec.get("nodeSelector", {}), **app.pod.node_selector}
    if app.service_account:
        spec["serviceAccount"] = app.service_account
        spec["serviceAccountName"] = app.service_account
    if app.pod.pull_secrets:
        spec["imagePullSecrets"] = [*spec.get("imagePullSecrets", []), *({"name": s} for s in app.pod.pull_secrets)]
    if app.pod.scheduler_name:
        spec["schedulerName"] = app.pod.scheduler_name
    return {"apiVersion": "v1", "kind": "Pod", **pod}


def conf_config_map(app: ResolvedApp, generated: Generated) -> Manifest:
    """The driver's conf as Spark writes it: a properties file, plus the namespace."""
    from datetime import UTC, datetime

    n = names(app, generated)
    stamp = datetime.fromtimestamp(generated.submit_time_ms / 1000, UTC).strftime("%a %b %d %H:%M:%S UTC %Y")
    properties = format_properties(
        driver_conf(app, generated),
        header=[f"Java properties built from Kubernetes config map with name: {n.config_map}", stamp],
    )
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": n.config_map},
        "data": {PROPERTIES_FILE: properties, "spark.kubernetes.namespace": _namespace(app)},
        "immutable": True,
    }


def executor_template_config_map(app: ResolvedApp, generated: Generated) -> Manifest | None:
    """The executor pod template, handed to the driver through a ConfigMap (None without one)."""
    if app.executor_template_text is None:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": names(app, generated).template_map},
        "data": {POD_TEMPLATE_KEY: app.executor_template_text},
        "immutable": True,
    }


def service(app: ResolvedApp, generated: Generated) -> Manifest:
    """The headless Service executors reach the driver through."""
    n = names(app, generated)
    ports = app.ports
    svc = app.pod.service
    manifest: Manifest = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": n.service,
            "labels": {LABEL_APP_ID: generated.app_id, **svc.labels},
        },
        "spec": {
            "clusterIP": "None",
            "ipFamilies": list(svc.ip_families),
            "ipFamilyPolicy": svc.ip_family_policy,
            "ports": [
                {"name": "driver-rpc-port", "port": ports.driver, "targetPort": ports.driver},
                {"name": "blockmanager", "port": ports.block_manager, "targetPort": ports.block_manager},
                {"name": "spark-ui", "port": ports.ui, "targetPort": ports.ui},
                {"appProtocol": "grpc", "name": "spark-connect", "port": ports.connect, "targetPort": ports.connect},
            ],
            "publishNotReadyAddresses": False,
            "selector": driver_labels(app, generated),
        },
    }
    if svc.annotations:
        manifest["metadata"]["annotations"] = dict(svc.annotations)
    return manifest


def network_policy(app: ResolvedApp, generated: Generated) -> Manifest:
    """Only the app's own pods may reach its executors."""
    app_id = generated.app_id
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": names(app, generated).policy, "labels": {LABEL_APP_ID: app_id}},
        "spec": {
            "ingress": [{"from": [{"podSelector": {"matchLabels": {LABEL_APP_ID: app_id}}}]}],
            "podSelector": {"matchLabels": {LABEL_ROLE: "executor", LABEL_APP_ID: app_id}},
        },
    }


def build(app: ResolvedApp, generated: Generated) -> AppManifests:
    """Every object of one submission of `app` (which must be placed in a namespace)."""
    app = gang.with_gang_template(_with_executor_claims(app, generated), names(app, generated).prefix)
    template_map = executor_template_config_map(app, generated)
    return AppManifests(
        _namespace(app),
        gang.gang_driver_pod(app, _driver_pod_with_claims(app, generated), names(app, generated).prefix),
        service(app, generated),
        conf_config_map(app, generated),
        network_policy(app, generated),
        [template_map] if template_map is not None else [],
        driver_conf(app, generated),
        claims.templates(names(app, generated).prefix, _namespace(app), app.driver_claims, app.executor_claims,
                         generated.app_id),
        gang.gang_objects(app, names(app, generated).prefix),
    )


def _with_executor_claims(app: ResolvedApp, generated: Generated) -> ResolvedApp:
    """Executors claiming devices through DRA get them from the pod template the driver hands Spark."""
    if not app.executor_claims:
        return app
    text = claims.executor_template(
        app.executor_template_text,
        names(app, generated).prefix,
        app.pod.executor_container,
        app.executor_claimed_limits,
    )
    return dataclasses.replace(app, executor_template_text=text)


def _driver_pod_with_claims(app: ResolvedApp, generated: Generated) -> Manifest:
    pod = driver_pod(app, generated)
    if not app.driver_claims:
        return pod
    spark_container = pod["spec"]["containers"][-1]["name"]  # after the template's sidecars
    return claims.add_driver_claim(pod, spark_container, names(app, generated).prefix)


def _python_env(app: ResolvedApp) -> list[Manifest]:
    """The interpreters Spark's Python driver step passes on: always both variables, with no value when no
    conf names one (as Spark's buildEnvVars writes a null). Spark also copies the submitter's own
    PYSPARK_PYTHON environment variable, a path on the submitting machine; we take only the confs."""
    from kubeaccel.spark.model import AppKind

    if app.kind is not AppKind.PYTHON:
        return []
    pairs = [("PYSPARK_PYTHON", app.pod.python), ("PYSPARK_DRIVER_PYTHON", app.pod.driver_python)]
    return [{"name": name, "value": value} if value else {"name": name} for name, value in pairs]


def _from_template(template: Mapping[str, Any] | None, wanted: str | None) -> tuple[Manifest, Manifest, list[Manifest]]:
    """Split a pod template into (pod, the Spark container, the other containers), as Spark selects it."""
    if template is None:
        return {"metadata": {}, "spec": {}}, {}, []
    pod = copy.deepcopy(dict(template))
    pod.pop("apiVersion", None)
    pod.pop("kind", None)
    pod.pop("status", None)
    pod["metadata"] = pod.get("metadata") or {}
    pod["spec"] = pod.get("spec") or {}
    containers = list(pod["spec"].pop("containers", None) or [])
    index = next((i for i, c in enumerate(containers) if wanted and c.get("name") == wanted), 0 if containers else None)
    if index is None:
        return pod, {}, []
    container = containers.pop(index)
    return pod, container, containers
