"""A SparkApplication spec -> what `kubeaccel spark submit` would be given. Pure.

Every spec field becomes one of: a Spark conf key (what spark-submit's `--conf` or a dedicated flag
sets), a CLI-equivalent input of `SubmitRequest` (the app file, its arguments, --jars, --files...), or a
field of the driver / executor pod template (what Spark's confs cannot say: env from secrets, affinity,
security contexts, volumes, sidecars). The result resolves through `spark.model.resolve` into the same
`ResolvedApp` the CLI builds, so one builder and one quota pre-flight serve both. A field this cannot
serve raises `UnservedFieldError` naming it (the app ends SUBMISSION_FAILED with that message): nothing is
silently dropped. Lifecycle fields (restartPolicy, failureRetries, retryInterval, timeToLiveSeconds,
suspend) are the controller's, and sparkVersion is informational.

    mapped = to_submission(app, master="k8s://https://10.0.0.1:6443")
    resolved = resolve_mapped(mapped)
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import yaml

from kubeaccel.errors import ConfigError
from kubeaccel.operator.api import (
    AppType,
    DeployMode,
    DriverSpec,
    ExecutorSpec,
    SparkApplication,
    SparkApplicationSpec,
    SparkPodSpec,
)
from kubeaccel.spark import templates
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.model import ResolvedApp, resolve

# kubeflow's labels, so tools written for its operator find the pods
LABEL_APP_NAME = "sparkoperator.k8s.io/app-name"
LABEL_SUBMISSION_ID = "sparkoperator.k8s.io/submission-id"
LABEL_LAUNCHED = "sparkoperator.k8s.io/launched-by-spark-operator"
DRIVER_CONTAINER = "spark-kubernetes-driver"
EXECUTOR_CONTAINER = "spark-kubernetes-executor"
SPARK_CONF_DIR = "/etc/spark/conf"
HADOOP_CONF_DIR = "/etc/hadoop/conf"
DISCOVERY_SCRIPT = "/usr/local/bin/kubeaccel-discover"
BATCH_SCHEDULERS = ("kubernetes", "kueue", "volcano", "yunikorn")
GANG_ENABLED_KEY = "spark.kubeaccel.gang.enabled"
GANG_SCHEDULER_KEY = "spark.kubeaccel.gang.scheduler"
QUEUE_KEY = "spark.kubeaccel.queue"

Json = dict[str, Any]


class UnservedFieldError(ConfigError):
    """A spec field this controller cannot serve (or a value it cannot take): the app is not submitted."""

    def __init__(self, field: str, message: str, *, hint: str | None = None) -> None:
        super().__init__(f"{field}: {message}", hint=hint)
        self.field = field


@dataclass(frozen=True)
class Mapped:
    """What `spark submit` would be given for the app, plus the pod templates Spark's confs cannot express."""

    request: SubmitRequest
    driver_template: Json | None
    executor_template: Json | None


def driver_pod_name(app: SparkApplication) -> str:
    """Deterministic (as kubeflow's): a restarted controller finds the driver it made."""
    return app.spec.driver.pod_name or f"{app.metadata.name}-driver"


def to_submission(
    app: SparkApplication,
    *,
    master: str,
    submission_id: str | None = None,
    owner: Json | None = None,
) -> Mapped:
    """The submit request and pod templates for `app` (namespaced, named); `owner` becomes the driver's
    ownerReference, `submission_id` a label on every pod of this submission."""
    spec = app.spec
    _check_unserved(spec)
    conf: dict[str, str] = dict(spec.spark_conf or {})
    conf.update({f"spark.hadoop.{k}": v for k, v in (spec.hadoop_conf or {}).items()})
    flags: dict[str, str] = {}
    conf.update(_top_level_conf(app))
    conf.update(_pod_conf("driver", spec.driver))
    conf.update(_pod_conf("executor", spec.executor))
    conf.update(_driver_conf(spec.driver))
    conf.update(_executor_conf(spec.executor))
    conf.update(_dynamic_allocation(spec))
    conf.update(_batch_scheduler(spec))
    labels = {LABEL_APP_NAME: app.metadata.name, LABEL_LAUNCHED: "true"}
    if submission_id:
        labels[LABEL_SUBMISSION_ID] = submission_id
    for role in ("driver", "executor"):
        conf.update({f"spark.kubernetes.{role}.label.{k}": v for k, v in labels.items()})
    flags.update(_resource_flags(spec))
    deps = spec.deps
    for key, values in (
        ("packages", deps.packages if deps else None),
        ("repositories", deps.repositories if deps else None),
        ("exclude_packages", deps.exclude_packages if deps else None),
    ):
        if values:
            flags[_FLAG_KEYS[key]] = ",".join(values)
    driver_template = _template("driver", spec, spec.driver, owner)
    executor_template = _template("executor", spec, spec.executor, None)
    for role, template in (("driver", driver_template), ("executor", executor_template)):
        key = f"spark.kubernetes.{role}.podTemplateFile"
        if template is not None and conf.get(key):
            raise UnservedFieldError(
                f"spec.sparkConf[{key}]",
                f"cannot be combined with spec.{role} pod fields, which are served through a pod template",
                hint=f"move the template into spec.{role}.template",
            )
    return Mapped(
        SubmitRequest(
            app_resource=spec.main_application_file,
            master=master,
            app_args=tuple(spec.arguments or ()),
            name=app.metadata.name,
            main_class=spec.main_class,
            conf=conf,
            jars=tuple(deps.jars or ()) if deps else (),
            files=tuple(deps.files or ()) if deps else (),
            py_files=tuple(deps.py_files or ()) if deps else (),
            archives=tuple(deps.archives or ()) if deps else (),
            flag_conf=flags,
        ),
        driver_template,
        executor_template,
    )


_FLAG_KEYS = {
    "packages": "spark.jars.packages",
    "repositories": "spark.jars.repositories",
    "exclude_packages": "spark.jars.excludes",
}


def _check_unserved(spec: SparkApplicationSpec) -> None:
    if spec.mode is not DeployMode.CLUSTER:
        raise UnservedFieldError(
            "spec.mode", f"{spec.mode.value!r} is not served", hint="kubeaccel submits in cluster mode"
        )
    unserved = {
        "spec.proxyUser": spec.proxy_user,
        "spec.monitoring": spec.monitoring,
        "spec.sparkUIOptions": spec.spark_ui_options,
        "spec.driverIngressOptions": spec.driver_ingress_options,
        "spec.batchSchedulerOptions.resources": spec.batch_scheduler_options and spec.batch_scheduler_options.resources,
    }
    for name, value in unserved.items():
        if value:
            raise UnservedFieldError(
                name, "is not served by kubeaccel's controller", hint=f"remove {name} from the spec"
            )
    is_python = spec.main_application_file.endswith(".py")
    is_r = spec.main_application_file.lower().endswith(".r")
    expected = AppType.PYTHON if is_python else AppType.R if is_r else None
    if spec.type in (AppType.JAVA, AppType.SCALA) and expected is not None:
        raise UnservedFieldError("spec.type", f"{spec.type.value} does not run {spec.main_application_file!r}")
    suffix = ".py" if spec.type is AppType.PYTHON else ".R"
    if spec.type in (AppType.PYTHON, AppType.R) and expected is not spec.type:
        raise UnservedFieldError(
            "spec.type",
            f"a {spec.type.value} app's mainApplicationFile must end in {suffix}",
        )
    if spec.python_version == "2":
        raise UnservedFieldError("spec.pythonVersion", "Python 2 is not supported by Spark 3 and later", hint="use '3'")


def _top_level_conf(app: SparkApplication) -> dict[str, str]:
    spec = app.spec
    conf = {
        "spark.kubernetes.namespace": app.metadata.namespace or "default",
        "spark.kubernetes.driver.pod.name": driver_pod_name(app),
    }
    optional = {
        "spark.kubernetes.container.image": spec.image,
        "spark.kubernetes.container.image.pullPolicy": spec.image_pull_policy,
        "spark.kubernetes.container.image.pullSecrets": ",".join(spec.image_pull_secrets or []) or None,
        "spark.kubernetes.memoryOverheadFactor": spec.memory_overhead_factor,
        "spark.kubernetes.pyspark.pythonVersion": spec.python_version,
    }
    conf.update({k: v for k, v in optional.items() if v})
    conf.update({f"spark.kubernetes.node.selector.{k}": v for k, v in (spec.node_selector or {}).items()})
    return conf


def _resource_flags(spec: SparkApplicationSpec) -> dict[str, str]:
    """What spark-submit's --driver-cores, --executor-memory, --num-executors... would set."""
    flags: dict[str, str] = {}
    for role, pod in (("driver", spec.driver), ("executor", spec.executor)):
        if pod.cores is not None:
            flags[f"spark.{role}.cores"] = str(pod.cores)
        if pod.memory:
            flags[f"spark.{role}.memory"] = pod.memory
    if spec.executor.instances is not None:
        flags["spark.executor.instances"] = str(spec.executor.instances)
    return flags


def _pod_conf(role: str, pod: SparkPodSpec) -> dict[str, str]:
    """The per-role fields Spark's own confs express."""
    k8s = f"spark.kubernetes.{role}"
    env_prefix = "spark.kubernetes.driverEnv." if role == "driver" else "spark.executorEnv."
    conf: dict[str, str] = {}
    optional = {
        f"{k8s}.limit.cores": pod.core_limit,
        f"{k8s}.request.cores": pod.core_request,
        f"spark.{role}.memoryOverhead": pod.memory_overhead,
        f"{k8s}.container.image": pod.image,
        f"{k8s}.scheduler.name": pod.scheduler_name,
        f"spark.kubernetes.authenticate.{role}.serviceAccountName": pod.service_account,
        f"spark.{role}.extraJavaOptions": pod.java_options,
    }
    conf.update({k: v for k, v in optional.items() if v})
    conf.update({f"{k8s}.label.{k}": v for k, v in (pod.labels or {}).items()})
    conf.update({f"{k8s}.annotation.{k}": v for k, v in (pod.annotations or {}).items()})
    conf.update({f"{k8s}.node.selector.{k}": v for k, v in (pod.node_selector or {}).items()})
    conf.update({f"{env_prefix}{k}": v for k, v in (pod.env_vars or {}).items()})
    conf.update({f"{k8s}.secretKeyRef.{k}": f"{v.name}:{v.key}" for k, v in (pod.env_secret_key_refs or {}).items()})
    for secret in pod.secrets or []:
        conf[f"{k8s}.secrets.{secret.name}"] = secret.path
        variable = {
            "GCPServiceAccount": ("GOOGLE_APPLICATION_CREDENTIALS", "key.json"),
            "HadoopDelegationToken": ("HADOOP_TOKEN_FILE_LOCATION", "hadoop.token"),
        }.get(secret.secret_type)
        if variable is not None:
            conf[f"{env_prefix}{variable[0]}"] = f"{secret.path.rstrip('/')}/{variable[1]}"
        elif secret.secret_type != "Generic":
            raise UnservedFieldError(
                f"spec.{role}.secrets[{secret.name}].secretType",
                f"{secret.secret_type!r} is not a secret type",
                hint="use Generic, GCPServiceAccount or HadoopDelegationToken",
            )
    if pod.gpu is not None:
        conf.update(_gpu(role, pod))
    return conf


def _gpu(role: str, pod: SparkPodSpec) -> dict[str, str]:
    assert pod.gpu is not None
    vendor, _, name = pod.gpu.name.rpartition("/")
    if not vendor or not name:
        raise UnservedFieldError(
            f"spec.{role}.gpu.name",
            f"{pod.gpu.name!r} is not an extended resource name",
            hint="use VENDOR/NAME, e.g. nec.com/ve or nvidia.com/gpu",
        )
    prefix = f"spark.{role}.resource.{name}"
    return {
        f"{prefix}.amount": str(pod.gpu.quantity),
        f"{prefix}.vendor": vendor,
        f"{prefix}.discoveryScript": DISCOVERY_SCRIPT,
    }


def _driver_conf(driver: DriverSpec) -> dict[str, str]:
    conf: dict[str, str] = {}
    if driver.kubernetes_master:
        conf["spark.kubernetes.driver.master"] = driver.kubernetes_master
    conf.update(
        {f"spark.kubernetes.driver.service.annotation.{k}": v for k, v in (driver.service_annotations or {}).items()}
    )
    conf.update({f"spark.kubernetes.driver.service.label.{k}": v for k, v in (driver.service_labels or {}).items()})
    return conf


def _executor_conf(executor: ExecutorSpec) -> dict[str, str]:
    if executor.delete_on_termination is None:
        return {}
    return {"spark.kubernetes.executor.deleteOnTermination": str(executor.delete_on_termination).lower()}


def _dynamic_allocation(spec: SparkApplicationSpec) -> dict[str, str]:
    dynamic = spec.dynamic_allocation
    if dynamic is None or not dynamic.enabled:
        return {}
    conf = {
        "spark.dynamicAllocation.enabled": "true",
        # no external shuffle service on Kubernetes: Spark needs shuffle tracking (as kubeflow sets it)
        "spark.dynamicAllocation.shuffleTracking.enabled": "true",
    }
    optional = {
        "spark.dynamicAllocation.initialExecutors": dynamic.initial_executors,
        "spark.dynamicAllocation.minExecutors": dynamic.min_executors,
        "spark.dynamicAllocation.maxExecutors": dynamic.max_executors,
        "spark.dynamicAllocation.shuffleTracking.timeout": dynamic.shuffle_tracking_timeout,
    }
    conf.update({k: str(v) for k, v in optional.items() if v is not None})
    return conf


def _batch_scheduler(spec: SparkApplicationSpec) -> dict[str, str]:
    conf: dict[str, str] = {}
    if spec.batch_scheduler:
        if spec.batch_scheduler not in BATCH_SCHEDULERS:
            raise UnservedFieldError(
                "spec.batchScheduler",
                f"{spec.batch_scheduler!r} is not a batch scheduler kubeaccel serves",
                hint=f"use one of {', '.join(BATCH_SCHEDULERS)}",
            )
        conf[GANG_ENABLED_KEY] = "true"
        conf[GANG_SCHEDULER_KEY] = spec.batch_scheduler
    options = spec.batch_scheduler_options
    if options is not None and options.queue:
        conf[QUEUE_KEY] = options.queue
    return conf


# ---- pod templates: what Spark's confs cannot say ----


def _config_map_volume(name: str, volume: str) -> Json:
    return {"name": volume, "configMap": {"name": name}}


def _template(role: str, spec: SparkApplicationSpec, pod: SparkPodSpec, owner: Json | None) -> Json | None:
    """The role's pod template, or None when nothing in the spec needs one."""
    base: Json = copy.deepcopy(pod.template) if pod.template else {}
    metadata: Json = base.setdefault("metadata", {}) or {}
    base["metadata"] = metadata
    pod_spec: Json = base.setdefault("spec", {}) or {}
    base["spec"] = pod_spec
    containers: list[Json] = pod_spec.setdefault("containers", []) or []
    main: Json = containers[0] if containers else {"name": DRIVER_CONTAINER if role == "driver" else EXECUTOR_CONTAINER}
    untouched = copy.deepcopy(base), copy.deepcopy(main)
    volumes = _mounted_volumes(role, spec, pod)
    mounts = [copy.deepcopy(m) for m in pod.volume_mounts or []]
    env = [copy.deepcopy(e) for e in pod.env or []]
    for config_map in pod.config_maps or []:
        volume = f"{config_map.name}-vol"
        volumes.append(_config_map_volume(config_map.name, volume))
        mounts.append({"name": volume, "mountPath": config_map.path})
    for name, path, variable, volume in (
        (spec.spark_config_map, SPARK_CONF_DIR, "SPARK_CONF_DIR", "spark-configmap-volume"),
        (spec.hadoop_config_map, HADOOP_CONF_DIR, "HADOOP_CONF_DIR", "hadoop-configmap-volume"),
    ):
        if name:
            volumes.append(_config_map_volume(name, volume))
            mounts.append({"name": volume, "mountPath": path})
            env.append({"name": variable, "value": path})
    _extend(main, "volumeMounts", mounts)
    _extend(main, "env", env)
    _extend(main, "envFrom", [copy.deepcopy(e) for e in pod.env_from or []])
    _extend(main, "ports", [p.wire() for p in pod.ports or []])
    for key, value in (("securityContext", pod.security_context), ("lifecycle", pod.lifecycle)):
        if value:
            main[key] = copy.deepcopy(value)
    _extend(pod_spec, "volumes", volumes)
    _extend(pod_spec, "tolerations", [copy.deepcopy(t) for t in pod.tolerations or []])
    _extend(pod_spec, "hostAliases", [copy.deepcopy(h) for h in pod.host_aliases or []])
    _extend(pod_spec, "initContainers", [copy.deepcopy(c) for c in pod.init_containers or []])
    priority = pod.priority_class_name or (
        spec.batch_scheduler_options and spec.batch_scheduler_options.priority_class_name
    )
    scalars = {
        "affinity": pod.affinity,
        "securityContext": pod.pod_security_context,
        "hostNetwork": pod.host_network,
        "dnsConfig": pod.dns_config,
        "terminationGracePeriodSeconds": pod.termination_grace_period_seconds,
        "shareProcessNamespace": pod.share_process_namespace,
        "runtimeClassName": pod.runtime_class_name,
        "priorityClassName": priority or None,
    }
    pod_spec.update({k: copy.deepcopy(v) for k, v in scalars.items() if v is not None})
    sidecars = [copy.deepcopy(c) for c in pod.sidecars or []]
    if owner is not None:
        metadata["ownerReferences"] = [*metadata.get("ownerReferences", []), owner]
    if not pod.template and owner is None and not sidecars and (base, main) == untouched:
        return None
    return _finish(base, main, sidecars)


def _finish(base: Json, main: Json, sidecars: list[Json]) -> Json:
    containers = base["spec"].get("containers") or []
    base["spec"]["containers"] = [main, *containers[1:], *sidecars]
    base.setdefault("apiVersion", "v1")
    base.setdefault("kind", "Pod")
    return base


def _extend(target: Json, key: str, items: list[Json]) -> None:
    if items:
        target[key] = [*(target.get(key) or []), *items]


def _mounted_volumes(role: str, spec: SparkApplicationSpec, pod: SparkPodSpec) -> list[Json]:
    """The spec's volumes this role mounts (as kubeflow adds them: only those a volumeMount names)."""
    wanted = {m.get("name") for m in pod.volume_mounts or []}
    by_name = {v.get("name"): v for v in spec.volumes or []}
    missing = sorted(str(n) for n in wanted - set(by_name))
    if missing:
        raise UnservedFieldError(
            f"spec.{role}.volumeMounts",
            f"names volumes that spec.volumes does not list: {', '.join(missing)}",
            hint="add them to spec.volumes",
        )
    return [copy.deepcopy(by_name[n]) for n in sorted(wanted, key=str)]


def resolve_mapped(mapped: Mapped) -> ResolvedApp:
    """The same `ResolvedApp` `spark submit` would resolve, with the templates in place of template files."""
    app = resolve(mapped.request)
    driver = executor_text = None
    if mapped.driver_template is not None:
        text = yaml.safe_dump(mapped.driver_template, sort_keys=False)
        driver = templates.parse_pod(text, "spec.driver", "spec.driver.template")
    if mapped.executor_template is not None:
        executor_text = yaml.safe_dump(mapped.executor_template, sort_keys=False)
        templates.parse_pod(executor_text, "spec.executor", "spec.executor.template")
    if driver is None and executor_text is None:
        return app
    return dataclasses.replace(
        app,
        driver_template=MappingProxyType(driver) if driver is not None else app.driver_template,
        executor_template_text=executor_text if executor_text is not None else app.executor_template_text,
    )


# the conf keys the CLI's messages name, and the spec field a SparkApplication sets them with
SPEC_FIELD_OF = {
    "spark.kubernetes.container.image.pullPolicy": "spec.imagePullPolicy",
    "spark.kubernetes.container.image.pullSecrets": "spec.imagePullSecrets",
    "spark.kubernetes.container.image": "spec.image",
    "spark.kubernetes.driver.container.image": "spec.driver.image",
    "spark.kubernetes.executor.container.image": "spec.executor.image",
    "spark.kubernetes.authenticate.driver.serviceAccountName": "spec.driver.serviceAccount",
    "spark.kubernetes.authenticate.executor.serviceAccountName": "spec.executor.serviceAccount",
    "spark.driver.memoryOverhead": "spec.driver.memoryOverhead",
    "spark.executor.memoryOverhead": "spec.executor.memoryOverhead",
    "spark.driver.memory": "spec.driver.memory",
    "spark.executor.memory": "spec.executor.memory",
    "spark.driver.cores": "spec.driver.cores",
    "spark.executor.cores": "spec.executor.cores",
    "spark.executor.instances": "spec.executor.instances",
    "spark.kubernetes.driver.request.cores": "spec.driver.coreRequest",
    "spark.kubernetes.executor.request.cores": "spec.executor.coreRequest",
    "spark.kubernetes.driver.limit.cores": "spec.driver.coreLimit",
    "spark.kubernetes.executor.limit.cores": "spec.executor.coreLimit",
    "spark.kubernetes.memoryOverheadFactor": "spec.memoryOverheadFactor",
    "spark.jars.packages": "spec.deps.packages",
    "spark.jars.repositories": "spec.deps.repositories",
    "spark.jars.excludes": "spec.deps.excludePackages",
    "spark.dynamicAllocation.": "spec.dynamicAllocation",
    "spark.kubernetes.driver.label.": "spec.driver.labels",
    "spark.kubernetes.executor.label.": "spec.executor.labels",
    "spark.kubernetes.driver.annotation.": "spec.driver.annotations",
    "spark.kubernetes.executor.annotation.": "spec.executor.annotations",
    "spark.app.name": "metadata.name",
    "--name": "metadata.name",
    "--class": "spec.mainClass",
}


def spec_fields_named(text: str) -> list[str]:
    """The spec fields behind the conf keys a CLI message names (longest key first: no prefix double-counts)."""
    found: list[str] = []
    rest = text
    for key in sorted(SPEC_FIELD_OF, key=len, reverse=True):
        if key in rest:
            rest = rest.replace(key, " ")
            if SPEC_FIELD_OF[key] not in found:
                found.append(SPEC_FIELD_OF[key])
    return found
