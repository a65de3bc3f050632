"""status / kill / logs / list for cluster-mode apps, addressed by submission ID or glob.

One list call per command (driver pods by label, filtered by fnmatch here; executors likewise,
counted per app), and kill deletes the matched drivers concurrently: a glob over a thousand apps
costs one list and parallel DELETEs instead of a JVM start and a sequential loop.

Over many apps, one failure does not hide the rest: `status` and `kill` return an `Outcome` with what
succeeded and what failed (and why). Where listing every namespace is forbidden, the namespaces the
user can see are searched one by one and the ones that cannot be read are reported as failures.
Exit codes: 0 all done; the failures' own code when nothing succeeded; `PARTIAL_EXIT_CODE` (7) for some of each.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, NamedTuple, TypeVar

from kubeaccel.errors import ConfigError, ForbiddenError, KubeaccelError, NotFoundError
from kubeaccel.kube.client import ALL_NAMESPACES, Kube
from kubeaccel.kube.rest import NAMESPACES, PODS
from kubeaccel.spark.ids import SubmissionId, Target, parse_target
from kubeaccel.spark.labels import LABEL_APP_ID, LABEL_APP_NAME, LABEL_ROLE

DEFAULT_KILL_GRACE_SECONDS = 30
PARTIAL_EXIT_CODE = 7
_DELETE_WORKERS = 16  # concurrent DELETEs, as kube.client.Kube.delete_many
T = TypeVar("T")
_WAITING_PROBLEMS = {
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "CrashLoopBackOff",
    "RunContainerError",
}


class AppStatus(NamedTuple):
    """What `status` and `list` report for one application.

    The records on the path of `status`, `list` and `kill` (here, in `ids`, `kube.rest`, `kube.status`)
    are NamedTuples: on Python 3.11 a frozen dataclass costs about 1 ms to create at import (its methods
    are compiled from source), a NamedTuple a tenth of that, and each command starts a fresh process."""

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
        return self._asdict()  # every field is a scalar


class Failure(NamedTuple):
    """One app (or a whole namespace, as `namespace:pattern`) a command could not act on, and why."""

    id: str
    error: str
    exit_code: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "error": self.error, "exit_code": self.exit_code}


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What a command over many apps did: `done` and `failed`, both complete."""

    done: list[T] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        if not self.failed:
            return 0
        codes = {failure.exit_code for failure in self.failed}
        if not self.done and len(codes) == 1:
            return codes.pop()
        return PARTIAL_EXIT_CODE


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
    """Driver pods whose name matches the target, sorted by namespace and name (any failure raises)."""
    found = search_drivers(kube, target)
    if found.failed:
        first = found.failed[0]
        raise KubeaccelError(first.error, exit_code=first.exit_code)
    return found.done


def search_drivers(kube: Kube, target: Target) -> Outcome[Pod]:
    """Like `find_drivers`; where listing every namespace is forbidden, each visible namespace is
    listed on its own and those that cannot be read become failures."""
    namespace = scope(kube, target)
    if not target.is_glob and namespace != ALL_NAMESPACES:
        fields = {"metadata.name": target.pattern}
        pods = kube.list_raw(PODS, namespace, labels={LABEL_ROLE: "driver"}, fields=fields)
        return Outcome(_sorted(pods))
    try:
        drivers = kube.list_raw(PODS, namespace, labels={LABEL_ROLE: "driver"})
        return Outcome(_sorted([p for p in drivers if target.matches(_name(p))]))
    except KubeaccelError as exc:
        if namespace != ALL_NAMESPACES or not isinstance(exc, ForbiddenError):
            raise
        visible = _visible_namespaces(kube)
        if visible is None:
            raise
    pods, failed = [], []
    for name in visible:
        try:
            pods += [
                p for p in kube.list_raw(PODS, name, labels={LABEL_ROLE: "driver"}) if target.matches(_name(p))
            ]
        except KubeaccelError as exc:
            failed.append(Failure(f"{name}:{target.pattern}", exc.message, exc.exit_code))
    return Outcome(_sorted(pods), failed)


def _sorted(pods: list[Pod]) -> list[Pod]:
    return sorted(pods, key=lambda p: (_namespace(p), _name(p)))


def _visible_namespaces(kube: Kube) -> list[str] | None:
    """Every namespace's name, or None when even that is forbidden."""
    try:
        return sorted(str(n["metadata"]["name"]) for n in kube.list_raw(NAMESPACES))
    except KubeaccelError:
        return None


def _require(pods: list[Pod], target: Target, kube: Kube, failed: list[Failure] | None = None) -> list[Pod]:
    if not pods and failed:
        raise KubeaccelError(
            "; ".join(f"{f.id}: {f.error}" for f in failed[:3])
            + (f" (and {len(failed) - 3} more)" if len(failed) > 3 else ""),
            hint="no namespace that could be searched has a matching app",
            exit_code=Outcome([], failed).exit_code,
        )
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


def _with_gang(kube: Kube, pod: Pod, app: AppStatus) -> AppStatus:
    """A gang that is not all running says why: its PodGroup's condition, or Kueue's admission state."""
    metadata = pod.get("metadata") or {}
    is_gang = "kubeaccel.io/gang" in (metadata.get("annotations") or {}) or any(
        key.startswith("kueue.x-k8s.io/") for key in (metadata.get("labels") or {}))
    if not is_gang or app.phase not in ("Pending", "Running") or (app.phase == "Running" and app.executors
                                                                    and app.executors_running == app.executors):
        return app
    from kubeaccel.spark.gangkube import pending_reason  # only for gangs: status stays light

    try:
        why = pending_reason(kube, pod)
    except KubeaccelError as exc:
        why = f"gang state unknown: {exc.message}"
    if not why:
        return app
    return app._replace(reason=f"{app.reason}; {why}" if app.reason else why)


def _executor_counts(kube: Kube, namespace: str, app_id: str = "") -> tuple[Counter[str], Counter[str]]:
    """Executors per app ID, total and running; given one app's ID, only that app's executors are listed
    (the status of one app must not read every executor of a busy namespace)."""
    total: Counter[str] = Counter()
    running: Counter[str] = Counter()
    labels = {LABEL_ROLE: "executor", **({LABEL_APP_ID: app_id} if app_id else {})}
    for pod in kube.list_raw(PODS, namespace, labels=labels):
        total[_app_id(pod)] += 1
        if _phase(pod) == "Running":
            running[_app_id(pod)] += 1
    return total, running


def status(kube: Kube, target: str | Target, *, phase: str | None = None) -> list[AppStatus]:
    """Status of every app matching the target (NotFoundError when none; any failure raises)."""
    outcome = status_report(kube, target, phase=phase)
    if outcome.failed:
        first = outcome.failed[0]
        raise KubeaccelError(first.error, exit_code=first.exit_code)
    return outcome.done


def status_report(kube: Kube, target: str | Target, *, phase: str | None = None) -> Outcome[AppStatus]:
    """Status of every matching app, plus the namespaces or apps that could not be read."""
    target = parse_target(target) if isinstance(target, str) else target
    found = search_drivers(kube, target)
    pods = found.done
    if phase:
        pods = [p for p in pods if _phase(p).lower() == phase.lower()]
    pods = _require(pods, target, kube, found.failed)
    by_namespace: dict[str, list[Pod]] = {}
    for pod in pods:
        by_namespace.setdefault(_namespace(pod), []).append(pod)
    apps, failed = [], list(found.failed)
    try:
        one_app = _app_id(pods[0]) if len(pods) == 1 else ""
        where = next(iter(by_namespace)) if len(by_namespace) == 1 else ALL_NAMESPACES
        counted = {"": _executor_counts(kube, where, one_app)}
        groups = [("", pods)]
    except KubeaccelError:
        # one namespace's refusal must not hide the others: count them one by one
        counted, groups = {}, list(by_namespace.items())
        for name, members in by_namespace.items():
            try:
                counted[name] = _executor_counts(kube, name)
            except KubeaccelError as exc:
                failed += [
                    Failure(str(_id(p)), f"cannot count executors: {exc.message}", exc.exit_code) for p in members
                ]
    for key, group in groups:
        if key not in counted:
            continue
        total, running = counted[key]
        apps += [_with_gang(kube, p, describe(p, total[_app_id(p)], running[_app_id(p)])) for p in group]
    return Outcome(sorted(apps, key=lambda a: (a.namespace, a.driver_pod)), failed)


def list_apps(
    kube: Kube, *, namespace: str | None = None, phase: str | None = None, name: str = "*"
) -> list[AppStatus]:
    """Every app in the namespace (None: the context's, else all), optionally filtered; empty is fine."""
    return list_report(kube, namespace=namespace, phase=phase, name=name).done


def list_report(
    kube: Kube, *, namespace: str | None = None, phase: str | None = None, name: str = "*"
) -> Outcome[AppStatus]:
    """`list_apps` plus what could not be read."""
    try:
        return status_report(kube, Target(namespace, name), phase=phase)
    except NotFoundError:
        return Outcome()


def kill(kube: Kube, target: str | Target, *, grace_period: int | None = None) -> Outcome[SubmissionId]:
    """Delete every matching driver pod (its executors, Service and ConfigMaps go with it by ownership).

    Every deletion is tried; the outcome lists the apps killed and those that were not, with the reason.
    """
    target = parse_target(target) if isinstance(target, str) else target
    found = search_drivers(kube, target)
    pods = _require(found.done, target, kube, found.failed)
    grace = DEFAULT_KILL_GRACE_SECONDS if grace_period is None else grace_period
    results = _concurrently(lambda pod: _delete_driver(kube, pod, grace), pods)
    killed = [_id(pod) for pod, problem in zip(pods, results, strict=True) if problem is None]
    failed = [problem for problem in results if problem is not None]
    return Outcome(killed, [*found.failed, *failed])


def _delete_driver(kube: Kube, pod: Pod, grace: int) -> Failure | None:
    try:
        kube.delete(PODS, _name(pod), namespace=_namespace(pod), grace_period=grace, missing_ok=True)
    except KubeaccelError as exc:
        return Failure(str(_id(pod)), exc.message, exc.exit_code)
    return None


def _concurrently(work: Callable[[Pod], Failure | None], pods: list[Pod]) -> list[Failure | None]:
    from concurrent.futures import ThreadPoolExecutor

    if len(pods) <= 1:
        return [work(pod) for pod in pods]
    with ThreadPoolExecutor(max_workers=min(_DELETE_WORKERS, len(pods))) as pool:
        return list(pool.map(work, pods))


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
