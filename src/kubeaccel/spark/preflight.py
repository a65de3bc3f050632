"""Quota pre-flight: refuse an app the namespace's quota cannot hold as a whole.

Kubernetes admits the driver pod on its own; if the executors then do not fit, they stay Pending
forever. So before submitting we add up driver + all executors and compare with every
ResourceQuota's room (hard - used), after setting aside what already admitted apps will still ask
for: executors their drivers have not created yet (read from each driver's own conf ConfigMap).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from kubeaccel.errors import ConfigError, KubeaccelError
from kubeaccel.kube.client import FORBIDDEN_EXIT_CODE, Kube
from kubeaccel.kube.tenancy import Shortfall, quota_state, shortfalls
from kubeaccel.spark.builder import LABEL_APP_ID, LABEL_ROLE, PROPERTIES_FILE
from kubeaccel.spark.conf import parse_properties
from kubeaccel.spark.resources import add_requests, app_requests, executor_instances, pod_requests

QUOTA_EXIT_CODE = 6
_ACTIVE = ("Pending", "Running")


def _conf_map_name(driver: Mapping[str, Any]) -> str | None:
    for volume in (driver.get("spec") or {}).get("volumes") or []:
        if volume.get("name") == "spark-conf-volume-driver" and volume.get("configMap"):
            return str(volume["configMap"]["name"])
    return None


def outstanding_demand(kube: Kube, namespace: str) -> tuple[dict[str, Decimal], int]:
    """What active apps in the namespace will still request: executors not yet created, per their conf.

    Best effort: an app whose conf cannot be read (deleted meanwhile, not made by Spark) counts nothing.
    """
    from lightkube.resources.core_v1 import ConfigMap, Pod

    drivers = [
        p
        for p in kube.list_raw(Pod, namespace, labels={LABEL_ROLE: "driver"})
        if (p.get("status") or {}).get("phase", "Pending") in _ACTIVE
    ]
    if not drivers:
        return {}, 0
    existing = Counter(
        (p["metadata"].get("labels") or {}).get(LABEL_APP_ID, "")
        for p in kube.list_raw(Pod, namespace, labels={LABEL_ROLE: "executor"})
        if (p.get("status") or {}).get("phase", "Pending") in _ACTIVE
    )
    reserved: dict[str, Decimal] = {}
    apps = 0
    for driver in drivers:
        name = _conf_map_name(driver)
        if name is None:
            continue
        try:
            data = kube.get(ConfigMap, name, namespace=namespace).data or {}
            conf = parse_properties(data.get(PROPERTIES_FILE, ""))
            missing = executor_instances(conf) - existing[(driver["metadata"].get("labels") or {}).get(LABEL_APP_ID)]
            if missing > 0:
                add_requests(reserved, pod_requests(conf, "executor"), missing)
                apps += 1
        except (KubeaccelError, KeyError, ValueError):
            continue
    return reserved, apps


def preflight(kube: Kube, namespace: str, conf: Mapping[str, str]) -> bool:
    """Refuse an app whose driver plus all executors do not fit in the namespace's remaining quota.

    Returns whether the namespace has a quota at all (only then must concurrent submits be serialised)."""
    from lightkube.resources.core_v1 import ResourceQuota

    needed = app_requests(conf)
    try:
        quotas = kube.list(ResourceQuota, namespace=namespace)
    except KubeaccelError as exc:
        if exc.exit_code != FORBIDDEN_EXIT_CODE:
            raise
        raise KubeaccelError(
            exc.message,
            hint="the quota pre-flight needs to list resourcequotas; or skip it with --no-preflight",
            exit_code=exc.exit_code,
        ) from exc
    if not quotas:
        return False
    reserved, apps = outstanding_demand(kube, namespace)
    short: list[Shortfall] = []
    for quota in quotas:
        short += shortfalls(*quota_state(quota), needed, reserved)
    if short:
        others = f"; {apps} admitted app(s) still wait for executors" if apps else ""
        raise ConfigError(
            f"the app does not fit in namespace {namespace!r}'s quota (driver + "
            f"{int(needed['pods']) - 1} executors{others}):\n    " + "\n    ".join(s.describe() for s in short),
            hint="lower spark.executor.instances / cores / memory / resource amounts, wait for running apps to "
            "finish, or skip this check with --no-preflight",
            exit_code=QUOTA_EXIT_CODE,
        )
    return True
