"""What to do next for one SparkApplication, from what is observed now. Pure: no clock, no API.

`decide(app, observed, now, new_id)` reads the app (spec, status, generation) and its current driver
and executor pods as last seen, and returns a `Plan`: a merge patch for `.status`, whether to submit,
delete the driver, delete the app (TTL), and when to look again. The controller executes plans; it
never remembers what it did, so a restarted controller carries on from the stored status.

The states are kubeflow's. A submission is first written down (`status.submissionID`, attempt count,
time, the generation it serves) while the state stays NEW / PENDING_RERUN / RESUMING, then made: a
controller killed in between finds the ID and makes the same submission (same names), or adopts the
driver it already created. Moving to PENDING_RERUN, RESUMING or a fresh NEW clears the submission.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from kubeaccel.operator.api import (
    AppState,
    PodState,
    RestartPolicy,
    RestartPolicyType,
    SparkApplication,
)

Json = dict[str, Any]
DEFAULT_RETRY_INTERVAL_S = 5
# a terminal driver's reason and message are capped: status is read by every poller of the app
MAX_MESSAGE = 1024
SUBMITTING = (AppState.NEW, AppState.PENDING_RERUN, AppState.RESUMING)
FOLLOWING = (AppState.SUBMITTED, AppState.RUNNING, AppState.UNKNOWN)


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclass(frozen=True)
class Observed:
    """The pods of the app's current submission, as last seen (None: no driver of that submission)."""

    driver: Mapping[str, Any] | None = None
    executors: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Plan:
    status: Json | None = None  # a JSON merge patch of .status; None: leave it
    submit: bool = False
    delete_driver: bool = False
    delete_app: bool = False
    requeue_after: float | None = None
    events: tuple[Event, ...] = ()


def timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


CLEARED: Json = {
    "submissionID": None,
    "sparkApplicationId": None,
    "driverInfo": None,
    "executorState": None,
    "terminationTime": None,
}


def state_patch(state: AppState, message: str | None = None) -> Json:
    return {"applicationState": {"state": state.value, "errorMessage": message[:MAX_MESSAGE] if message else None}}


def decide(app: SparkApplication, observed: Observed, now: datetime, new_id: Callable[[], str]) -> Plan:
    if app.metadata.deletionTimestamp:
        return Plan()  # the garbage collector removes what the app owns
    status = app.status
    state = status.application_state.state
    generation = app.metadata.generation
    if status.observed_generation is not None and status.observed_generation != generation:
        # a spec change re-submits, as kubeflow's does: the old run goes, attempts start again
        patch = {**CLEARED, **state_patch(AppState.NEW), "observedGeneration": None}
        patch.update(submissionAttempts=0, executionAttempts=0)
        event = Event("Normal", "SparkApplicationSpecUpdated", "the spec changed: the app is submitted again")
        return Plan(status=patch, delete_driver=observed.driver is not None, events=(event,))
    if app.spec.suspend and not state.terminal and state is not AppState.SUSPENDED:
        event = Event("Normal", "SparkApplicationSuspended", "spec.suspend is true: the driver is removed")
        return Plan(
            status={**CLEARED, **state_patch(AppState.SUSPENDED)},
            delete_driver=observed.driver is not None,
            events=(event,),
        )
    if state is AppState.SUSPENDED:
        if app.spec.suspend:
            return Plan()
        return Plan(status={**CLEARED, **state_patch(AppState.RESUMING)})
    if state in SUBMITTING:
        return _submitting(app, now, new_id)
    if state in FOLLOWING:
        return _following(app, observed, now)
    if state.terminal:
        return _terminal(app, observed, now)
    return Plan()  # INVALIDATING, SUCCEEDING, FAILING written by another controller: nothing of ours


def _submitting(app: SparkApplication, now: datetime, new_id: Callable[[], str]) -> Plan:
    status = app.status
    if status.submission_id:
        return Plan(submit=True)  # written down before: make (or adopt) that same submission
    intent = {
        "submissionID": new_id(),
        "lastSubmissionAttemptTime": timestamp(now),
        "submissionAttempts": status.submission_attempts + 1,
        "observedGeneration": app.metadata.generation,
    }
    return Plan(status=intent, submit=True)


def pod_state(pod: Mapping[str, Any]) -> PodState:
    phase = (pod.get("status") or {}).get("phase")
    return {
        "Pending": PodState.PENDING,
        "Running": PodState.RUNNING,
        "Succeeded": PodState.COMPLETED,
        "Failed": PodState.FAILED,
    }.get(str(phase), PodState.UNKNOWN)


# the kubelet's waiting reasons for an image it will never get, and for one it failed to get so far
IMAGE_NEVER = ("ErrImageNeverPull", "InvalidImageName")
IMAGE_RETRYING = ("ErrImagePull", "ImagePullBackOff")
IMAGE_PULL_GRACE_S = 120  # a registry hiccup passes; an image that does not exist still fails within minutes


def image_failure(pod: Mapping[str, Any], now: datetime) -> str | None:
    """Why the driver's image cannot be had, once that is settled: at once for an image the kubelet will never
    pull (a bad name, pullPolicy Never and not on the node), after IMAGE_PULL_GRACE_S of failed pulls otherwise.
    The submission made a driver that can never start: the app is SUBMISSION_FAILED, as kubeflow's users
    expect of a missing image, instead of SUBMITTED for ever."""
    created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = str(waiting.get("reason") or "")
        settled = reason in IMAGE_NEVER or (
            reason in IMAGE_RETRYING and created is not None and (now - created).total_seconds() >= IMAGE_PULL_GRACE_S
        )
        if settled:
            detail = str(waiting.get("message") or "")[:MAX_MESSAGE // 2]
            image = container.get("image") or "?"
            return f"the driver's image {image} cannot be pulled: {reason}{': ' + detail if detail else ''}"
    return None


def driver_failure(pod: Mapping[str, Any]) -> str:
    """Why the driver failed, from its container's terminated state (else the pod's reason)."""
    pod_status = pod.get("status") or {}
    for container in pod_status.get("containerStatuses") or []:
        terminated = (container.get("state") or {}).get("terminated")
        if terminated:
            parts = [f"driver container failed with exit code {terminated.get('exitCode')}"]
            for key in ("reason", "message"):
                if terminated.get(key):
                    parts.append(str(terminated[key]))
            return ": ".join(parts)
    reason = ": ".join(str(pod_status[k]) for k in ("reason", "message") if pod_status.get(k))
    return f"driver pod failed{': ' + reason if reason else ''}"


def _following(app: SparkApplication, observed: Observed, now: datetime) -> Plan:
    status = app.status
    driver = observed.driver
    if driver is None:
        gone = f"driver pod {status.driver_info.pod_name or ''} of submission {status.submission_id} is gone"
        failed = {**state_patch(AppState.FAILED, gone), "terminationTime": timestamp(now)}
        return Plan(status=failed, events=(Event("Warning", "SparkDriverDeleted", gone),))
    unpullable = image_failure(driver, now)
    if unpullable is not None and status.application_state.state is AppState.SUBMITTED:
        failed = {**state_patch(AppState.SUBMISSION_FAILED, unpullable), "terminationTime": timestamp(now)}
        refused = Event("Warning", "SparkApplicationSubmissionFailed", unpullable)
        return Plan(status=failed, delete_driver=True, events=(refused,))
    driver_state = pod_state(driver)
    transitions: dict[PodState, tuple[AppState, str | None, Event | None]] = {
        PodState.PENDING: (AppState.SUBMITTED, None, None),
        PodState.RUNNING: (AppState.RUNNING, None, None),
        PodState.COMPLETED: (AppState.COMPLETED, None, Event("Normal", "SparkDriverCompleted", "the driver completed")),
        PodState.FAILED: (AppState.FAILED, driver_failure(driver), None),
        PodState.UNKNOWN: (AppState.UNKNOWN, None, None),
    }
    new_state, message, event = transitions[driver_state]
    if new_state is AppState.FAILED:
        event = Event("Warning", "SparkDriverFailed", message or "the driver failed")
    executors = {name: pod_state(pod).value for name, pod in sorted(observed.executors.items())}
    patch: Json = {}
    if new_state is not status.application_state.state:
        patch.update(state_patch(new_state, message))
        if new_state.terminal:
            patch["terminationTime"] = timestamp(now)
    current = {k: v.value for k, v in (status.executor_state or {}).items()}
    executors = {**_gone_executors(current, executors, new_state), **executors}
    if executors != current:
        patch["executorState"] = executors or None
    retry = _image_pull_due(driver, now) if new_state is AppState.SUBMITTED else None
    return Plan(
        status=patch or None,
        events=(event,) if event and patch.get("applicationState") else (),
        requeue_after=retry,
    )


def _image_pull_due(pod: Mapping[str, Any], now: datetime) -> float | None:
    """Seconds until a failing pull counts as settled (`image_failure`), so the app is looked at again then."""
    created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    for container in (pod.get("status") or {}).get("containerStatuses") or []:
        reason = ((container.get("state") or {}).get("waiting") or {}).get("reason")
        if reason in IMAGE_RETRYING and created is not None:
            return max(0.0, IMAGE_PULL_GRACE_S - (now - created).total_seconds()) + 1
    return None


def _gone_executors(recorded: dict[str, str], seen: dict[str, str], app_state: AppState) -> dict[str, str]:
    """What became of executors the status lists but whose pods are gone (Spark deletes them as it ends, or
    dynamic allocation lets them go): an ended state stays; otherwise COMPLETED when the app completed, FAILED
    when it failed, UNKNOWN while the driver runs on. Kept, as kubeflow's operator keeps them: scripts count
    the executors an app had from this map."""
    ended = (PodState.COMPLETED.value, PodState.FAILED.value)
    if app_state is AppState.COMPLETED:
        fate = PodState.COMPLETED.value
    elif app_state.terminal:
        fate = PodState.FAILED.value
    else:
        fate = PodState.UNKNOWN.value
    return {name: state if state in ended else fate for name, state in recorded.items() if name not in seen}


def _policy(app: SparkApplication) -> RestartPolicy:
    policy = app.spec.restart_policy or RestartPolicy()
    if app.spec.restart_policy is None and app.spec.failure_retries is not None:
        # kubeflow's older top-level fields: failureRetries / retryInterval mean OnFailure
        return RestartPolicy(
            type=RestartPolicyType.ON_FAILURE,
            on_failure_retries=app.spec.failure_retries,
            on_failure_retry_interval=app.spec.retry_interval,
        )
    return policy


def rerun_after(app: SparkApplication) -> int | None:
    """Seconds after termination to run the app again, or None when it stays ended."""
    policy = _policy(app)
    status = app.status
    state = status.application_state.state
    if policy.type is RestartPolicyType.NEVER or app.spec.suspend:
        return None
    submission_failed = state is AppState.SUBMISSION_FAILED
    interval = (
        policy.on_submission_failure_retry_interval if submission_failed else policy.on_failure_retry_interval
    ) or DEFAULT_RETRY_INTERVAL_S
    if policy.type is RestartPolicyType.ALWAYS:
        return interval
    if state is AppState.FAILED and status.execution_attempts <= (policy.on_failure_retries or 0):
        return interval
    if submission_failed and status.submission_attempts <= (policy.on_submission_failure_retries or 0):
        return interval
    return None


def _terminal(app: SparkApplication, observed: Observed, now: datetime) -> Plan:
    status = app.status
    ended = parse_time(status.termination_time) or now
    interval = rerun_after(app)
    if interval is not None:
        due = ended + timedelta(seconds=interval)
        if now < due:
            return Plan(requeue_after=(due - now).total_seconds())
        event = Event("Normal", "SparkApplicationPendingRerun", f"restartPolicy reruns the app after {interval}s")
        return Plan(
            status={**CLEARED, **state_patch(AppState.PENDING_RERUN)},
            delete_driver=observed.driver is not None,
            events=(event,),
        )
    ttl = app.spec.time_to_live_seconds
    if ttl is not None:
        due = ended + timedelta(seconds=ttl)
        if now >= due:
            return Plan(delete_app=True)
        return Plan(requeue_after=(due - now).total_seconds())
    return Plan()
