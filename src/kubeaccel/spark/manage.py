"""status / kill / logs / list for cluster-mode apps, addressed by submission ID or glob.

One list call per command (driver pods by label, filtered by fnmatch here; executors likewise,
counted per app), and kill deletes the matched drivers concurrently: a glob over a thousand apps
costs one list and parallel DELETEs instead of a JVM start and a sequential loop.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from kubeaccel.errors import ConfigError, NotFoundError
from kubeaccel.kube.client import ALL_NAMESPACES, Kube
from kubeaccel.spark.builder import LABEL_APP_ID, LABEL_APP_NAME, LABEL_ROLE
from kubeaccel.spark.ids import SubmissionId, Target, parse_target

DEFAULT_KILL_GRACE_SECONDS = 30
_WAITING_PROBLEMS = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
}


@dataclass(frozen=True)
class AppStatus:
    """What `status` and `list` report for one application."""

    id: str
    namespace: str
    driver_pod: str
    app_name: str
    app_id: str
    phase: str
    reason: str
    node: str | None
    start: str | None
    end: str | None
    exit_code: int | None
    executors: int
    executors_running: int

    def as_dict(self) -> dict[str, Any]:
        # every field is a scalar: a shallow copy is what dataclasses.asdict's deep walk produces, 5x cheaper
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


def scope(kube: Kube, target: Target) -> str:
    """Namespace to search: the target's, else the context's own, else all namespaces (as spark-submit)."""
    if target.namespace == "*":
        return ALL_NAMESPACES
    return target.namespace or kube.context_namespace or ALL_NAMESPACES


Pod = dict[str, Any]  # a pod as the API returns it (JSON): these commands read only a few fields


def _name(pod: Pod) -> str:
    return str(pod["metadata"]["name"])


def _namespace(pod: Pod) -> str:
    return str(pod["metadata"]["namespace"])


def _labels(pod: Pod) -> dict[str, str]:
    return pod["metadata"].get("labels") or {}


def _phase(pod: Pod) -> str:
    return str((pod.get("status") or {}).get("phase") or "Unknown")


def _app_id(pod: Pod) -> str:
    return _labels(pod).get(LABEL_APP_ID, "")


def _id(pod: Pod) -> SubmissionId:
    return SubmissionId(_namespace(pod), _name(pod))


def find_drivers(kube: Kube, target: Target) -> list[Pod]:
    """Driver pods whose name matches the target, sorted by namespace and name."""
    from lightkube.resources.core_v1 import Pod as PodResource

    namespace = scope(kube, target)
    if not target.is_glob and namespace != ALL_NAMESPACES:
        fields = {"metadata.name": target.pattern}
        pods = kube.list_raw(PodResource, namespace, labels={LABEL_ROLE: "driver"}, fields=fields)
    else:
        drivers = kube.list_raw(PodResource, namespace, labels={LABEL_ROLE: "driver"})
        pods = [p for p in drivers if target.matches(_name(p))]
    return sorted(pods, key=lambda p: (_namespace(p), _name(p)))


def _require(pods: list[Pod], target: Target, kube: Kube) -> list[Pod]:
    if not pods:
        where = scope(kube, target)
        place = "any namespace" if where == ALL_NAMESPACES else f"namespace {where!r}"
        raise NotFoundError(
            f"no Spark driver pod matching {target.pattern!r} in {place}",
            hint="list the apps with `kubeaccel spark list`; IDs are NAMESPACE:DRIVER-POD",
        )
    return pods


def describe(pod: Pod, executors: int = 0, running: int = 0) -> AppStatus:
    """Phase plus the one reason a person needs: image pull error, OOMKilled, Unschedulable, exit code."""
    status = pod.get("status") or {}
    labels = _labels(pod)
    reason, exit_code, end = "", None, None
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = f"{condition.get('reason') or 'Unschedulable'}: {condition.get('message') or ''}".strip(": ")
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        waiting, terminated = state.get("waiting") or {}, state.get("terminated")
        if waiting.get("reason") and (waiting["reason"] in _WAITING_PROBLEMS or not reason):
            reason = f"{waiting['reason']}: {waiting['message']}" if waiting.get("message") else waiting["reason"]
        if terminated is not None:
            exit_code = terminated.get("exitCode")
            end = terminated.get("finishedAt")
            reason = f"{terminated.get('reason') or 'Terminated'} (exit code {exit_code})"
            if terminated.get("message"):
                reason += f": {terminated['message'].strip()}"
    if status.get("reason") and not reason:
        reason = f"{status['reason']}: {status['message']}" if status.get("message") else status["reason"]
    return AppStatus(
        id=str(_id(pod)),
        namespace=_namespace(pod),
        driver_pod=_name(pod),
        app_name=labels.get(LABEL_APP_NAME, ""),
        app_id=labels.get(LABEL_APP_ID, ""),
        phase=_phase(pod),
        reason=reason,
        node=(pod.get("spec") or {}).get("nodeName"),
        start=status.get("startTime"),
        end=end,
        exit_code=exit_code,
        executors=executors,
        executors_running=running,
    )


def _executor_counts(kube: Kube, namespace: str) -> tuple[Counter[str], Counter[str]]:
    from lightkube.resources.core_v1 import Pod as PodResource

    total: Counter[str] = Counter()
    running: Counter[str] = Counter()
    for pod in kube.list_raw(PodResource, namespace, labels={LABEL_ROLE: "executor"}):
        total[_app_id(pod)] += 1
        if _phase(pod) == "Running":
            running[_app_id(pod)] += 1
    return total, running


def status(kube: Kube, target: str | Target, *, phase: str | None = None) -> list[AppStatus]:
    """Status of every app matching the target (NotFoundError when none)."""
    target = parse_target(target) if isinstance(target, str) else target
    pods = find_drivers(kube, target)
    if phase:
        pods = [p for p in pods if _phase(p).lower() == phase.lower()]
    pods = _require(pods, target, kube)
    namespaces = {_namespace(p) for p in pods}
    total, running = _executor_counts(kube, namespaces.pop() if len(namespaces) == 1 else ALL_NAMESPACES)
    return [describe(p, total[_app_id(p)], running[_app_id(p)]) for p in pods]


def list_apps(
    kube: Kube, *, namespace: str | None = None, phase: str | None = None, name: str = "*"
) -> list[AppStatus]:
    """Every app in the namespace (None: the context's, else all), optionally filtered; empty is fine."""
    try:
        return status(kube, Target(namespace, name), phase=phase)
    except NotFoundError:
        return []


def kill(kube: Kube, target: str | Target, *, grace_period: int | None = None) -> list[SubmissionId]:
    """Delete every matching driver pod (its executors, Service and ConfigMaps go with it by ownership)."""
    from lightkube.resources.core_v1 import Pod as PodResource

    target = parse_target(target) if isinstance(target, str) else target
    pods = _require(find_drivers(kube, target), target, kube)
    grace = DEFAULT_KILL_GRACE_SECONDS if grace_period is None else grace_period
    kube.delete_many(PodResource, [(_namespace(p), _name(p)) for p in pods], grace_period=grace)
    return [_id(p) for p in pods]


def logs(kube: Kube, target: str | Target, *, follow: bool = False, tail_lines: int | None = None) -> Iterator[str]:
    """The driver's log; the target must name exactly one app. Works after the app ended (pod retained)."""
    target = parse_target(target) if isinstance(target, str) else target
    pods = _require(find_drivers(kube, target), target, kube)
    if len(pods) > 1:
        matched = ", ".join(str(_id(p)) for p in pods[:5])
        raise ConfigError(  # the target is ambiguous (bad input, exit 2), not missing
            f"{target.pattern!r} matches {len(pods)} apps ({matched}, ...)",
            hint="logs follows one app: give its full ID NAMESPACE:DRIVER-POD",
        )
    pod = pods[0]
    containers = (pod.get("spec") or {}).get("containers") or []
    container = next((c["name"] for c in containers if (c.get("args") or [""])[0] == "driver"), None)
    return kube.logs(_name(pod), _namespace(pod), follow=follow, container=container, tail_lines=tail_lines)
