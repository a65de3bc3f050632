"""Submit a cluster-mode app: resolve confs, pre-flight the quota, upload, create, roll back on failure.

    from kubeaccel.spark.conf import SubmitRequest
    from kubeaccel.spark.submit import submit
    sid = submit(SubmitRequest("local:///opt/app.py", master="k8s://https://10.0.0.1:6443",
                               conf={"spark.kubernetes.container.image": "spark:4.3"}))
    print(sid)  # team-a:app-py-1a2b3c4d5e6f-driver

All-or-nothing: the driver pod is created first (as Spark does), then the Service, NetworkPolicy and
ConfigMaps with an owner reference to it; if anything fails part-way, everything created so far and
the uploaded files are deleted before the error is raised.
"""

from __future__ import annotations

import dataclasses
import getpass
import os
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubeaccel.errors import AlreadyExistsError, InvalidError, KubeaccelError, UnavailableError
from kubeaccel.kube.client import Kube
from kubeaccel.kube.rest import PODS
from kubeaccel.spark import dra, uploads
from kubeaccel.spark.builder import AppManifests, Generated, build, owner_reference
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.gangkube import check_fits_cluster, check_served
from kubeaccel.spark.ids import SubmissionId
from kubeaccel.spark.model import CONTEXT_KEY, ResolvedApp, resolve
from kubeaccel.spark.preflight import preflight
from kubeaccel.spark.reservation import QuotaLock
from kubeaccel.spark.rollback import (
    Ledger,
    exit_code_for,
    failure_after_rollback,
    guarded_signals,
    pending_signal,
    raise_if_signalled,
    signals_held,
)

__all__ = ["CONTEXT_KEY", "Prepared", "connect_for", "create", "prepare", "submit", "wait"]


@dataclass
class Prepared:
    """Everything decided before the first API write."""

    app: ResolvedApp
    manifests: AppManifests

    @property
    def namespace(self) -> str:
        return self.manifests.namespace

    @property
    def plan(self) -> uploads.UploadPlan:
        return self.app.uploads

    @property
    def conf(self) -> Mapping[str, str]:
        return self.app.conf


def connect_for(
    app: ResolvedApp | Mapping[str, str], *, context: str | None = None, kubeconfig: str | Path | None = None
) -> Kube:
    """The client spark-submit would use: the master URL's server with the kubeconfig's credentials."""
    if isinstance(app, ResolvedApp):
        return Kube.connect(kubeconfig=kubeconfig, context=context or app.context, server=app.master)
    from kubeaccel.spark.conf import master_url

    return Kube.connect(
        kubeconfig=kubeconfig, context=context or app.get(CONTEXT_KEY), server=master_url(app["spark.master"])
    )


def spark_user() -> str:
    return os.environ.get("SPARK_USER") or getpass.getuser()


def _resolved(request: SubmitRequest | ResolvedApp, upload_id: str | None = None) -> ResolvedApp:
    return request if isinstance(request, ResolvedApp) else resolve(request, upload_id=upload_id)


def prepare(
    request: SubmitRequest | ResolvedApp,
    *,
    context_namespace: str | None = None,
    generated: Generated | None = None,
    upload_id: str | None = None,
) -> Prepared:
    """Pure apart from reading local files: validate everything and build the manifests."""
    app = _resolved(request, upload_id).placed(context_namespace)
    return Prepared(app, build(app, generated or Generated.fresh(spark_user())))


def create(
    kube: Kube, manifests: AppManifests, ledger: Ledger | None = None, lock: QuotaLock | None = None
) -> SubmissionId:
    """Create the driver pod, then its owned objects; on failure delete everything created.

    With a `ledger` the caller rolls back (it also owns the uploads); each write is recorded in it first.
    """
    namespace = manifests.namespace
    own_ledger = ledger is None
    ledger = ledger or Ledger(namespace)
    pod_name = manifests.driver_pod_name
    try:
        if lock is not None:
            lock.renew()  # still ours right before the first create: see kubeaccel.spark.reservation
        created_pod = _create_recorded(kube, ledger, manifests.driver_pod, namespace)
        reference = owner_reference(pod_name, created_pod["metadata"]["uid"])
        for manifest in manifests.owned:
            manifest["metadata"]["ownerReferences"] = [reference]
            _create_recorded(kube, ledger, manifest, namespace)
    except BaseException as exc:
        if not own_ledger:
            raise
        with signals_held():
            left = ledger.roll_back(kube)
            error = failure_after_rollback(exc, ledger, left, str(SubmissionId(namespace, pod_name)))
        raise error from exc
    return SubmissionId(namespace, pod_name)


def _create_recorded(kube: Kube, ledger: Ledger, manifest: dict[str, Any], namespace: str) -> dict[str, Any]:
    """One create, recorded before it is sent (a cut-short request may still have created it)."""
    kind, name = manifest["kind"], manifest["metadata"]["name"]
    ledger.wrote(kind, name)
    try:
        created = kube.create(manifest, namespace=namespace)
    except AlreadyExistsError:
        ledger.forget(kind, name)  # someone else's object of that name: a rollback must not delete it
        raise
    except InvalidError as exc:  # a claim template's CEL selector: say which conf made it
        named = dra.invalid_selector(manifest, exc) if kind == "ResourceClaimTemplate" else None
        if named is None:
            raise
        raise named from exc
    ledger.step_done()
    return created


def submit(
    request: SubmitRequest | ResolvedApp,
    *,
    kube: Kube | None = None,
    context: str | None = None,
    kubeconfig: str | Path | None = None,
    check_quota: bool = True,
    progress: uploads.Progress | None = None,
    generated: Generated | None = None,
    on_submitted: Callable[[SubmissionId], None] | None = None,
) -> SubmissionId:
    """Submit `request` in cluster mode and return its ID (`namespace:driver-pod`).

    Everything that can be checked locally is checked before the first connection is made. From the
    first write until `on_submitted(id)` returns (the CLI prints the ID there), SIGINT, SIGTERM and
    SIGHUP roll everything back and raise `SubmitInterruptedError` (exit code 128 + signal); a rollback that
    cannot finish raises `RollbackIncompleteError`, which names every leftover and the command removing it.
    """
    from kubeaccel.spark.packages import check_resolvable

    app = _resolved(request)
    check_resolvable(app.packages)  # as spark-submit does: an unresolvable coordinate fails before any write
    kube = kube or connect_for(app, context=context, kubeconfig=kubeconfig)
    prepared = prepare(app, context_namespace=kube.context_namespace, generated=generated)
    check_served(kube, prepared.app.gang, prepared.namespace)  # a gang's API: before anything is written
    if check_quota:
        check_fits_cluster(kube, prepared.app)  # a gang larger than the cluster would wait for ever
    # a quick check without the lock: an app that cannot fit fails before anything is uploaded
    quota_limited = preflight(kube, prepared.app) if check_quota else False
    with guarded_signals():
        sid = _create_all_or_nothing(kube, prepared, quota_limited, progress)
        with signals_held():  # a signal now must not hide the ID of an app that exists
            if on_submitted is not None:
                on_submitted(sid)
            signum = pending_signal()
        if signum is not None:
            raise KubeaccelError(
                f"interrupted by {signal.Signals(signum).name} after submitting {sid}; the app keeps running",
                hint=f"kubeaccel spark kill {sid} stops it",
                exit_code=exit_code_for(signum),
            )
    return sid


def _create_all_or_nothing(
    kube: Kube, prepared: Prepared, quota_limited: bool, progress: uploads.Progress | None
) -> SubmissionId:
    """Upload, lock the quota, re-check it, create, unlock; any failure or signal rolls all of it back."""
    ledger = Ledger(prepared.namespace)
    lock: QuotaLock | None = None
    try:
        raise_if_signalled()
        _upload(prepared, ledger, progress)
        if quota_limited:
            lock = QuotaLock.acquire(kube, prepared.namespace)
            ledger.step_done()
            preflight(kube, prepared.app)  # again, now that no one else can create
        sid = create(kube, prepared.manifests, ledger, lock)
        if lock is not None:
            with signals_held():
                lock.release()
            lock = None
            ledger.step_done()
        raise_if_signalled()
        return sid
    except BaseException as exc:
        with signals_held():  # a second Ctrl-C must not cut the rollback or its report short
            left = ledger.roll_back(kube)
            if lock is not None:
                lock.release()  # after the rollback: the next submitter must not see our driver
            pod_id = str(SubmissionId(prepared.namespace, prepared.manifests.driver_pod_name))
            error = failure_after_rollback(exc, ledger, left, pod_id)
        raise error from exc


def _upload(prepared: Prepared, ledger: Ledger, progress: uploads.Progress | None) -> None:
    """One file at a time, each a recorded write; the whole directory is removed on rollback."""
    plan = prepared.plan
    if not plan.uploads:
        return
    ledger.uploading(plan.base_url, plan.storage)
    for upload in plan.uploads:
        uploads.execute(dataclasses.replace(plan, uploads=[upload]), progress)
        ledger.step_done()


WAIT_OUTAGE_SECONDS = 120.0  # how long `wait` rides out an unreachable API server before giving up
_RETRY_FIRST, _RETRY_MAX = 0.5, 8.0


WAIT_WINDOW_SECONDS = 60.0  # one watch request per window: the server ends it, and `wait` reads the driver anew


def wait(
    kube: Kube,
    sid: SubmissionId,
    *,
    on_change: Callable[[str], None] | None = None,
    poll_seconds: float = 1.0,
    timeout: float | None = None,
    outage_seconds: float = WAIT_OUTAGE_SECONDS,
    on_retry: Callable[[KubeaccelError, float], None] | None = None,
) -> int:
    """Follow the driver until it ends; returns its exit code (0 = Succeeded).

    Event-driven: the driver is read, then followed (`Kube.follow`: a watch, one request a minute rather
    than a read a second) until the watch window ends, then read again; `poll_seconds` is the least time
    between two reads. A transient API failure (unreachable, timed out, 429/5xx) is retried with
    exponential backoff (0.5 s doubling to 8 s) for up to `outage_seconds` in a row; then the last error
    is raised (exit 4) naming the app, which may well still be running. An outage shorter than the watch
    window goes unnoticed: the watch resumes when the server does. `timeout` holds throughout: exit 124
    when it passes.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    last = [""]
    outage_since: float | None = None
    backoff = _RETRY_FIRST

    def ended(pod: Mapping[str, Any]) -> int | None:
        phase = (pod.get("status") or {}).get("phase") or "Unknown"
        if phase != last[0] and on_change:
            on_change(phase)
        last[0] = phase
        if phase in ("Succeeded", "Failed"):
            code = driver_exit_code(pod)
            return code if code is not None else (0 if phase == "Succeeded" else 1)
        return None

    while True:
        started = time.monotonic()
        try:
            pod = _read_driver(kube, sid)
            outage_since, backoff = None, _RETRY_FIRST
            if (code := ended(pod)) is not None:
                return code
            _check_deadline(deadline, sid, last[0], timeout)
            window = WAIT_WINDOW_SECONDS if deadline is None else min(WAIT_WINDOW_SECONDS, deadline - started)
            since = str(pod["metadata"].get("resourceVersion") or "")
            for state in kube.follow(PODS, sid.pod, sid.namespace, since=since, window=max(1.0, window)):
                if state is None:
                    break  # deleted: the next read says so
                if (code := ended(state)) is not None:
                    return code
        except KubeaccelError as exc:
            if not _transient(exc):
                raise
            now = time.monotonic()
            outage_since = now if outage_since is None else outage_since
            if now - outage_since >= outage_seconds:
                raise UnavailableError(
                    f"gave up waiting for {sid} after {now - outage_since:.0f}s without the API server: {exc.message}",
                    hint=f"the app may still be running; check it with kubeaccel spark status {sid}",
                ) from exc
            _check_deadline(deadline, sid, last[0] or "unknown", timeout)
            pause = backoff if deadline is None else max(0.0, min(backoff, deadline - now))
            if on_retry:
                on_retry(exc, pause)
            time.sleep(pause)
            backoff = min(backoff * 2, _RETRY_MAX)
            continue
        _check_deadline(deadline, sid, last[0], timeout)
        time.sleep(max(0.0, started + poll_seconds - time.monotonic()))  # a watch that ends at once is no busy loop


def _read_driver(kube: Kube, sid: SubmissionId) -> dict[str, Any]:
    return kube.get_raw(PODS, sid.pod, sid.namespace)


def _transient(exc: KubeaccelError) -> bool:
    """Worth retrying: the door typed it retryable (unreachable, timed out, 429 / 5xx, conflict)."""
    return bool(getattr(exc, "retryable", False)) or isinstance(exc, UnavailableError)


def _check_deadline(deadline: float | None, sid: SubmissionId, phase: str, timeout: float | None) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise KubeaccelError(
            f"{sid} is still {phase} after {timeout:.0f}s",
            hint="check it with kubeaccel spark status",
            exit_code=124,
        )


def driver_exit_code(pod: Mapping[str, Any]) -> int | None:
    for status in (pod.get("status") or {}).get("containerStatuses") or []:
        terminated = (status.get("state") or {}).get("terminated")
        if terminated is not None:
            return int(terminated.get("exitCode") or 0)
    return None
