"""Quota pre-flight: refuse an app the namespace's quota cannot hold as a whole.

Kubernetes admits the driver pod on its own; if the executors then do not fit, they stay Pending
forever. So before submitting we add up driver + all executors (`ResolvedApp.app_requests`, the same
per-pod numbers the builder puts on the driver pod and Spark puts on executor pods) and compare with
every ResourceQuota's room (hard - used), after setting aside what already admitted apps will still ask
for: executors their drivers have not created yet (read from each driver's own conf ConfigMap).

`check_fits` is the pure decision; `quota_snapshot` and `outstanding_demand` read the cluster. A
caller that serialises submissions (a reservation) calls them inside its critical section.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from kubeaccel.errors import ForbiddenError, KubeaccelError, QuotaError
from kubeaccel.kube.client import Kube
from kubeaccel.kube.rest import CONFIGMAPS, PODS, RESOURCEQUOTAS
from kubeaccel.kube.tenancy import Shortfall, quota_state, shortfalls
from kubeaccel.spark.builder import PROPERTIES_FILE
from kubeaccel.spark.conf import parse_properties
from kubeaccel.spark.labels import LABEL_APP_ID, LABEL_ROLE
from kubeaccel.spark.resources import add_requests, executor_instances, executor_resources_of_running_app

if TYPE_CHECKING:
    from kubeaccel.spark.model import ResolvedApp

QUOTA_EXIT_CODE = QuotaError.exit_code
_ACTIVE = ("Pending", "Running")


@dataclass(frozen=True)
class QuotaLine:
    """One ResourceQuota as the pre-flight sees it."""

    name: str
    hard: Mapping[str, str]
    used: Mapping[str, str]


def _conf_map_name(driver: Mapping[str, Any]) -> str | None:
    for volume in (driver.get("spec") or {}).get("volumes") or []:
        if volume.get("name") == "spark-conf-volume-driver" and volume.get("configMap"):
            return str(volume["configMap"]["name"])
    return None


def outstanding_demand(kube: Kube, namespace: str) -> tuple[dict[str, Decimal], int]:
    """What active apps in the namespace will still request: executors not yet created, per their conf.

    Best effort: an app whose conf cannot be read (deleted meanwhile, not made by Spark) counts nothing.
    """
    drivers = [
        p
        for p in kube.list_raw(PODS, namespace, labels={LABEL_ROLE: "driver"})
        if (p.get("status") or {}).get("phase", "Pending") in _ACTIVE
    ]
    if not drivers:
        return {}, 0
    existing = Counter(
        (p["metadata"].get("labels") or {}).get(LABEL_APP_ID, "")
        for p in kube.list_raw(PODS, namespace, labels={LABEL_ROLE: "executor"})
        if (p.get("status") or {}).get("phase", "Pending") in _ACTIVE
    )
    reserved: dict[str, Decimal] = {}
    apps = 0
    for driver in drivers:
        name = _conf_map_name(driver)
        if name is None:
            continue
        try:
            data = kube.get_raw(CONFIGMAPS, name, namespace).get("data") or {}
            conf = parse_properties(data.get(PROPERTIES_FILE, ""))
            missing = executor_instances(conf) - existing[(driver["metadata"].get("labels") or {}).get(LABEL_APP_ID)]
            if missing > 0:
                add_requests(reserved, _executor_quota_of_running_app(conf), missing)
                apps += 1
        except (KubeaccelError, KeyError, ValueError):
            continue
    return reserved, apps


def _executor_quota_of_running_app(conf: Mapping[str, str]) -> dict[str, Decimal]:
    """One executor of an admitted app; devices it claims through DRA count per DeviceClass instead."""
    from kubeaccel.spark import dra

    requests = executor_resources_of_running_app(conf).quota_requests()
    claims = dra.requests(conf, "executor")
    for claim in claims:
        for key in [k for k in requests if k.startswith("requests.") and k.endswith(f"/{claim.name}")]:
            del requests[key]
    return add_requests(requests, {k: Decimal(v) for k, v in dra.quota(claims).items()})


def quota_snapshot(kube: Kube, namespace: str) -> list[QuotaLine]:
    """Every ResourceQuota of the namespace (hard and used)."""
    try:
        quotas = kube.list_raw(RESOURCEQUOTAS, namespace=namespace)
    except ForbiddenError as exc:
        raise ForbiddenError(
            exc.message,
            hint="the quota pre-flight needs to list resourcequotas; or skip it with --no-preflight",
            reason=exc.reason,
            code=exc.code,
        ) from exc
    return [QuotaLine(*quota_state(quota)) for quota in quotas]


def check_fits(
    namespace: str,
    *,
    needed: Mapping[str, Decimal],
    executors: int,
    quotas: Sequence[QuotaLine],
    reserved: Mapping[str, Decimal],
    waiting_apps: int = 0,
) -> None:
    """Pure: raise QuotaError (exit 6) when `needed` does not fit in every quota's room after `reserved`."""
    short: list[Shortfall] = []
    for quota in quotas:
        short += shortfalls(quota.name, quota.hard, quota.used, needed, reserved)
    if short:
        others = f"; {waiting_apps} admitted app(s) still wait for executors" if waiting_apps else ""
        raise QuotaError(
            f"the app does not fit in namespace {namespace!r}'s quota (driver + {executors} executors{others}):\n    "
            + "\n    ".join(s.describe() for s in short),
            hint="lower spark.executor.instances / cores / memory / resource amounts, wait for running apps to "
            "finish, or skip this check with --no-preflight",
        )


def preflight(kube: Kube, app: ResolvedApp) -> bool:
    """Refuse an app whose driver plus all executors do not fit in the namespace's remaining quota.

    Returns whether the namespace has a quota at all (only then must concurrent submits be serialised)."""
    namespace = app.namespace or kube.context_namespace or "default"
    quotas = quota_snapshot(kube, namespace)
    if not quotas:
        return False
    reserved, waiting = outstanding_demand(kube, namespace)
    check_fits(
        namespace,
        needed=app.app_requests(),
        executors=app.executor_instances,
        quotas=quotas,
        reserved=reserved,
        waiting_apps=waiting,
    )
    return True
