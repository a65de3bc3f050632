"""ScheduledSparkApplication: what to do now, from the schedule, the status and the runs it owns. Pure.

A run is a SparkApplication named `<name>-<unix seconds of its scheduled time>`, labelled with the
scheduled app's name and owned by it, so creating it twice is harmless (AlreadyExists) and deleting
the scheduled app removes its runs. Only the latest missed time runs (as kubeflow's). concurrencyPolicy:
Allow runs regardless, Forbid skips a time while a run is active, Replace deletes the active runs first.
Finished runs beyond successfulRunHistoryLimit / failedRunHistoryLimit (default 1 each) are deleted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from kubeaccel.errors import ConfigError
from kubeaccel.operator import cron
from kubeaccel.operator.api import (
    API_VERSION,
    APP_KIND,
    SCHEDULED_KIND,
    AppState,
    ConcurrencyPolicy,
    ScheduledSparkApplication,
    ScheduleState,
)
from kubeaccel.operator.lifecycle import parse_time, timestamp

LABEL_SCHEDULED = "sparkoperator.k8s.io/scheduled-app-name"
DEFAULT_HISTORY = 1
Json = dict[str, Any]


@dataclass(frozen=True)
class Run:
    name: str
    state: AppState
    created: str  # creationTimestamp: orders the runs


@dataclass(frozen=True)
class SchedulePlan:
    status: Json | None = None
    create: Json | None = None  # a SparkApplication manifest
    delete: tuple[str, ...] = ()  # runs to delete
    requeue_after: float | None = None


def run_of(app: Mapping[str, Any]) -> Run:
    meta = app.get("metadata") or {}
    state = ((app.get("status") or {}).get("applicationState") or {}).get("state") or ""
    try:
        parsed = AppState(state)
    except ValueError:
        parsed = AppState.UNKNOWN
    return Run(str(meta.get("name")), parsed, str(meta.get("creationTimestamp") or ""))


def run_manifest(scheduled: ScheduledSparkApplication, when: datetime) -> Json:
    name = f"{scheduled.metadata.name}-{int(when.timestamp())}"
    owner = {
        "apiVersion": API_VERSION,
        "kind": SCHEDULED_KIND,
        "name": scheduled.metadata.name,
        "uid": scheduled.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {
        "apiVersion": API_VERSION,
        "kind": APP_KIND,
        "metadata": {
            "name": name,
            "namespace": scheduled.metadata.namespace,
            "labels": {LABEL_SCHEDULED: scheduled.metadata.name},
            "ownerReferences": [owner],
        },
        "spec": scheduled.spec.template.wire(),
    }


def decide(scheduled: ScheduledSparkApplication, runs: list[Run], now: datetime, created: str | None) -> SchedulePlan:
    spec, status = scheduled.spec, scheduled.status
    try:
        schedule = cron.parse(spec.schedule, spec.time_zone)
        last = parse_time(status.last_run) or parse_time(created) or now
        due = schedule.next_after(last)
    except ConfigError as exc:
        failed = {"scheduleState": ScheduleState.FAILED_VALIDATION.value, "reason": exc.message}
        return SchedulePlan(status=failed if status.schedule_state is not ScheduleState.FAILED_VALIDATION else None)
    finished = sorted((r for r in runs if r.state.terminal), key=lambda r: r.created, reverse=True)
    succeeded = [r.name for r in finished if r.state is AppState.COMPLETED]
    failed_runs = [r.name for r in finished if r.state is not AppState.COMPLETED]
    keep_ok = spec.successful_run_history_limit if spec.successful_run_history_limit is not None else DEFAULT_HISTORY
    keep_failed = spec.failed_run_history_limit if spec.failed_run_history_limit is not None else DEFAULT_HISTORY
    delete = [*succeeded[keep_ok:], *failed_runs[keep_failed:]]
    patch: Json = {
        "scheduleState": ScheduleState.SCHEDULED.value,
        "reason": None,
        "pastSuccessfulRunNames": succeeded[:keep_ok] or None,
        "pastFailedRunNames": failed_runs[:keep_failed] or None,
    }
    create = None
    if now >= due and not spec.suspend:
        active = [r.name for r in runs if not r.state.terminal]
        if spec.concurrency_policy is ConcurrencyPolicy.FORBID and active:
            patch["reason"] = f"run at {timestamp(due)} skipped: {', '.join(active)} still active (Forbid)"
        else:
            if spec.concurrency_policy is ConcurrencyPolicy.REPLACE:
                delete.extend(active)
            create = run_manifest(scheduled, due)
            patch["lastRunName"] = create["metadata"]["name"]
        patch["lastRun"] = timestamp(due)
        due = schedule.next_after(max(due, now))
    patch["nextRun"] = timestamp(due)
    current = scheduled.status.wire()
    changed = {k: v for k, v in patch.items() if current.get(k) != v}
    return SchedulePlan(
        status=changed or None,
        create=create,
        delete=tuple(delete),
        requeue_after=max(0.5, (due - now).total_seconds()),
    )
