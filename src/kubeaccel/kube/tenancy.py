"""Tenants: a namespace with a ResourceQuota, ServiceAccount `spark`, a Role and its RoleBinding.

The manifests and the quota arithmetic are pure; `create_tenant` / `tenant_usage` are the thin edge.
Extended resources (nec.com/ve) can only be limited as `requests.<name>` in a ResourceQuota, so
`--quota nec.com/ve=8` is written that way; `cpu` and `memory` mean their requests, as in Kubernetes.

Safe and atomic: every input is validated before the first write (names, reserved namespaces, quota keys,
duplicates, amounts, the Pod Security level); then the objects are applied in order and, if one fails,
the ones this call created are deleted and the ones it changed are put back as they were.
The namespace is labelled for Pod Security Admission (`enforce: baseline` unless told otherwise), so a
tenant's ServiceAccount cannot start privileged, host-namespace or hostPath pods.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from kubeaccel.errors import ApiError, ConfigError, KubeaccelError, NotFoundError, UnavailableError
from kubeaccel.kube.client import Kube
from kubeaccel.kube.interrupts import (
    Interrupted,
    SignalAfterWrite,
    exit_code_for,
    guarded_signals,
    raise_if_signalled,
    signal_name,
    signals_held,
)
from kubeaccel.kube.quantity import format_quantity, parse_quantity
from kubeaccel.kube.rest import RESOURCEQUOTAS

SERVICE_ACCOUNT = "spark"
ROLE = "spark"
QUOTA = "spark-quota"
MANAGED_BY = {"app.kubernetes.io/managed-by": "kubeaccel"}
_ROLE_RESOURCES = ["pods", "services", "configmaps", "persistentvolumeclaims"]
_ROLE_VERBS = ["create", "get", "list", "watch", "update", "patch", "delete", "deletecollection"]
# the per-namespace quota lock of `kubeaccel spark submit` (kubeaccel.spark.reservation)
_LEASE_RULE = {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
RESERVED_NAMESPACES = ("kube-system", "kube-public", "kube-node-lease")
POD_SECURITY_LEVELS = ("privileged", "baseline", "restricted")
DEFAULT_POD_SECURITY = "baseline"
_PSA = "pod-security.kubernetes.io"
# an extended resource name: a DNS-subdomain prefix, '/', then a name Kubernetes accepts
_EXTENDED = re.compile(
    r"^(?=.{1,253}/)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/"
    r"(?=.{1,63}$)[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
)
_NAMESPACE_RE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# keys a ResourceQuota accepts besides `requests.<extended resource>`
_PLAIN_KEYS = {
    "pods",
    "services",
    "configmaps",
    "secrets",
    "persistentvolumeclaims",
    "requests.storage",
    "requests.cpu",
    "requests.memory",
    "limits.cpu",
    "limits.memory",
    "requests.ephemeral-storage",
    "limits.ephemeral-storage",
}


_DRA_DEVICES = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\.deviceclass\.resource\.k8s\.io/devices$")


def quota_key(name: str) -> str:
    """The ResourceQuota key for a user's `--quota` name."""
    if name in ("cpu", "memory", "ephemeral-storage"):
        return f"requests.{name}"
    if name in _PLAIN_KEYS or name.startswith("count/"):
        return name
    if _DRA_DEVICES.match(name):  # DRA: devices of one DeviceClass, counted as such (no requests. prefix)
        return name
    if "/" in name:
        bare = name.removeprefix("requests.")
        if bare.startswith("limits."):
            raise ConfigError(
                f"quota {name!r}: extended resources cannot have a limits quota",
                hint=f"use requests.{bare.removeprefix('limits.')} (Kubernetes allows only that form)",
            )
        if not _EXTENDED.match(bare):
            raise ConfigError(
                f"quota {name!r}: {bare!r} is not a valid extended resource name",
                hint="write DOMAIN/NAME, e.g. nec.com/ve or nvidia.com/gpu (lowercase domain, no spaces)",
            )
        return f"requests.{bare}"
    raise ConfigError(
        f"quota {name!r} is not a resource a ResourceQuota can limit",
        hint="use cpu, memory, pods, limits.cpu, limits.memory or an extended resource like nec.com/ve",
    )


def parse_quota(text: str) -> dict[str, str]:
    """`cpu=16,memory=64Gi,nec.com/ve=8` -> ResourceQuota `hard` (every item validated)."""
    items: list[tuple[str, str]] = []
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, sep, amount = item.partition("=")
        if not sep or not name.strip() or not amount.strip():
            raise ConfigError(
                f"quota item {item!r} is not NAME=AMOUNT", hint="e.g. --quota cpu=16,memory=64Gi,nec.com/ve=8"
            )
        items.append((name.strip(), amount.strip()))
    return validate_quota(items)


def validate_quota(items: list[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    """Quota keys and amounts as a ResourceQuota takes them; refuses duplicates (`cpu` and
    `requests.cpu` are the same line) and amounts that are not finite, non-negative quantities."""
    pairs = list(items.items()) if isinstance(items, Mapping) else list(items)
    hard: dict[str, str] = {}
    given: dict[str, str] = {}
    for name, amount in pairs:
        key = quota_key(name)
        if key in hard:
            raise ConfigError(
                f"quota {key} is given twice ({given[key]}={hard[key]} and {name}={amount})",
                hint="give each resource once",
            )
        value = parse_quantity(amount)
        if not value.is_finite() or value < 0:
            raise ConfigError(f"quota {name}={amount}: an amount must be zero or more", hint="e.g. cpu=16, memory=64Gi")
        hard[key], given[key] = amount, name
    return hard


def check_namespace_name(name: str) -> None:
    if not _NAMESPACE_RE.match(name):
        raise ConfigError(
            f"{name!r} is not a valid namespace name",
            hint="use at most 63 lowercase letters, digits and '-', starting and ending alphanumeric",
        )


def check_tenant_name(name: str, *, force: bool = False) -> None:
    """A valid namespace name that is not one of Kubernetes' own (nor `default`, unless forced)."""
    check_namespace_name(name)
    if name in RESERVED_NAMESPACES:
        raise ConfigError(
            f"{name!r} belongs to Kubernetes itself and cannot be a tenant",
            hint="pick another name for the tenant's namespace",
        )
    if name == "default" and not force:
        raise ConfigError(
            "'default' is shared by everything that names no namespace; making it a tenant puts a quota and "
            "Pod Security rules on all of that",
            hint="pick another name, or pass --force if that is really what you want",
        )


def check_pod_security(level: str) -> None:
    if level not in POD_SECURITY_LEVELS:
        raise ConfigError(
            f"{level!r} is not a Pod Security level",
            hint=f"use one of {', '.join(POD_SECURITY_LEVELS)} (privileged: what VE pods with IPC_LOCK need)",
        )


def pod_security_labels(level: str) -> dict[str, str]:
    """Pod Security Admission: refuse pods above `level`, and warn / audit the same."""
    check_pod_security(level)
    labels = {}
    for mode in ("enforce", "warn", "audit"):
        labels[f"{_PSA}/{mode}"] = level
        labels[f"{_PSA}/{mode}-version"] = "latest"
    return labels


def tenant_manifests(
    name: str, hard: Mapping[str, str], *, pod_security: str = DEFAULT_POD_SECURITY, force: bool = False
) -> list[dict[str, Any]]:
    """Everything a Spark tenant needs, in the order it must be applied (validates all inputs first)."""
    check_tenant_name(name, force=force)
    hard = validate_quota(hard)
    labels = {**MANAGED_BY, "kubeaccel.io/tenant": name, **pod_security_labels(pod_security)}
    manifests: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": name, "labels": labels},
        },
        {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": {"name": SERVICE_ACCOUNT, "namespace": name, "labels": dict(MANAGED_BY)},
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "Role",
            "metadata": {"name": ROLE, "namespace": name, "labels": dict(MANAGED_BY)},
            "rules": [
                {"apiGroups": [""], "resources": list(_ROLE_RESOURCES), "verbs": list(_ROLE_VERBS)},
                dict(_LEASE_RULE),
            ],
        },
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {"name": ROLE, "namespace": name, "labels": dict(MANAGED_BY)},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE},
            "subjects": [{"kind": "ServiceAccount", "name": SERVICE_ACCOUNT, "namespace": name}],
        },
    ]
    if hard:
        manifests.append(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": QUOTA, "namespace": name, "labels": dict(MANAGED_BY)},
                "spec": {"hard": dict(hard)},
            }
        )
    return manifests


@dataclass(frozen=True)
class Shortfall:
    """One quota line an application does not fit in."""

    quota: str
    resource: str
    needed: Decimal
    remaining: Decimal
    hard: Decimal
    reserved: Decimal = Decimal(0)

    def describe(self) -> str:
        text = (
            f"{self.resource}: the app needs {format_quantity(self.needed, self.resource)}, quota "
            f"{self.quota} has {format_quantity(self.remaining, self.resource)} left of "
            f"{format_quantity(self.hard, self.resource)}"
        )
        if self.reserved:
            text += f", of which {format_quantity(self.reserved, self.resource)} other apps' executors still need"
        return text


def _equivalent(key: str) -> str:
    return {"cpu": "requests.cpu", "memory": "requests.memory"}.get(key, key)


def shortfalls(
    quota: str,
    hard: Mapping[str, str],
    used: Mapping[str, str],
    needed: Mapping[str, Decimal],
    reserved: Mapping[str, Decimal] | None = None,
) -> list[Shortfall]:
    """Which of `needed` (an app's totals, quota-keyed) the quota's remaining room cannot hold, once
    `reserved` (what other admitted apps will still ask for) is set aside."""
    reserved = reserved or {}
    result = []
    for raw_key, limit in hard.items():
        key = _equivalent(raw_key)
        if key not in needed:
            continue
        hard_value = parse_quantity(limit)
        remaining = hard_value - parse_quantity(used.get(raw_key, "0"))
        held = reserved.get(key, Decimal(0))
        if needed[key] > remaining - held:
            result.append(Shortfall(quota, key, needed[key], max(remaining, Decimal(0)), hard_value, held))
    return result


def create_tenant(
    kube: Kube,
    name: str,
    hard: Mapping[str, str],
    *,
    pod_security: str = DEFAULT_POD_SECURITY,
    force: bool = False,
) -> list[str]:
    """Apply the tenant, all or nothing (idempotent: server-side apply). Returns what was applied, as
    `kind/name`. On a failing step, or SIGINT / SIGTERM / SIGHUP (in the main thread), the steps before it
    are undone; then the step's error is raised (`TenantInterruptedError` for a signal, exit 128 + signal;
    `TenantRollbackError` when even the undo failed, naming what is left)."""
    from lightkube.codecs import from_dict

    manifests = tenant_manifests(name, hard, pod_security=pod_security, force=force)
    for manifest in manifests:
        from_dict(manifest)  # a bug in a manifest fails here, before any write
    before = [(manifest, _current(kube, manifest)) for manifest in manifests]  # reads only
    done: list[tuple[dict[str, Any], Any]] = []
    steps = SignalAfterWrite()
    with guarded_signals():
        try:
            for manifest, previous in before:
                done.append((manifest, previous))  # before the request: one cut short may still be applied
                try:
                    kube.apply(manifest, namespace=manifest["metadata"].get("namespace"))
                except ApiError as refused:
                    if not isinstance(refused, UnavailableError):
                        done.pop()  # the server answered no: nothing was written
                    raise
                steps.step_done()
            raise_if_signalled()
        except (KubeaccelError, Interrupted) as exc:
            with signals_held():  # the undo must not be cut short by a second signal
                left = _undo(kube, done)
            error = _tenant_error(exc, left, name, done)
            raise error from exc
    return [f"{manifest['kind']}/{manifest['metadata']['name']}" for manifest in manifests]


def _tenant_error(
    exc: KubeaccelError | Interrupted, left: list[str], name: str, done: list[tuple[dict[str, Any], Any]]
) -> KubeaccelError:
    if isinstance(exc, Interrupted):
        cause = KubeaccelError(f"interrupted by {signal_name(exc.signum)}", exit_code=exit_code_for(exc.signum))
        if not left:
            undone = ", ".join(f"{m['kind']}/{m['metadata']['name']}" for m, _ in done) or "nothing written yet"
            return TenantInterruptedError(f"{cause.message}: undone ({undone})", exit_code=cause.exit_code)
        return TenantRollbackError(cause, left, name)
    return TenantRollbackError(exc, left, name) if left else exc


class TenantInterruptedError(KubeaccelError):
    """`tenant create` was interrupted by a signal and what it had applied was undone."""


class TenantRollbackError(KubeaccelError):
    """A tenant step failed and undoing the steps before it failed too."""

    def __init__(self, error: KubeaccelError, left: list[str], name: str) -> None:
        super().__init__(
            f"{error.message}; undoing the earlier steps failed too, left: " + "; ".join(left),
            hint=f"remove the tenant with: kubectl delete namespace {name} (if it was new), then retry",
            exit_code=error.exit_code,
        )
        self.left = left


def _resource(manifest: Mapping[str, Any]) -> Any:
    from lightkube.core.resource_registry import resource_registry

    return resource_registry.load(manifest["apiVersion"], manifest["kind"])


def _current(kube: Kube, manifest: Mapping[str, Any]) -> Any:
    """The object as it is now, or None when it does not exist (what undo goes back to)."""
    metadata = manifest["metadata"]
    try:
        return kube.get(_resource(manifest), metadata["name"], namespace=metadata.get("namespace"))
    except NotFoundError:
        return None


def _undo(kube: Kube, done: list[tuple[dict[str, Any], Any]]) -> list[str]:
    """Undo applied steps, last first: delete what was created, put back what was changed. Returns what
    could not be undone. A namespace this call created takes everything in it along when deleted."""
    left = []
    created_namespace = any(m["kind"] == "Namespace" and previous is None for m, previous in done)
    for manifest, previous in reversed(done):
        metadata = manifest["metadata"]
        what = f"{manifest['kind']}/{metadata['name']}"
        if created_namespace and metadata.get("namespace"):
            continue  # goes with the namespace
        try:
            if previous is None:
                kube.delete(_resource(manifest), metadata["name"], namespace=metadata.get("namespace"), missing_ok=True)
            else:
                _restore(kube, previous, metadata.get("namespace"), what)
        except KubeaccelError as exc:
            left.append(f"{what} ({exc.message})")
    return left


def _restore(kube: Kube, previous: Any, namespace: str | None, what: str) -> None:
    """Put an object back as it was before this call changed it (an unconditional replace)."""
    previous.metadata.resourceVersion = None
    previous.metadata.managedFields = None
    kube.replace(previous.to_dict(), namespace)


@dataclass(frozen=True)
class QuotaUsage:
    quota: str
    resource: str
    used: str
    hard: str


def quota_state(quota: Mapping[str, Any]) -> tuple[str, dict[str, str], dict[str, str]]:
    """(name, hard, used) of a ResourceQuota as JSON; `hard` from status once the controller has seen it."""
    status = quota.get("status") or {}
    hard = status.get("hard") or (quota.get("spec") or {}).get("hard") or {}
    used = status.get("used") or {}
    name = (quota.get("metadata") or {}).get("name") or "?"
    return str(name), {str(k): str(v) for k, v in hard.items()}, {str(k): str(v) for k, v in used.items()}


def tenant_usage(kube: Kube, name: str) -> list[QuotaUsage]:
    """Usage against every ResourceQuota in the tenant's namespace (checks the namespace exists)."""
    from lightkube.resources.core_v1 import Namespace

    kube.get(Namespace, name)
    rows = []
    for quota in kube.list_raw(RESOURCEQUOTAS, namespace=name):
        quota_name, hard, used = quota_state(quota)
        rows += [QuotaUsage(quota_name, key, used.get(key, "0"), hard[key]) for key in sorted(hard)]
    return rows
