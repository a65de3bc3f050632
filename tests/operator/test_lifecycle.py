"""`lifecycle.decide` as a table of (status, observed pods, now) -> plan, plus hypothesis: any status and pods
give a plan, a terminal app never submits, a submission is always written down before it is made.

Also the work queue: one worker per key, dedup, re-add while active, delays.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fixtures.sparkapps import SPARK_PI, load
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel.operator.api import AppState, SparkApplication
from kubeaccel.operator.lifecycle import Observed, decide, rerun_after
from kubeaccel.operator.workqueue import WorkQueue

NOW = datetime(2026, 12, 5, 8, 0, 0, tzinfo=UTC)
SUBMITTED_AT = "2026-12-05T07:59:00Z"


def app(state: str = "", generation: int = 1, spec: dict[str, Any] | None = None, **status: Any) -> SparkApplication:
    document = load(SPARK_PI)
    document["metadata"].update(namespace="ns", uid="u", generation=generation)
    document["spec"].update(spec or {})
    document["status"] = {"applicationState": {"state": state}, **status}
    return SparkApplication.model_validate(document)


def pod(phase: str, **extra: Any) -> dict[str, Any]:
    return {"metadata": {"name": "spark-pi-driver"}, "status": {"phase": phase, **extra}}


def new_id() -> str:
    return "new-id"


RUNNING = {"submissionID": "s1", "observedGeneration": 1, "executionAttempts": 1, "submissionAttempts": 1}


def test_new_app_writes_the_submission_down_then_submits() -> None:
    plan = decide(app(), Observed(), NOW, new_id)
    assert plan.submit and plan.status == {
        "submissionID": "new-id",
        "lastSubmissionAttemptTime": "2026-12-05T08:00:00Z",
        "submissionAttempts": 1,
        "observedGeneration": 1,
    }


def test_a_written_submission_is_made_again_not_renamed() -> None:
    plan = decide(app("", submissionID="s0", observedGeneration=1), Observed(), NOW, new_id)
    assert plan.submit and plan.status is None


@pytest.mark.parametrize(
    "phase, state",
    [
        ("Pending", "SUBMITTED"),
        ("Running", "RUNNING"),
        ("Succeeded", "COMPLETED"),
        ("Failed", "FAILED"),
        ("Odd", "UNKNOWN"),
    ],
)
def test_state_follows_the_driver(phase: str, state: str) -> None:
    plan = decide(app("SUBMITTED", **RUNNING), Observed(pod(phase)), NOW, new_id)
    if state == "SUBMITTED":
        assert plan.status is None
        return
    assert plan.status is not None and plan.status["applicationState"]["state"] == state
    assert ("terminationTime" in plan.status) == (state in ("COMPLETED", "FAILED"))


def test_failure_message_names_exit_code_and_reason() -> None:
    terminated = {"exitCode": 3, "reason": "Error", "message": "OOM"}
    driver = pod("Failed", containerStatuses=[{"state": {"terminated": terminated}}])
    plan = decide(app("RUNNING", **RUNNING), Observed(driver), NOW, new_id)
    assert plan.status is not None
    assert plan.status["applicationState"]["errorMessage"] == "driver container failed with exit code 3: Error: OOM"
    assert plan.events[0].type == "Warning"


def test_a_driver_gone_fails_the_app() -> None:
    plan = decide(app("RUNNING", **RUNNING), Observed(None), NOW, new_id)
    assert plan.status is not None and plan.status["applicationState"]["state"] == "FAILED"


def test_executor_states() -> None:
    executors = {"e1": pod("Running"), "e2": pod("Failed")}
    plan = decide(
        app("RUNNING", **RUNNING, executorState={"e0": "RUNNING"}), Observed(pod("Running"), executors), NOW, new_id
    )
    assert plan.status == {"executorState": {"e0": "UNKNOWN", "e1": "RUNNING", "e2": "FAILED"}}


@pytest.mark.parametrize(
    "phase, recorded, expected",
    [
        ("Succeeded", {"e1": "RUNNING", "e2": "FAILED"}, {"e1": "COMPLETED", "e2": "FAILED"}),
        ("Failed", {"e1": "RUNNING", "e2": "PENDING"}, {"e1": "FAILED", "e2": "FAILED"}),
        ("Running", {"e1": "COMPLETED", "e2": "RUNNING"}, {"e1": "COMPLETED", "e2": "UNKNOWN"}),
    ],
)
def test_executors_deleted_as_the_app_ends_keep_a_state(
    phase: str, recorded: dict[str, str], expected: dict[str, str]
) -> None:
    """Spark deletes its executor pods as the driver ends: the status keeps them, as kubeflow's does."""
    plan = decide(app("RUNNING", **RUNNING, executorState=recorded), Observed(pod(phase), {}), NOW, new_id)
    assert plan.status is not None and plan.status["executorState"] == expected
    again = decide(app("RUNNING", **RUNNING, executorState=expected), Observed(pod("Running"), {}), NOW, new_id)
    assert again.status is None  # settled: no status write on every later event


ENDED = {**RUNNING, "terminationTime": "2026-12-05T07:59:58Z"}


@pytest.mark.parametrize(
    "policy, state, attempts, expected",
    [
        ({"type": "Never"}, "FAILED", 1, None),
        ({"type": "Always"}, "COMPLETED", 9, 5),
        ({"type": "OnFailure", "onFailureRetries": 2, "onFailureRetryInterval": 7}, "FAILED", 2, 7),
        ({"type": "OnFailure", "onFailureRetries": 2}, "FAILED", 3, None),
        ({"type": "OnFailure", "onFailureRetries": 2}, "COMPLETED", 1, None),
        (
            {"type": "OnFailure", "onSubmissionFailureRetries": 1, "onSubmissionFailureRetryInterval": 3},
            "SUBMISSION_FAILED",
            1,
            3,
        ),
        ({"type": "OnFailure", "onSubmissionFailureRetries": 1}, "SUBMISSION_FAILED", 2, None),
    ],
)
def test_restart_policy(policy: dict[str, Any], state: str, attempts: int, expected: int | None) -> None:
    status = {**ENDED, "executionAttempts": attempts, "submissionAttempts": attempts}
    assert rerun_after(app(state, spec={"restartPolicy": policy}, **status)) == expected


def test_rerun_waits_for_the_interval_then_clears_the_submission() -> None:
    spec = {"restartPolicy": {"type": "Always", "onFailureRetryInterval": 10}}
    waiting = decide(app("FAILED", spec=spec, **ENDED), Observed(pod("Failed")), NOW, new_id)
    assert waiting.requeue_after == pytest.approx(8) and waiting.status is None
    later = decide(app("FAILED", spec=spec, **ENDED), Observed(pod("Failed")), NOW + timedelta(seconds=10), new_id)
    assert later.status is not None and later.status["applicationState"]["state"] == "PENDING_RERUN"
    assert later.status["submissionID"] is None and later.delete_driver


def test_ttl() -> None:
    spec = {"timeToLiveSeconds": 60}
    assert decide(app("COMPLETED", spec=spec, **ENDED), Observed(), NOW, new_id).requeue_after == pytest.approx(58)
    assert decide(app("COMPLETED", spec=spec, **ENDED), Observed(), NOW + timedelta(minutes=1), new_id).delete_app


def test_suspend_and_resume() -> None:
    suspended = decide(app("RUNNING", spec={"suspend": True}, **RUNNING), Observed(pod("Running")), NOW, new_id)
    assert suspended.delete_driver and suspended.status is not None
    assert suspended.status["applicationState"]["state"] == "SUSPENDED"
    resumed = decide(app("SUSPENDED", spec={"suspend": False}), Observed(), NOW, new_id)
    assert resumed.status is not None and resumed.status["applicationState"]["state"] == "RESUMING"
    assert decide(app("RESUMING"), Observed(), NOW, new_id).submit


def test_spec_change_invalidates() -> None:
    plan = decide(app("RUNNING", generation=2, **RUNNING), Observed(pod("Running")), NOW, new_id)
    assert plan.delete_driver and plan.status is not None
    assert plan.status["applicationState"]["state"] == "" and plan.status["submissionID"] is None


@settings(max_examples=300, deadline=None)
@given(
    state=st.sampled_from([s.value for s in AppState]),
    generation=st.integers(1, 3),
    observed_generation=st.one_of(st.none(), st.integers(1, 3)),
    submission=st.one_of(st.none(), st.just("s1")),
    phase=st.one_of(st.none(), st.sampled_from(["Pending", "Running", "Succeeded", "Failed", "Unknown"])),
    suspend=st.booleans(),
    policy=st.sampled_from(["Never", "OnFailure", "Always"]),
    ttl=st.one_of(st.none(), st.integers(0, 100)),
    seconds=st.integers(0, 200),
)
def test_any_state_gives_a_coherent_plan(
    state: str,
    generation: int,
    observed_generation: int | None,
    submission: str | None,
    phase: str | None,
    suspend: bool,
    policy: str,
    ttl: int | None,
    seconds: int,
) -> None:
    spec = {"suspend": suspend, "restartPolicy": {"type": policy}, "timeToLiveSeconds": ttl}
    status = {
        "submissionID": submission,
        "observedGeneration": observed_generation,
        "terminationTime": "2026-12-05T07:59:00Z",
    }
    the_app = app(state, generation=generation, spec=spec, **status)
    plan = decide(the_app, Observed(pod(phase) if phase else None), NOW + timedelta(seconds=seconds), new_id)
    if plan.submit:
        assert not AppState(state).terminal and not suspend
        assert submission or (plan.status and plan.status["submissionID"] == "new-id")
    if plan.delete_app:
        assert AppState(state).terminal and ttl is not None
    assert plan.requeue_after is None or plan.requeue_after > 0


def test_workqueue_one_worker_per_key_and_dedup() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add("a")
    queue.add("a")
    queue.add("b")
    assert queue.get(0) == "a" and queue.get(0) == "b" and queue.get(0) is None
    queue.add("a")  # while "a" is being worked on: comes back after done
    assert queue.get(0) is None
    queue.done("a")
    assert queue.get(0) == "a"


def test_workqueue_delays() -> None:
    queue: WorkQueue[str] = WorkQueue()
    queue.add_after("x", 0.2)
    started = time.monotonic()
    assert queue.get(2) == "x" and 0.15 <= time.monotonic() - started < 1.5
    got: list[str | None] = []
    worker = threading.Thread(target=lambda: got.append(queue.get()))
    worker.start()
    queue.close()
    worker.join(2)
    assert got == [None]


def test_invalid_fields_name_the_yaml_path() -> None:
    from pydantic import ValidationError

    from kubeaccel.operator.controller import invalid_fields

    document = load(SPARK_PI)
    document["spec"]["driver"]["coresPerTask"] = 2
    document["spec"]["executor"]["cores"] = "many"
    with pytest.raises(ValidationError) as info:
        SparkApplication.model_validate(document)
    text = invalid_fields(info.value)
    assert "spec.driver.coresPerTask: Extra inputs are not permitted" in text and "spec.executor.cores" in text


def _waiting(reason: str, created: datetime, message: str = "") -> dict[str, Any]:
    driver = pod("Pending", containerStatuses=[{"image": "spark:nope", "state": {"waiting": {"reason": reason,
                                                                                           "message": message}}}])
    driver["metadata"]["creationTimestamp"] = created.strftime("%Y-%m-%dT%H:%M:%SZ")
    return driver


@pytest.mark.parametrize("reason", ["ErrImageNeverPull", "InvalidImageName"])
def test_an_image_the_kubelet_will_never_pull_fails_the_submission_at_once(reason: str) -> None:
    driver = _waiting(reason, NOW, 'Container image "spark:nope" is not present with pull policy of Never')
    plan = decide(app("SUBMITTED", **RUNNING), Observed(driver), NOW, new_id)
    assert plan.status is not None and plan.status["applicationState"]["state"] == "SUBMISSION_FAILED"
    message = plan.status["applicationState"]["errorMessage"]
    assert "spark:nope" in message and reason in message and "not present" in message
    assert plan.delete_driver and plan.events[0].reason == "SparkApplicationSubmissionFailed"


@pytest.mark.parametrize("reason", ["ErrImagePull", "ImagePullBackOff"])
def test_a_failing_pull_is_given_a_grace_then_fails_the_submission(reason: str) -> None:
    young = decide(app("SUBMITTED", **RUNNING), Observed(_waiting(reason, NOW - timedelta(seconds=30))), NOW, new_id)
    assert young.status is None and not young.delete_driver
    assert young.requeue_after is not None and 90 <= young.requeue_after <= 92  # looked at again when due
    old = decide(app("SUBMITTED", **RUNNING), Observed(_waiting(reason, NOW - timedelta(seconds=121))), NOW, new_id)
    assert old.status is not None and old.status["applicationState"]["state"] == "SUBMISSION_FAILED"


def test_a_running_driver_is_never_failed_for_its_image() -> None:
    """Only a driver that never started: RUNNING apps follow the driver's own end."""
    driver = _waiting("ErrImageNeverPull", NOW)
    plan = decide(app("RUNNING", **RUNNING), Observed(driver), NOW, new_id)
    assert plan.status is None or plan.status.get("applicationState", {}).get("state") != "SUBMISSION_FAILED"


@settings(max_examples=200, deadline=None)
@given(
    reason=st.sampled_from(["ErrImageNeverPull", "InvalidImageName", "ErrImagePull", "ImagePullBackOff",
                            "ContainerCreating", "CrashLoopBackOff", ""]),
    age=st.integers(0, 600),
    message=st.text(max_size=5000),
)  # fmt: skip
def test_image_failure_messages_are_bounded_and_only_for_pull_reasons(reason: str, age: int, message: str) -> None:
    driver = _waiting(reason, NOW - timedelta(seconds=age), message)
    plan = decide(app("SUBMITTED", **RUNNING), Observed(driver), NOW, new_id)
    failed = plan.status is not None and plan.status["applicationState"]["state"] == "SUBMISSION_FAILED"
    settled = reason in ("ErrImageNeverPull", "InvalidImageName") or (
        reason in ("ErrImagePull", "ImagePullBackOff") and age >= 120)
    assert failed is settled
    if failed:
        assert plan.status is not None and len(plan.status["applicationState"]["errorMessage"]) <= 1024
