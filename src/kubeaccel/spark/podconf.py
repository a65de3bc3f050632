"""The pod-level Spark confs, parsed once: labels, annotations, node selectors, driver env, pull secrets,
scheduler, the driver Service's IP families, the template container names and the Python interpreters.

Pure. `resolve_pod_conf(conf)` turns the raw keys into a `PodConf`, checked against Kubernetes' own rules
(label keys and values, DNS names, IP families), so a mistake ends in one `ConfigError` naming the key
instead of a 422 from the API server after half an app exists. The builder reads only these fields.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from kubeaccel.errors import ConfigError
from kubeaccel.kube.names import subdomain_problem
from kubeaccel.spark.conf import split_list

IP_FAMILIES = ("IPv4", "IPv6")
IP_FAMILY_POLICIES = ("SingleStack", "PreferDualStack", "RequireDualStack")
_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_NAME_MAX = 63
_ANNOTATIONS_MAX = 256 * 1024  # bytes of keys + values, the API server's limit


def _frozen(d: Mapping[str, str] | None = None) -> Mapping[str, str]:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class ServiceConf:
    """The driver's headless Service: labels, annotations and IP families."""

    labels: Mapping[str, str] = field(default_factory=_frozen)
    annotations: Mapping[str, str] = field(default_factory=_frozen)
    ip_families: tuple[str, ...] = ("IPv4",)
    ip_family_policy: str = "SingleStack"


@dataclass(frozen=True)
class PodConf:
    """What the driver pod takes from the conf besides resources, names and templates."""

    driver_labels: Mapping[str, str] = field(default_factory=_frozen)
    driver_annotations: Mapping[str, str] = field(default_factory=_frozen)  # `{{APP_ID}}` not yet filled in
    node_selector: Mapping[str, str] = field(default_factory=_frozen)  # spark.kubernetes.node.selector.* + driver's
    driver_env: Mapping[str, str] = field(default_factory=_frozen)
    pull_secrets: tuple[str, ...] = ()
    scheduler_name: str | None = None
    driver_container: str | None = None  # spark.kubernetes.driver.podTemplateContainerName
    executor_container: str | None = None  # spark.kubernetes.executor.podTemplateContainerName
    python: str | None = None  # spark.pyspark.python
    driver_python: str | None = None  # spark.pyspark.driver.python, else spark.pyspark.python
    service: ServiceConf = field(default_factory=ServiceConf)


def prefixed(conf: Mapping[str, str], prefix: str) -> dict[str, str]:
    """The keys under `prefix`, with the prefix removed (Spark's `getAllWithPrefix`)."""
    return {k[len(prefix) :]: v for k, v in conf.items() if k.startswith(prefix) and len(k) > len(prefix)}


def qualified_name_problem(key: str) -> str | None:
    """Why `key` is not a Kubernetes qualified name (`[prefix/]name`), or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or subdomain_problem(prefix, "prefix") is not None):
        return f"its prefix {prefix[:80]!r} is not a DNS subdomain"
    if len(name) > _NAME_MAX:
        return f"its name part is longer than {_NAME_MAX} characters"
    if not _NAME.fullmatch(name):
        return "its name part must be letters, digits, '-', '_' or '.', starting and ending alphanumeric"
    return None


def _check_labels(conf: Mapping[str, str], prefix: str) -> dict[str, str]:
    labels = prefixed(conf, prefix)
    for key, value in labels.items():
        problem = qualified_name_problem(key)
        if problem is None and value and (len(value) > _NAME_MAX or not _NAME.fullmatch(value)):
            problem = f"its value {value[:80]!r} is not a label value (at most 63 letters, digits, '-', '_', '.')"
        if problem:
            raise ConfigError(
                f"{prefix}{key[:100]} is not a valid Kubernetes label: {problem}",
                hint="label keys are [dns-prefix/]name and values at most 63 characters, e.g. team=etl",
            )
    return labels


def _check_annotations(conf: Mapping[str, str], prefix: str) -> dict[str, str]:
    annotations = prefixed(conf, prefix)
    for key in annotations:
        problem = qualified_name_problem(key)
        if problem:
            raise ConfigError(
                f"{prefix}{key[:100]} is not a valid annotation key: {problem}",
                hint="annotation keys are [dns-prefix/]name, e.g. example.com/owner",
            )
    size = sum(len(k.encode()) + len(v.encode()) for k, v in annotations.items())
    if size > _ANNOTATIONS_MAX:
        raise ConfigError(
            f"the {prefix}* confs add up to {size} bytes, over Kubernetes' {_ANNOTATIONS_MAX}",
            hint="keep large values in a ConfigMap and annotate its name",
        )
    return annotations


def _check_env(conf: Mapping[str, str], prefix: str) -> dict[str, str]:
    env = prefixed(conf, prefix)
    for name in env:
        if any(not " " <= ch <= "~" or ch == "=" for ch in name):  # Kubernetes' relaxed rule (1.34+)
            raise ConfigError(
                f"{prefix}{name[:100]!r} names no valid environment variable",
                hint="variable names are printable ASCII without '=', e.g. spark.kubernetes.driverEnv.MODE",
            )
    return env


def _names(conf: Mapping[str, str], key: str, what: str) -> tuple[str, ...]:
    names = tuple(split_list(conf.get(key, "")))
    for name in names:
        problem = subdomain_problem(name, f"{key} entry")
        if problem:
            raise ConfigError(problem, hint=f"list {what} by name, comma-separated")
    return names


def _optional_name(conf: Mapping[str, str], *keys: str) -> str | None:
    for key in keys:
        value = conf.get(key)
        if value:
            problem = subdomain_problem(value, key)
            if problem:
                raise ConfigError(problem, hint="name a scheduler as it is deployed, e.g. default-scheduler")
            return value
    return None


def resolve_service(conf: Mapping[str, str]) -> ServiceConf:
    families_key = "spark.kubernetes.driver.service.ipFamilies"
    policy_key = "spark.kubernetes.driver.service.ipFamilyPolicy"
    families = tuple(f.strip() for f in conf.get(families_key, "IPv4").split(","))
    if not 1 <= len(families) <= 2 or len(set(families)) != len(families) or not set(families) <= set(IP_FAMILIES):
        raise ConfigError(
            f"{families_key}={conf.get(families_key, '')[:100]!r} is not one or two distinct IP families",
            hint="use IPv4, IPv6, or IPv4,IPv6 (IPv6,IPv4 for IPv6 first)",
        )
    policy = conf.get(policy_key, "SingleStack")
    if policy not in IP_FAMILY_POLICIES:
        raise ConfigError(
            f"{policy_key}={policy[:100]!r} is not an IP family policy", hint="use " + ", ".join(IP_FAMILY_POLICIES)
        )
    if policy == "SingleStack" and len(families) == 2:
        raise ConfigError(
            f"{families_key} lists two families but {policy_key} is SingleStack",
            hint=f"set {policy_key}=PreferDualStack or RequireDualStack, or list one family",
        )
    return ServiceConf(
        labels=_frozen(_check_labels(conf, "spark.kubernetes.driver.service.label.")),
        annotations=_frozen(_check_annotations(conf, "spark.kubernetes.driver.service.annotation.")),
        ip_families=families,
        ip_family_policy=policy,
    )


def resolve_pod_conf(conf: Mapping[str, str]) -> PodConf:
    """Every pod-level conf the builder needs, checked; raises ConfigError naming the first bad key."""
    python = conf.get("spark.pyspark.python") or None
    return PodConf(
        driver_labels=_frozen(_check_labels(conf, "spark.kubernetes.driver.label.")),
        driver_annotations=_frozen(_check_annotations(conf, "spark.kubernetes.driver.annotation.")),
        node_selector=_frozen(
            {
                **_check_labels(conf, "spark.kubernetes.node.selector."),
                **_check_labels(conf, "spark.kubernetes.driver.node.selector."),
            }
        ),
        driver_env=_frozen(_check_env(conf, "spark.kubernetes.driverEnv.")),
        pull_secrets=_names(conf, "spark.kubernetes.container.image.pullSecrets", "image pull Secrets"),
        scheduler_name=_optional_name(
            conf, "spark.kubernetes.driver.scheduler.name", "spark.kubernetes.scheduler.name"
        ),
        driver_container=conf.get("spark.kubernetes.driver.podTemplateContainerName") or None,
        executor_container=conf.get("spark.kubernetes.executor.podTemplateContainerName") or None,
        python=python,
        driver_python=conf.get("spark.pyspark.driver.python") or python,
        service=resolve_service(conf),
    )
