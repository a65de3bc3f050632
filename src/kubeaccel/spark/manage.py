"""status / kill / logs / list for cluster-mode apps, addressed by submission ID or glob.

One list call per command (driver pods by label, filtered by fnmatch here; executors likewise,
counted per app), and kill deletes the matched drivers concurrently: a glob over a thousand apps
costs one list and parallel DELETEs instead of a JVM start and a sequential loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from kubeaccel.errors import NotFoundError
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
        return asdict(self)


def scope(kube: Kube, target: Target) -> str:
    """Namespace to search: the target's, else the context's own, else all namespaces (as spark-submit)."""
    if target.namespace == "*":
        return ALL_NAMESPACES
    return target.namespace or kube.context_namespace or ALL_NAMESPACES


def find_drivers(kube: Kube, target: Target) -> list[Any]:
    """Driver pods whose name matches the target, sorted by namespace and name."""
    from lightkube.resources.core_v1 import Pod

    namespace = scope(kube, target)
    pods: list[Any]
    if not target.is_glob and namespace != ALL_NAMESPACES:
        fields = {"metadata.name": target.pattern}
        pods = kube.list(Pod, namespace=namespace, labels={LABEL_ROLE: "driver"}, fields=fields)
    else:
        drivers: list[Any] = kube.list(Pod, namespace=namespace, labels={LABEL_ROLE: "driver"})
        pods = [p for p in drivers if target.matches(p.metadata.name)]
    return sorted(pods, key=lambda p: (p.metadata.namespace, p.metadata.name))


def _require(pods: list[Any], target: Target, kube: Kube) -> list[Any]:
    if not pods:
        where = scope(kube, target)
        place = "any namespace" if where == ALL_NAMESPACES else f"namespace {where!r}"
        raise NotFoundError(
            f"no Spark driver pod matching {target.pattern!r} in {place}",
            hint="list the apps with `kubeaccel spark list`; IDs are NAMESPACE:DRIVER-POD",
        )
    return pods


def describe(pod: Any, executors: int = 0, running: int = 0) -> AppStatus:
    """Phase plus the one reason a person needs: image pull error, OOMKilled, Unschedulable, exit code."""
    meta, status = pod.metadata, pod.status
    labels = meta.labels or {}
    phase = (status.phase if status else None) or "Unknown"
    reason, exit_code, start, end = "", None, None, None
    if status:
        start = status.startTime.isoformat() if status.startTime else None
        for condition in status.conditions or []:
            if condition.type == "PodScheduled" and condition.status == "False":
                reason = f"{condition.reason or 'Unschedulable'}: {condition.message or ''}".strip(": ")
        for container in status.containerStatuses or []:
            state = container.state
            if state and state.waiting and state.waiting.reason:
                waiting = state.waiting
                if waiting.reason in _WAITING_PROBLEMS or not reason:
                    reason = f"{waiting.reason}: {waiting.message}" if waiting.message else waiting.reason
            if state and state.terminated:
                terminated = state.terminated
                exit_code = terminated.exitCode
                end = terminated.finishedAt.isoformat() if terminated.finishedAt else None
                detail = terminated.reason or "Terminated"
                reason = f"{detail} (exit code {exit_code})"
                if terminated.message:
                    reason += f": {terminated.message.strip()}"
        if status.reason and not reason:
            reason = f"{status.reason}: {status.message}" if status.message else status.reason
    return AppStatus(
        id=str(SubmissionId(meta.namespace, meta.name)),
        namespace=meta.namespace,
        driver_pod=meta.name,
        app_name=labels.get(LABEL_APP_NAME, ""),
        app_id=labels.get(LABEL_APP_ID, ""),
        phase=phase,
        reason=reason,
        node=pod.spec.nodeName if pod.spec else None,
        start=start,
        end=end,
        exit_code=exit_code,
        executors=executors,
        executors_running=running,
    )


def _executor_counts(kube: Kube, namespace: str) -> tuple[Counter[str], Counter[str]]:
    from lightkube.resources.core_v1 import Pod

    total: Counter[str] = Counter()
    running: Counter[str] = Counter()
    executors: list[Any] = kube.list(Pod, namespace=namespace, labels={LABEL_ROLE: "executor"})
    for pod in executors:
        app_id = _app_id(pod)
        total[app_id] += 1
        if pod.status and pod.status.phase == "Running":
            running[app_id] += 1
    return total, running


def status(kube: Kube, target: str | Target, *, phase: str | None = None) -> list[AppStatus]:
    """Status of every app matching the target (NotFoundError when none)."""
    target = parse_target(target) if isinstance(target, str) else target
    pods = find_drivers(kube, target)
    if phase:
        pods = [p for p in pods if ((p.status.phase if p.status else None) or "Unknown").lower() == phase.lower()]
    pods = _require(pods, target, kube)
    namespaces = {p.metadata.namespace for p in pods}
    total, running = _executor_counts(kube, namespaces.pop() if len(namespaces) == 1 else ALL_NAMESPACES)
    return [describe(p, total[_app_id(p)], running[_app_id(p)]) for p in pods]


def list_apps(
    kube: Kube, *, namespace: str | None = None, phase: str | None = None, name: str = "*"
) -> list[AppStatus]:
    """Every app in the namespace (None: the context's, else all), optionally filtered; empty is fine."""
    target = Target(namespace, name)
    try:
        return status(kube, target, phase=phase)
    except NotFoundError:
        return []


def _app_id(pod: Any) -> str:
    return str((pod.metadata.labels or {}).get(LABEL_APP_ID, ""))


def kill(kube: Kube, target: str | Target, *, grace_period: int | None = None) -> list[SubmissionId]:
    """Delete every matching driver pod (its executors, Service and ConfigMaps go with it by ownership)."""
    from lightkube.resources.core_v1 import Pod

    target = parse_target(target) if isinstance(target, str) else target
    pods = _require(find_drivers(kube, target), target, kube)
    grace = DEFAULT_KILL_GRACE_SECONDS if grace_period is None else grace_period
    kube.delete_many(Pod, [(p.metadata.namespace, p.metadata.name) for p in pods], grace_period=grace)
    return [SubmissionId(p.metadata.namespace, p.metadata.name) for p in pods]


def logs(kube: Kube, target: str | Target, *, follow: bool = False, tail_lines: int | None = None) -> Iterator[str]:
    """The driver's log; the target must name exactly one app. Works after the app ended (pod retained)."""
    target = parse_target(target) if isinstance(target, str) else target
    pods = _require(find_drivers(kube, target), target, kube)
    if len(pods) > 1:
        matched = ", ".join(str(SubmissionId(p.metadata.namespace, p.metadata.name)) for p in pods[:5])
        raise NotFoundError(
            f"{target.pattern!r} matches {len(pods)} apps ({matched}, ...)",
            hint="logs follows one app: give its full ID NAMESPACE:DRIVER-POD",
        )
    pod = pods[0]
    container = next((c.name for c in pod.spec.containers if c.args and c.args[0] == "driver"), None)
    return kube.logs(
        pod.metadata.name, pod.metadata.namespace, follow=follow, container=container, tail_lines=tail_lines
    )
