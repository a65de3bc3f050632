"""Another SparkApplication controller in the cluster: found at `operator run` start, so two never serve one app.

kubeflow/spark-operator (the chart `spark-operator`, v1.x and v2.x) leaves three kinds of evidence, each
read through the kube door and judged by a pure function here:

- **webhook configurations** (Mutating / Validating) with a rule on the `sparkoperator.k8s.io` group (v2's
  `mutate-sparkoperator-k8s-io-v1beta2-sparkapplication.sparkoperator.k8s.io`, ...): kubeaccel's chart has
  none, so any such rule is another controller's admission path;
- **Deployments** labelled `app.kubernetes.io/name=spark-operator` (the chart's selector labels);
- **a held leader-election Lease** named `<release>-spark-operator-controller-lock` (v2) or
  `spark-operator-lock` (v1's default), renewed within its duration: a controller that is running now.

A read RBAC forbids (the chart's account may not list every kind) is skipped, not fatal: the check says
what it found, never guesses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from kubeaccel.errors import KubeaccelError
from kubeaccel.operator.api import GROUP
from kubeaccel.operator.leader import parse_micro_time

if TYPE_CHECKING:
    from kubeaccel.kube.client import Kube

KUBEFLOW_CHART_NAME = "spark-operator"
LEASE_SUFFIXES = ("spark-operator-controller-lock", "spark-operator-lock")
EXIT_OTHER_CONTROLLER = 2  # errors.EXIT_INPUT: something in the cluster must change first


@dataclass(frozen=True)
class Evidence:
    kind: str  # "MutatingWebhookConfiguration", "Deployment", "Lease", ...
    name: str  # namespace/name for namespaced objects
    why: str


class OtherControllerError(KubeaccelError):
    """Another controller serves SparkApplications: starting would submit every app twice."""

    exit_code = EXIT_OTHER_CONTROLLER


def webhook_evidence(kind: str, config: Mapping[str, Any]) -> list[Evidence]:
    """The webhooks of one (Mutating|Validating)WebhookConfiguration with a rule on our group."""
    name = str((config.get("metadata") or {}).get("name") or "")
    found = []
    for hook in config.get("webhooks") or []:
        groups = {g for rule in hook.get("rules") or [] for g in rule.get("apiGroups") or []}
        if GROUP in groups or ("*" in groups and _names_spark(hook)):
            found.append(Evidence(kind, name, f"webhook {hook.get('name')} admits {GROUP} objects"))
    return found


def _names_spark(hook: Mapping[str, Any]) -> bool:
    return any("sparkapplication" in r for rule in hook.get("rules") or [] for r in rule.get("resources") or [])


def deployment_evidence(deployment: Mapping[str, Any]) -> Evidence | None:
    """A Deployment of kubeflow's chart (its selector labels), with its replica count."""
    meta = deployment.get("metadata") or {}
    labels = meta.get("labels") or {}
    if labels.get("app.kubernetes.io/name") != KUBEFLOW_CHART_NAME:
        return None
    replicas = (deployment.get("spec") or {}).get("replicas", 1)
    release = labels.get("app.kubernetes.io/instance", "?")
    return Evidence("Deployment", f"{meta.get('namespace')}/{meta.get('name')}",
                    f"kubeflow's spark-operator chart (release {release}), {replicas} replica(s)")  # fmt: skip


def lease_evidence(lease: Mapping[str, Any], now: datetime) -> Evidence | None:
    """A kubeflow leader-election Lease that is held now (renewed within its duration)."""
    meta = lease.get("metadata") or {}
    name = str(meta.get("name") or "")
    if not name.endswith(LEASE_SUFFIXES):
        return None
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity")
    renewed = parse_micro_time(spec.get("renewTime"))
    duration = int(spec.get("leaseDurationSeconds") or 15)
    if not holder or renewed is None or renewed + timedelta(seconds=duration) < now:
        return None
    return Evidence("Lease", f"{meta.get('namespace')}/{name}", f"held by {holder}, renewed {renewed.isoformat()}")


def judge(
    webhooks: Iterable[tuple[str, Mapping[str, Any]]],
    deployments: Iterable[Mapping[str, Any]],
    leases: Iterable[Mapping[str, Any]],
    now: datetime,
) -> list[Evidence]:
    """Every piece of evidence of another controller, in a stable order."""
    found = [e for kind, config in webhooks for e in webhook_evidence(kind, config)]
    found += [e for d in deployments if (e := deployment_evidence(d)) is not None]
    found += [e for lease in leases if (e := lease_evidence(lease, now)) is not None]
    return found


def refusal(found: list[Evidence]) -> OtherControllerError:
    listed = "; ".join(f"{e.kind} {e.name} ({e.why})" for e in found)
    return OtherControllerError(
        f"another SparkApplication controller serves {GROUP}: {listed}",
        hint="two controllers would submit every app twice: stop the other one first "
        "(kubeflow's: `helm uninstall <release> -n <namespace>`, which removes its webhooks and Deployment), "
        "see docs/operator.md 'Moving from kubeflow's operator'",
    )


def check_no_other_controller(kube: Kube, now: datetime) -> None:
    """Raise `OtherControllerError` naming what was found; a read RBAC forbids is skipped."""
    from kubeaccel.errors import ForbiddenError, NotFoundError
    from kubeaccel.kube.client import ALL_NAMESPACES

    def listed(res: Any, namespace: str | None = None, **labels: str) -> list[dict[str, Any]]:
        try:
            return kube.list_raw(res, namespace, labels=labels or None)
        except (ForbiddenError, NotFoundError):
            return []

    from lightkube.resources.admissionregistration_v1 import (
        MutatingWebhookConfiguration,
        ValidatingWebhookConfiguration,
    )
    from lightkube.resources.apps_v1 import Deployment
    from lightkube.resources.coordination_v1 import Lease

    webhooks = [(kind.__name__, c) for kind in (MutatingWebhookConfiguration, ValidatingWebhookConfiguration)
                for c in listed(kind)]  # fmt: skip
    deployments = listed(Deployment, ALL_NAMESPACES, **{"app.kubernetes.io/name": KUBEFLOW_CHART_NAME})
    found = judge(webhooks, deployments, listed(Lease, ALL_NAMESPACES), now)
    if found:
        raise refusal(found)
