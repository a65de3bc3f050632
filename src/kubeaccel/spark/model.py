"""One typed, immutable app: everything a submission needs, resolved once at the edge.

    from kubeaccel.spark.conf import SubmitRequest
    from kubeaccel.spark.model import resolve
    app = resolve(SubmitRequest("local:///opt/app.py", master="k8s://https://10.0.0.1:6443",
                                conf={"spark.kubernetes.container.image": "spark:4.3"}))
    app.kind, app.driver.memory_mib, app.executor.memory_mib, app.app_requests()

`resolve` merges flags, `--conf` and the properties file (spark-submit's precedence), plans the
uploads, derives what Spark derives (the app kind and with it the memory overhead factor, the main
class, the ports), checks every value (names, numbers, URLs, templates) and returns a `ResolvedApp`.
The builder, the quota pre-flight, `--wait` and the Python API read its fields; nothing downstream
parses a raw conf key this module has already resolved.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from types import MappingProxyType
from typing import Any

from kubeaccel.errors import ConfigError
from kubeaccel.kube.kubeconfig import check_server_url
from kubeaccel.kube.names import label_problem, subdomain_problem
from kubeaccel.spark import dra, templates, uploads
from kubeaccel.spark.conf import PYTHON_RUNNER, R_RUNNER, SubmitRequest, conf_bool, conf_int, master_url, resolve_conf
from kubeaccel.spark.gang import GangSpec, resolve_gang
from kubeaccel.spark.labels import name_prefix_base
from kubeaccel.spark.packages import Packages, packages_from_conf
from kubeaccel.spark.podconf import PodConf, resolve_pod_conf
from kubeaccel.spark.resources import (
    FACTOR_KEY,
    RESOURCE_TYPE_KEY,
    PodResources,
    add_requests,
    executor_instances,
    overhead_factor,
    pod_resources,
)

CONTEXT_KEY = "spark.kubernetes.context"
NAMESPACE_KEY = "spark.kubernetes.namespace"
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
APP_NAME_MAX = 200  # + "-<15-char id>-driver-podspec-conf-map" stays within a 253-character name


class AppKind(StrEnum):
    """What runs in the driver; Spark's `spark.kubernetes.resource.type`."""

    JVM = "java"
    PYTHON = "python"
    R = "r"

    @property
    def non_jvm(self) -> bool:
        return self is not AppKind.JVM


@dataclass(frozen=True)
class Ports:
    driver: int
    block_manager: int
    ui: int
    connect: int


@dataclass(frozen=True)
class ResolvedApp:
    """A Spark app ready to build: final conf, where it goes, what its pods get. Immutable."""

    conf: Mapping[str, str]  # the final conf the driver gets, with every derived key, before per-submission IDs
    kind: AppKind
    app_resource: str  # after uploads: the URI the driver reads
    app_args: tuple[str, ...]
    main_class: str
    app_name: str
    master: str  # the API server URL (`k8s://` removed)
    context: str | None  # the kubeconfig context (spark.kubernetes.context)
    namespace: str | None  # None: the kubeconfig context's namespace, else "default" (see `placed`)
    image: str
    pull_policy: str
    overhead_factor: float  # Spark's overheadFactor: the driver's, propagated to executors
    driver: PodResources
    executor: PodResources
    executor_instances: int  # the most executors at once (quota)
    ports: Ports
    driver_pod_name: str | None
    service_account: str | None
    local_dirs_tmpfs: bool
    driver_template: Mapping[str, Any] | None
    executor_template_text: str | None
    uploads: uploads.UploadPlan
    packages: Packages
    # Spark on DRA (`spark.kubeaccel.dra.*`, see kubeaccel.spark.dra): devices claimed per pod of each role
    # (their extended-resource accelerators are left out of `driver` / `executor` above), and the
    # `<vendor>/<name>` limits Spark still adds to executors, which the deploy's admission policy removes
    driver_claims: tuple[dra.ClaimRequest, ...] = ()
    executor_claims: tuple[dra.ClaimRequest, ...] = ()
    executor_claimed_limits: tuple[str, ...] = ()
    pod: PodConf = dataclasses.field(default_factory=PodConf)  # labels, env, selectors, Service... (podconf)
    gang: GangSpec | None = None  # all-or-nothing scheduling (`spark.kubeaccel.gang.*`, see kubeaccel.spark.gang)

    def placed(self, context_namespace: str | None) -> ResolvedApp:
        """The app with its namespace decided: the conf's, else the context's, else `default`."""
        if self.namespace is not None:
            return self
        namespace = context_namespace or "default"
        _check_namespace(namespace, "the kubeconfig context's namespace")
        return dataclasses.replace(self, namespace=namespace)

    def app_requests(self) -> dict[str, Decimal]:
        """Driver + all executors, keyed like a ResourceQuota."""
        totals = add_requests({}, self.driver.quota_requests())
        totals = add_requests(totals, self.executor.quota_requests(), self.executor_instances)
        claimed = {**dra.quota(list(self.driver_claims))}
        for key, count in dra.quota(list(self.executor_claims), self.executor_instances).items():
            claimed[key] = claimed.get(key, 0) + count
        return add_requests(totals, {key: Decimal(count) for key, count in claimed.items()})


def _check_namespace(namespace: str, what: str) -> str:
    problem = label_problem(namespace, what)
    if problem:
        raise ConfigError(problem, hint="a namespace is a DNS label, e.g. team-a")
    return namespace


def _kind(request: SubmitRequest) -> AppKind:
    if request.is_python:
        return AppKind.PYTHON
    if request.is_r:
        return AppKind.R
    return AppKind.JVM


def _ports(conf: Mapping[str, str]) -> Ports:
    def port(key: str, default: int) -> int:
        return conf_int(conf, key, default, minimum=1, maximum=65535)

    block_manager = port("spark.driver.blockManager.port", port("spark.blockManager.port", 7079))
    return Ports(
        port("spark.driver.port", 7078),
        block_manager,
        port("spark.ui.port", 4040),
        port("spark.connect.grpc.binding.port", 15002),
    )


def _image(conf: Mapping[str, str]) -> tuple[str, str]:
    image = conf.get("spark.kubernetes.driver.container.image") or conf.get("spark.kubernetes.container.image")
    if not image or not image.strip() or any(ch.isspace() for ch in image):
        raise ConfigError(
            "no container image for the driver" if not image else f"image {image[:100]!r} contains spaces",
            hint="set spark.kubernetes.container.image (or spark.kubernetes.driver.container.image)",
        )
    pull_policy = conf.get("spark.kubernetes.container.image.pullPolicy", "IfNotPresent")
    if pull_policy not in PULL_POLICIES:
        raise ConfigError(
            f"spark.kubernetes.container.image.pullPolicy={pull_policy[:100]!r} is not a pull policy",
            hint="use Always, IfNotPresent or Never",
        )
    return image, pull_policy


def _checked_names(conf: Mapping[str, str]) -> tuple[str | None, str | None, str | None]:
    """(namespace, driver pod name, service account) from the conf, each checked against Kubernetes' rules."""
    namespace = conf.get(NAMESPACE_KEY)
    if namespace is not None:
        _check_namespace(namespace, NAMESPACE_KEY)
    pod_name = conf.get("spark.kubernetes.driver.pod.name") or None
    if pod_name is not None:
        problem = subdomain_problem(pod_name, "spark.kubernetes.driver.pod.name")
        if problem:
            raise ConfigError(problem, hint="a pod name is lowercase letters, digits, '-' and '.'")
    account = conf.get("spark.kubernetes.authenticate.driver.serviceAccountName") or None
    if account is not None:
        problem = subdomain_problem(account, "spark.kubernetes.authenticate.driver.serviceAccountName")
        if problem:
            raise ConfigError(problem, hint="name an existing ServiceAccount, e.g. spark")
    return namespace, pod_name, account


def _app_name(conf: Mapping[str, str]) -> str:
    name = conf["spark.app.name"]
    base = name_prefix_base(name)
    if not base:
        raise ConfigError(
            f"app name {name[:100]!r} has no letters or digits to name pods with",
            hint="pass --name with at least one letter or digit, e.g. --name etl",
        )
    if len(base) > APP_NAME_MAX:
        raise ConfigError(
            f"app name {name[:100]!r}... is longer than {APP_NAME_MAX} characters",
            hint="object names are derived from it and must fit Kubernetes' limits; pass a shorter --name",
        )
    return name


def _templates(conf: Mapping[str, str]) -> tuple[dict[str, Any] | None, str | None]:
    driver = executor = None
    if conf.get(templates.DRIVER_KEY):
        driver, _ = templates.load(conf[templates.DRIVER_KEY], templates.DRIVER_KEY)
    if conf.get(templates.EXECUTOR_KEY):
        _, executor = templates.load(conf[templates.EXECUTOR_KEY], templates.EXECUTOR_KEY)
    return driver, executor


def resolve(request: SubmitRequest, *, upload_id: str | None = None) -> ResolvedApp:
    """Every input of a submission, checked and typed. Pure apart from reading local files."""
    merged = resolve_conf(request)
    server = check_server_url(master_url(merged["spark.master"]), "--master")
    plan = uploads.plan_uploads(request, merged, upload_id)
    assert plan.request is not None
    kind = _kind(request)
    conf = dict(plan.conf)
    conf[RESOURCE_TYPE_KEY] = kind.value
    namespace, pod_name, account = _checked_names(conf)
    image, pull_policy = _image(conf)
    factor = overhead_factor(conf, kind.non_jvm)
    # executors fall back to the factor the driver propagates; compute theirs from the conf they will see
    executor_view = {**conf, FACTOR_KEY: repr(factor)}
    driver_template, executor_template = _templates(conf)
    main_class = {AppKind.PYTHON: PYTHON_RUNNER, AppKind.R: R_RUNNER}.get(kind, request.main_class or "")
    driver, driver_claims = _claimed(pod_resources(conf, "driver", factor), dra.requests(conf, "driver"))
    all_executor = pod_resources(executor_view, "executor", factor)
    executor, executor_claims = _claimed(all_executor, dra.requests(conf, "executor"))
    kept = {a.resource_name for a in executor.accelerators}
    claimed_limits = {a.resource_name for a in all_executor.accelerators} - kept
    return ResolvedApp(
        conf=MappingProxyType(conf),
        kind=kind,
        app_resource=plan.request.app_resource,
        app_args=tuple(request.app_args),
        main_class=main_class,
        app_name=_app_name(conf),
        master=server,
        context=conf.get(CONTEXT_KEY) or None,
        namespace=namespace,
        image=image,
        pull_policy=pull_policy,
        overhead_factor=factor,
        driver=driver,
        executor=executor,
        executor_instances=executor_instances(conf),
        ports=_ports(conf),
        driver_pod_name=pod_name,
        service_account=account,
        local_dirs_tmpfs=conf_bool(conf, "spark.kubernetes.local.dirs.tmpfs"),
        driver_template=MappingProxyType(driver_template) if driver_template is not None else None,
        executor_template_text=executor_template,
        uploads=plan,
        packages=packages_from_conf(conf),
        driver_claims=driver_claims,
        executor_claims=executor_claims,
        executor_claimed_limits=tuple(sorted(claimed_limits)),
        pod=resolve_pod_conf(conf),
        gang=resolve_gang(conf),
    )


def _claimed(pod: PodResources, claims: list[dra.ClaimRequest]) -> tuple[PodResources, tuple[dra.ClaimRequest, ...]]:
    """The pod's resources without the accelerators it claims through DRA, and those claims."""
    names = {c.name for c in claims}
    kept = tuple(a for a in pod.accelerators if a.name not in names)
    return dataclasses.replace(pod, accelerators=kept), tuple(claims)
