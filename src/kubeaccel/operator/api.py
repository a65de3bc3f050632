"""`sparkoperator.k8s.io/v1beta2` SparkApplication and ScheduledSparkApplication, as typed models.

The field names, kinds and state names are kubeflow/spark-operator's (v2.x), so YAML written for that
operator parses here unchanged; the CRDs (`kubeaccel.operator.crds`) are generated from these models.
Kubernetes core types carried inside a spec (volumes, env, affinity, tolerations, security contexts, pod
templates, containers) stay plain JSON objects: the API server checks them when the pods are created, and
a refusal ends the app in SUBMISSION_FAILED naming the field.

    from kubeaccel.operator.api import SparkApplication
    app = SparkApplication.model_validate(yaml.safe_load(text))
    app.spec.driver.cores, app.status.application_state.state
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue
from pydantic.alias_generators import to_camel

GROUP = "sparkoperator.k8s.io"
VERSION = "v1beta2"
API_VERSION: Final = "sparkoperator.k8s.io/v1beta2"
APP_KIND: Final = "SparkApplication"
SCHEDULED_KIND: Final = "ScheduledSparkApplication"

Json = dict[str, Any]
# names of Kubernetes' own types, kept as plain JSON; `crds` turns them into preserve-unknown-fields objects
KubeObject = dict[str, Any]


def _cel(rule: str, message: str, field_path: str | None = None) -> dict[str, JsonValue]:
    entry: dict[str, JsonValue] = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


class _Model(BaseModel):
    """camelCase on the wire (kubeflow's JSON names), snake_case in Python; unknown fields refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    def wire(self) -> Json:
        """The JSON the API server stores: camelCase, unset fields left out."""
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


class AppType(StrEnum):
    JAVA = "Java"
    SCALA = "Scala"
    PYTHON = "Python"
    R = "R"


class DeployMode(StrEnum):
    CLUSTER = "cluster"
    CLIENT = "client"
    IN_CLUSTER_CLIENT = "in-cluster-client"


class RestartPolicyType(StrEnum):
    NEVER = "Never"
    ON_FAILURE = "OnFailure"
    ALWAYS = "Always"


class AppState(StrEnum):
    NEW = ""
    SUBMITTED = "SUBMITTED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SUBMISSION_FAILED = "SUBMISSION_FAILED"
    PENDING_RERUN = "PENDING_RERUN"
    INVALIDATING = "INVALIDATING"
    SUCCEEDING = "SUCCEEDING"
    FAILING = "FAILING"
    SUSPENDING = "SUSPENDING"
    SUSPENDED = "SUSPENDED"
    RESUMING = "RESUMING"
    UNKNOWN = "UNKNOWN"

    @property
    def terminal(self) -> bool:
        return self in (AppState.COMPLETED, AppState.FAILED, AppState.SUBMISSION_FAILED)


class PodState(StrEnum):
    """A driver's or an executor's state (kubeflow's DriverState / ExecutorState)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    UNKNOWN = "UNKNOWN"


QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?([eE][0-9]+|[kMGTPE]i?|m|[kmgtpKMGTP][bB]?)?$"
CRON_PATTERN = (
    r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)"
    r"|@every ([0-9]+([.][0-9]+)?(ns|us|ms|s|m|h))+"
    r"|[0-9*?,/A-Za-z-]+( +[0-9*?,/A-Za-z-]+){4})$"
)


class GPUSpec(_Model):
    name: str = Field(min_length=1, max_length=253)
    quantity: int = Field(ge=0)


class NamePath(_Model):
    name: str
    path: str


class SecretInfo(_Model):
    name: str
    path: str
    secret_type: str = "Generic"


class NameKey(_Model):
    name: str
    key: str


class Port(_Model):
    name: str
    protocol: str = "TCP"
    container_port: int = Field(ge=1, le=65535)


class SparkPodSpec(_Model):
    template: KubeObject | None = None
    cores: int | None = Field(default=None, ge=1)
    core_limit: str | None = None
    memory: str | None = Field(default=None, pattern=QUANTITY_PATTERN, max_length=64)
    memory_overhead: str | None = Field(default=None, pattern=QUANTITY_PATTERN, max_length=64)
    gpu: GPUSpec | None = None
    image: str | None = None
    config_maps: list[NamePath] | None = None
    secrets: list[SecretInfo] | None = None
    env: list[KubeObject] | None = None
    env_vars: dict[str, str] | None = None
    env_from: list[KubeObject] | None = None
    env_secret_key_refs: dict[str, NameKey] | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    volume_mounts: list[KubeObject] | None = None
    affinity: KubeObject | None = None
    tolerations: list[KubeObject] | None = None
    pod_security_context: KubeObject | None = None
    security_context: KubeObject | None = None
    scheduler_name: str | None = None
    sidecars: list[KubeObject] | None = None
    init_containers: list[KubeObject] | None = None
    host_network: bool | None = None
    node_selector: dict[str, str] | None = None
    dns_config: KubeObject | None = Field(default=None, alias="dnsConfig")
    termination_grace_period_seconds: int | None = Field(default=None, ge=0)
    service_account: str | None = None
    host_aliases: list[KubeObject] | None = None
    share_process_namespace: bool | None = None
    runtime_class_name: str | None = None
    core_request: str | None = None
    java_options: str | None = None
    lifecycle: KubeObject | None = None
    ports: list[Port] | None = None
    priority_class_name: str | None = None


class DriverSpec(SparkPodSpec):
    pod_name: str | None = None
    kubernetes_master: str | None = None
    service_annotations: dict[str, str] | None = None
    service_labels: dict[str, str] | None = None


class ExecutorSpec(SparkPodSpec):
    instances: int | None = Field(default=None, ge=0)
    delete_on_termination: bool | None = None


class Dependencies(_Model):
    jars: list[str] | None = None
    files: list[str] | None = None
    py_files: list[str] | None = None
    packages: list[str] | None = None
    exclude_packages: list[str] | None = None
    repositories: list[str] | None = None
    archives: list[str] | None = None


class RestartPolicy(_Model):
    type: RestartPolicyType = RestartPolicyType.NEVER
    on_submission_failure_retries: int | None = Field(default=None, ge=0)
    on_failure_retries: int | None = Field(default=None, ge=0)
    on_submission_failure_retry_interval: int | None = Field(default=None, ge=1)
    on_failure_retry_interval: int | None = Field(default=None, ge=1)


class BatchSchedulerConfiguration(_Model):
    queue: str | None = None
    priority_class_name: str | None = None
    resources: dict[str, str] | None = None


class DynamicAllocation(
    _Model,
    json_schema_extra={
        "x-kubernetes-validations": [
            _cel(
                "!has(self.minExecutors) || !has(self.maxExecutors) || self.minExecutors <= self.maxExecutors",
                "dynamicAllocation.minExecutors must not exceed maxExecutors",
            )
        ]
    },
):
    enabled: bool = False
    initial_executors: int | None = Field(default=None, ge=0)
    min_executors: int | None = Field(default=None, ge=0)
    max_executors: int | None = Field(default=None, ge=0)
    shuffle_tracking_timeout: int | None = Field(default=None, ge=0)


class PrometheusSpec(_Model):
    jmx_exporter_jar: str
    port: int | None = Field(default=None, ge=1024, le=49151)
    port_name: str | None = None
    config_file: str | None = None
    configuration: str | None = None


class MonitoringSpec(_Model):
    expose_driver_metrics: bool = False
    expose_executor_metrics: bool = False
    metrics_properties: str | None = None
    metrics_properties_file: str | None = None
    prometheus: PrometheusSpec | None = None


class SparkUIConfiguration(_Model):
    service_port: int | None = None
    service_port_name: str | None = None
    service_type: str | None = None
    service_annotations: dict[str, str] | None = None
    service_labels: dict[str, str] | None = None
    ingress_annotations: dict[str, str] | None = None
    ingress_tls: list[KubeObject] | None = Field(default=None, alias="ingressTLS")


class DriverIngressConfiguration(_Model):
    service_port: int
    service_port_name: str
    service_type: str | None = None
    service_annotations: dict[str, str] | None = None
    service_labels: dict[str, str] | None = None
    ingress_url_format: str | None = Field(default=None, alias="ingressURLFormat")
    ingress_annotations: dict[str, str] | None = None
    ingress_tls: list[KubeObject] | None = Field(default=None, alias="ingressTLS")


_SPEC_RULES = [
    _cel(
        "!(self.type in ['Java', 'Scala']) || (has(self.mainClass) && size(self.mainClass) > 0)",
        "mainClass is required for a Java or Scala application",
        ".mainClass",
    ),
]


class SparkApplicationSpec(_Model, json_schema_extra={"x-kubernetes-validations": _SPEC_RULES}):
    type: AppType
    spark_version: str | None = None
    mode: DeployMode = DeployMode.CLUSTER
    proxy_user: str | None = None
    image: str | None = None
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = None
    image_pull_secrets: list[str] | None = None
    main_class: str | None = None
    main_application_file: str = Field(min_length=1)
    arguments: list[str] | None = None
    spark_conf: dict[str, str] | None = None
    hadoop_conf: dict[str, str] | None = None
    spark_config_map: str | None = None
    hadoop_config_map: str | None = None
    volumes: list[KubeObject] | None = None
    driver: DriverSpec = DriverSpec()
    executor: ExecutorSpec = ExecutorSpec()
    deps: Dependencies | None = None
    restart_policy: RestartPolicy | None = None
    node_selector: dict[str, str] | None = None
    failure_retries: int | None = Field(default=None, ge=0)
    retry_interval: int | None = Field(default=None, ge=1)
    python_version: Literal["2", "3"] | None = None
    memory_overhead_factor: str | None = None
    monitoring: MonitoringSpec | None = None
    batch_scheduler: str | None = None
    time_to_live_seconds: int | None = Field(default=None, ge=0)
    batch_scheduler_options: BatchSchedulerConfiguration | None = None
    spark_ui_options: SparkUIConfiguration | None = Field(default=None, alias="sparkUIOptions")
    driver_ingress_options: list[DriverIngressConfiguration] | None = None
    dynamic_allocation: DynamicAllocation | None = None
    suspend: bool | None = None


class ApplicationState(_Model):
    state: AppState = AppState.NEW
    error_message: str | None = None


class DriverInfo(_Model):
    web_ui_service_name: str | None = Field(default=None, alias="webUIServiceName")
    web_ui_address: str | None = Field(default=None, alias="webUIAddress")
    web_ui_port: int | None = Field(default=None, alias="webUIPort")
    web_ui_ingress_name: str | None = Field(default=None, alias="webUIIngressName")
    web_ui_ingress_address: str | None = Field(default=None, alias="webUIIngressAddress")
    pod_name: str | None = None


class SparkApplicationStatus(_Model):
    model_config = ConfigDict(extra="ignore")  # a status written by another version of a controller still reads

    spark_application_id: str | None = None
    submission_id: str | None = Field(default=None, alias="submissionID")
    last_submission_attempt_time: str | None = None
    termination_time: str | None = None
    driver_info: DriverInfo = DriverInfo()
    application_state: ApplicationState = ApplicationState()
    executor_state: dict[str, PodState] | None = None
    execution_attempts: int = 0
    submission_attempts: int = 0
    # kubeaccel's: the metadata.generation the current submission serves (a newer one re-submits)
    observed_generation: int | None = None


class ObjectMeta(BaseModel):
    """The metadata fields the controller reads; the rest is kept as it came."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str = ""
    namespace: str | None = None
    uid: str = ""
    generation: int = 0
    resourceVersion: str = ""  # noqa: N815 - the API's own name
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    deletionTimestamp: str | None = None  # noqa: N815


class SparkApplication(_Model):
    api_version: Literal["sparkoperator.k8s.io/v1beta2"] = API_VERSION
    kind: Literal["SparkApplication"] = APP_KIND
    metadata: ObjectMeta = ObjectMeta()
    spec: SparkApplicationSpec
    status: SparkApplicationStatus = SparkApplicationStatus()


class ConcurrencyPolicy(StrEnum):
    ALLOW = "Allow"
    FORBID = "Forbid"
    REPLACE = "Replace"


class ScheduleState(StrEnum):
    NEW = ""
    VALIDATING = "Validating"
    SCHEDULED = "Scheduled"
    FAILED_VALIDATION = "FailedValidation"


class ScheduledSparkApplicationSpec(_Model):
    schedule: str = Field(
        max_length=256,
        json_schema_extra={
            "x-kubernetes-validations": [
                _cel(
                    f"self.matches('{CRON_PATTERN}')",
                    "schedule must be a 5-field cron expression (e.g. '*/10 * * * *'), @hourly-style or '@every 10m'",
                )
            ]
        },
    )
    time_zone: str | None = None
    template: SparkApplicationSpec
    suspend: bool | None = None
    concurrency_policy: ConcurrencyPolicy = ConcurrencyPolicy.ALLOW
    successful_run_history_limit: int | None = Field(default=None, ge=0)
    failed_run_history_limit: int | None = Field(default=None, ge=0)


class ScheduledSparkApplicationStatus(_Model):
    model_config = ConfigDict(extra="ignore")

    last_run: str | None = None
    next_run: str | None = None
    last_run_name: str | None = None
    past_successful_run_names: list[str] | None = None
    past_failed_run_names: list[str] | None = None
    schedule_state: ScheduleState = ScheduleState.NEW
    reason: str | None = None


class ScheduledSparkApplication(_Model):
    api_version: Literal["sparkoperator.k8s.io/v1beta2"] = API_VERSION
    kind: Literal["ScheduledSparkApplication"] = SCHEDULED_KIND
    metadata: ObjectMeta = ObjectMeta()
    spec: ScheduledSparkApplicationSpec
    status: ScheduledSparkApplicationStatus = ScheduledSparkApplicationStatus()
