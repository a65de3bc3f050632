"""The SparkApplication controller: watches in, plans from `lifecycle.decide`, writes through the kube door.

Two watches per namespace feed caches and a work queue: the SparkApplications, and the pods labelled
`sparkoperator.k8s.io/launched-by-spark-operator=true` (drivers and executors, which carry the app's
name and submission ID). Workers take one app at a time from the queue, decide from the cached app and
pods what to do, and do it: a status merge patch, a submission through `spark.submit` (the CLI's path:
quota pre-flight, all-or-nothing create with its rollback ledger), a driver or app deletion, Events.
Nothing polls: an app is looked at again when it or one of its pods changes, or when a retry or TTL is due.

Idempotent across a SIGKILL: a submission is written into the status before it is made, with names and
identifiers derived from its ID, so a restarted controller re-makes exactly that submission, or adopts
the driver already made and creates whatever of its objects is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from kubeaccel.errors import AlreadyExistsError, ConfigError, KubeaccelError, NotFoundError
from kubeaccel.kube.client import ALL_NAMESPACES, Kube
from kubeaccel.kube.rest import PODS
from kubeaccel.operator import kinds, lifecycle, scheduled
from kubeaccel.operator.api import (
    API_VERSION,
    APP_KIND,
    SCHEDULED_KIND,
    AppState,
    ScheduledSparkApplication,
    SparkApplication,
)
from kubeaccel.operator.mapping import (
    LABEL_APP_NAME,
    LABEL_LAUNCHED,
    LABEL_SUBMISSION_ID,
    UnservedFieldError,
    driver_pod_name,
    resolve_mapped,
    spec_fields_named,
    to_submission,
)
from kubeaccel.operator.metrics import Metrics
from kubeaccel.spark.builder import Generated, owner_reference
from kubeaccel.spark.labels import LABEL_ROLE
from kubeaccel.spark.submit import prepare, spark_user, submit

log = logging.getLogger(__name__)
Key = tuple[str, str]  # (namespace, name); a ScheduledSparkApplication's name carries SCHEDULED_PREFIX
SCHEDULED_PREFIX = "scheduled/"  # no Kubernetes name holds a '/'
LABEL_SCHEDULED = scheduled.LABEL_SCHEDULED
Json = dict[str, Any]
WATCH_RETRY_FIRST, WATCH_RETRY_MAX = 0.5, 30.0
TRANSIENT_RETRY_S = 5.0
COMPONENT = "kubeaccel-operator"


def generated_for(submission_id: str, submitted_at: str | None) -> Generated:
    """Every identifier Spark makes up per submission, derived from the submission ID: the same names again
    when a restarted controller re-makes a submission."""
    digest = hashlib.sha256(submission_id.encode()).hexdigest()
    second = hashlib.sha256(digest.encode()).hexdigest()
    when = lifecycle.parse_time(submitted_at)
    return Generated(
        app_id=f"spark-{digest[:32]}",
        name_id=digest[32:48],
        service_id=digest[48:64],
        config_map_id=second[:16],
        local_dir_id=str(uuid.UUID(second[16:48])),
        submit_time_ms=int(when.timestamp() * 1000) if when else 0,
        spark_user=spark_user(),
    )


class Cache:
    """The apps and their pods as the watches last reported them. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.apps: dict[Key, Json] = {}
        self._pods: dict[Key, dict[str, Json]] = {}  # app key -> pod name -> pod

    def put_app(self, key: Key, obj: Json | None) -> None:
        with self._lock:
            if obj is None:
                self.apps.pop(key, None)
            else:
                self.apps[key] = obj

    def app(self, key: Key) -> Json | None:
        with self._lock:
            return self.apps.get(key)

    def put_pod(self, key: Key, name: str, obj: Json | None) -> None:
        with self._lock:
            pods = self._pods.setdefault(key, {})
            if obj is None:
                pods.pop(name, None)
                if not pods:
                    self._pods.pop(key, None)
            else:
                pods[name] = obj

    def pods(self, key: Key) -> dict[str, Json]:
        with self._lock:
            return dict(self._pods.get(key, {}))

    def items(self) -> list[tuple[Key, Json]]:
        with self._lock:
            return list(self.apps.items())

    def states(self) -> dict[str, int]:
        with self._lock:
            counts: dict[str, int] = {}
            for (_, name), obj in self.apps.items():
                if name.startswith(SCHEDULED_PREFIX):
                    continue
                state = ((obj.get("status") or {}).get("applicationState") or {}).get("state") or "NEW"
                counts[state] = counts.get(state, 0) + 1
            return counts


def observed_pods(app: SparkApplication, pods: Mapping[str, Json]) -> lifecycle.Observed:
    """The current submission's driver and executors among the app's pods."""
    submission = app.status.submission_id
    mine = {n: p for n, p in pods.items() if _labels(p).get(LABEL_SUBMISSION_ID) == submission and submission}
    driver_name = app.status.driver_info.pod_name or driver_pod_name(app)
    executors = {n: p for n, p in mine.items() if _labels(p).get(LABEL_ROLE) == "executor"}
    return lifecycle.Observed(mine.get(driver_name), executors)


def invalid_fields(exc: ValueError) -> str:
    """A pydantic refusal as `spec.driver.cores: Input should be ...; ...` (the fields as the YAML names them)."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):
        return str(exc)[:1000]
    parts = [
        ".".join(str(p) for p in error["loc"]) + ": " + str(error["msg"]) for error in exc.errors(include_url=False)
    ]
    return "; ".join(parts)[: lifecycle.MAX_MESSAGE]


def _labels(obj: Mapping[str, Any]) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


class Controller:
    """Reconciles SparkApplications in `namespaces` (ALL_NAMESPACES: every namespace)."""

    def __init__(
        self,
        kube: Kube,
        namespaces: Iterable[str] = (ALL_NAMESPACES,),
        *,
        workers: int = 4,
        metrics: Metrics | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        from kubeaccel.operator.workqueue import WorkQueue

        self.kube = kube
        self.namespaces = tuple(namespaces)
        self.workers = workers
        self.metrics = metrics or Metrics()
        self.clock = clock
        self.cache = Cache()
        self.queue: WorkQueue[Key] = WorkQueue()
        self.stopping = threading.Event()
        self.synced = threading.Event()
        self._threads: list[threading.Thread] = []
        self._watches_up: set[str] = set()
        self._lock = threading.Lock()

    # ---- running ----

    def start(self) -> None:
        for namespace in self.namespaces:
            self._spawn(f"watch-apps-{namespace}", self._watch_apps, namespace)
            self._spawn(f"watch-pods-{namespace}", self._watch_pods, namespace)
            self._spawn(f"watch-scheduled-{namespace}", self._watch_scheduled, namespace)
        for index in range(self.workers):
            self._spawn(f"worker-{index}", self._work)

    def healthy(self) -> bool:
        """Every loop thread still runs (a dead one means the process should be restarted)."""
        return not self.stopping.is_set() and all(thread.is_alive() for thread in self._threads)

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        self.stopping.set()
        self.queue.close()
        for thread in self._threads:
            if thread.name.startswith("worker"):
                thread.join(timeout)

    def _watch(
        self,
        what: str,
        namespace: str,
        stream: Callable[[], Iterable[tuple[str, Any]]],
        handle: Callable[[str, Json], None],
    ) -> None:
        backoff = WATCH_RETRY_FIRST
        while not self.stopping.is_set():
            try:
                events = iter(stream())
                self._mark_up(f"{what}/{namespace}")
                for event, obj in events:
                    if self.stopping.is_set():
                        return
                    handle(event, obj.to_dict() if hasattr(obj, "to_dict") else dict(obj))
                    backoff = WATCH_RETRY_FIRST
            except KubeaccelError as exc:
                log.warning("watch of %s in %s ended: %s; again in %.1fs", what, namespace, exc.message, backoff)
            except Exception:
                log.exception("watch of %s in %s failed; again in %.1fs", what, namespace, backoff)
            self.stopping.wait(backoff)
            backoff = min(backoff * 2, WATCH_RETRY_MAX)

    def _mark_up(self, name: str) -> None:
        with self._lock:
            self._watches_up.add(name)
            if len(self._watches_up) >= 3 * len(self.namespaces):
                self.synced.set()

    def _watch_apps(self, namespace: str) -> None:
        def handle(event: str, obj: Json) -> None:
            meta = obj.get("metadata") or {}
            key = (str(meta.get("namespace")), str(meta.get("name")))
            self.cache.put_app(key, None if event == "DELETED" else obj)
            if event != "DELETED":
                self.queue.add(key)
            parent = (meta.get("labels") or {}).get(LABEL_SCHEDULED)
            if parent:  # a run changed: its ScheduledSparkApplication may start the next or trim its history
                self.queue.add((key[0], SCHEDULED_PREFIX + parent))

        self._watch("sparkapplications", namespace, lambda: self.kube.watch(kinds.apps(), namespace), handle)

    def _watch_scheduled(self, namespace: str) -> None:
        def handle(event: str, obj: Json) -> None:
            meta = obj.get("metadata") or {}
            key = (str(meta.get("namespace")), SCHEDULED_PREFIX + str(meta.get("name")))
            self.cache.put_app(key, None if event == "DELETED" else obj)
            if event != "DELETED":
                self.queue.add(key)

        self._watch(
            "scheduledsparkapplications", namespace, lambda: self.kube.watch(kinds.scheduled(), namespace), handle
        )

    def _watch_pods(self, namespace: str) -> None:
        def handle(event: str, obj: Json) -> None:
            meta = obj.get("metadata") or {}
            app_name = (meta.get("labels") or {}).get(LABEL_APP_NAME)
            if not app_name:
                return
            key = (str(meta.get("namespace")), str(app_name))
            self.cache.put_pod(key, str(meta.get("name")), None if event == "DELETED" else obj)
            self.queue.add(key)

        pods = PODS.lightkube()
        self._watch(
            "pods", namespace, lambda: self.kube.watch(pods, namespace, labels={LABEL_LAUNCHED: "true"}), handle
        )

    def _work(self) -> None:
        while not self.stopping.is_set():
            key = self.queue.get()
            if key is None:
                return
            started = time.monotonic()
            try:
                self.reconcile(key)
            except KubeaccelError as exc:
                self.metrics.reconcile_errors.inc()
                log.warning("reconcile %s/%s: %s; again in %.0fs", *key, exc.message, TRANSIENT_RETRY_S)
                self.queue.add_after(key, TRANSIENT_RETRY_S)
            except Exception:
                self.metrics.reconcile_errors.inc()
                log.exception("reconcile %s/%s failed; again in %.0fs", *key, TRANSIENT_RETRY_S)
                self.queue.add_after(key, TRANSIENT_RETRY_S)
            finally:
                self.metrics.reconcile_seconds.observe(time.monotonic() - started)
                self.queue.done(key)

    # ---- one app ----

    def reconcile(self, key: Key) -> None:
        raw = self.cache.app(key)
        if raw is None:
            return
        if key[1].startswith(SCHEDULED_PREFIX):
            self._reconcile_scheduled(key, raw)
            return
        try:
            app = SparkApplication.model_validate(raw)
        except ValueError as exc:  # stored under another CRD (kubeflow's): a field this model does not know
            self._invalid(key, raw, exc)
            return
        observed = self._observed(app)
        plan = lifecycle.decide(app, observed, self.clock(), lambda: str(uuid.uuid4()))
        app = self._execute(app, observed, plan)
        if plan.submit:
            self._submit(app)

    def _invalid(self, key: Key, raw: Json, exc: ValueError) -> None:
        """SUBMISSION_FAILED naming the fields the model refuses (once: not again for the same generation)."""
        status = raw.get("status") or {}
        generation = (raw.get("metadata") or {}).get("generation")
        if status.get("observedGeneration") == generation and status.get("applicationState", {}).get("state"):
            return
        message = "the spec does not validate: " + invalid_fields(exc)
        patch = {
            **lifecycle.state_patch(AppState.SUBMISSION_FAILED, message),
            "observedGeneration": generation,
            "terminationTime": lifecycle.timestamp(self.clock()),
        }
        stored = self.kube.merge_patch(kinds.apps().Status, key[1], {"status": patch}, key[0])
        self.cache.put_app(key, stored.to_dict())
        self._event(raw, lifecycle.Event("Warning", "SparkApplicationSubmissionFailed", message))

    def _reconcile_scheduled(self, key: Key, raw: Json) -> None:
        try:
            scheduled_app = ScheduledSparkApplication.model_validate(raw)
        except ValueError as exc:
            self._event(
                raw, lifecycle.Event("Warning", "ScheduledSparkApplicationInvalid", str(exc)[:1000]), SCHEDULED_KIND
            )
            return
        namespace, name = key[0], scheduled_app.metadata.name
        runs = [
            scheduled.run_of(obj)
            for (ns, _), obj in self.cache.items()
            if ns == namespace
            and ((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_SCHEDULED) == name
            and obj.get("kind", APP_KIND) == APP_KIND
        ]
        created = (raw.get("metadata") or {}).get("creationTimestamp")
        plan = scheduled.decide(scheduled_app, runs, self.clock(), created)
        for run in plan.delete:
            self.kube.delete(kinds.apps(), run, namespace, missing_ok=True)
        if plan.create is not None:
            with contextlib.suppress(AlreadyExistsError):  # made before a restart: the same run
                self.kube.create(plan.create, namespace=namespace)
        if plan.status is not None:
            stored = self.kube.merge_patch(kinds.scheduled().Status, name, {"status": plan.status}, namespace)
            self.cache.put_app(key, stored.to_dict())
        if plan.requeue_after is not None:
            self.queue.add_after(key, plan.requeue_after)

    def _observed(self, app: SparkApplication) -> lifecycle.Observed:
        key = (app.metadata.namespace or "default", app.metadata.name)
        observed = observed_pods(app, self.cache.pods(key))
        following = app.status.application_state.state in lifecycle.FOLLOWING
        if observed.driver is None and following:
            # the pod watch may lag the status we wrote: ask before declaring the driver gone
            try:
                pod = self.kube.get_raw(PODS, app.status.driver_info.pod_name or driver_pod_name(app), key[0])
            except NotFoundError:
                return observed
            if _labels(pod).get(LABEL_SUBMISSION_ID) == app.status.submission_id:
                return lifecycle.Observed(pod, observed.executors)
        return observed

    def _execute(self, app: SparkApplication, observed: lifecycle.Observed, plan: lifecycle.Plan) -> SparkApplication:
        namespace, name = app.metadata.namespace or "default", app.metadata.name
        if plan.delete_driver and observed.driver is not None:
            self.kube.delete(PODS, str(observed.driver["metadata"]["name"]), namespace, missing_ok=True)
        if plan.status is not None:
            app = self._patch_status(app, plan.status)
        for event in plan.events:
            self._event(app.model_dump(by_alias=True), event)
        if plan.delete_app:
            self.kube.delete(kinds.apps(), name, namespace, missing_ok=True)
        if plan.requeue_after is not None:
            self.queue.add_after((namespace, name), plan.requeue_after)
        return app

    def _patch_status(self, app: SparkApplication, patch: Json) -> SparkApplication:
        namespace, name = app.metadata.namespace or "default", app.metadata.name
        stored = self.kube.merge_patch(kinds.apps().Status, name, {"status": patch}, namespace)
        raw: Json = stored.to_dict()
        self.cache.put_app((namespace, name), raw)
        return SparkApplication.model_validate(raw)

    def _owner(self, app: SparkApplication) -> Json:
        return {
            "apiVersion": API_VERSION,
            "kind": APP_KIND,
            "name": app.metadata.name,
            "uid": app.metadata.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }

    def _submit(self, app: SparkApplication) -> None:
        """Make (or adopt) the submission written in the status; record the outcome there."""
        namespace = app.metadata.namespace or "default"
        submission = str(app.status.submission_id)
        started = time.monotonic()
        generated = generated_for(submission, app.status.last_submission_attempt_time)
        try:
            mapped = to_submission(
                app, master=f"k8s://{self.kube.server}", submission_id=submission, owner=self._owner(app)
            )
            resolved = resolve_mapped(mapped)
            pod_name = resolved.driver_pod_name or driver_pod_name(app)
            existing = self._existing_driver(pod_name, namespace)
            if existing is not None and _labels(existing).get(LABEL_SUBMISSION_ID) != submission:
                # an earlier submission's driver (being deleted, or left over): make room, look again when it goes
                self.kube.delete(PODS, pod_name, namespace, missing_ok=True)
                self.queue.add_after((namespace, app.metadata.name), TRANSIENT_RETRY_S)
                return
            if existing is not None:
                self._adopt(existing, resolved, generated, namespace)
            else:
                submit(resolved, kube=self.kube, generated=generated, check_quota=True)
        except KubeaccelError as exc:
            if getattr(exc, "retryable", False) and not isinstance(exc, ConfigError):
                raise  # the API server is away: the worker tries again, nothing was left behind
            self._submission_failed(app, exc)
            return
        self.metrics.submit_seconds.observe(time.monotonic() - started)
        self._patch_status(
            app,
            {
                **lifecycle.state_patch(AppState.SUBMITTED),
                "sparkApplicationId": generated.app_id,
                "driverInfo": {"podName": pod_name},
                "executionAttempts": app.status.execution_attempts + 1,
            },
        )
        self._event(
            app.model_dump(by_alias=True),
            lifecycle.Event("Normal", "SparkApplicationSubmitted", f"submitted as {namespace}:{pod_name}"),
        )

    def _existing_driver(self, pod_name: str, namespace: str) -> Json | None:
        try:
            return self.kube.get_raw(PODS, pod_name, namespace)
        except NotFoundError:
            return None

    def _adopt(self, pod: Json, resolved: Any, generated: Generated, namespace: str) -> None:
        """The driver of this submission exists (a controller died after creating it): create what it lacks."""
        manifests = prepare(resolved, generated=generated).manifests
        reference = owner_reference(str(pod["metadata"]["name"]), str(pod["metadata"]["uid"]))
        for manifest in manifests.owned:
            manifest["metadata"]["ownerReferences"] = [reference]
            try:
                self.kube.create(manifest, namespace=namespace)
            except AlreadyExistsError:
                continue

    def _submission_failed(self, app: SparkApplication, exc: KubeaccelError) -> None:
        message = exc.message + (f" ({exc.hint})" if exc.hint else "")
        fields = spec_fields_named(message) if not isinstance(exc, UnservedFieldError) else []
        if fields:  # the CLI names confs; the YAML's author set spec fields
            message += f" [in the SparkApplication: {', '.join(fields)}]"
        self.metrics.submission_failures.inc()
        self._patch_status(
            app,
            {
                **lifecycle.state_patch(AppState.SUBMISSION_FAILED, message),
                "terminationTime": lifecycle.timestamp(self.clock()),
            },
        )
        self._event(
            app.model_dump(by_alias=True), lifecycle.Event("Warning", "SparkApplicationSubmissionFailed", message)
        )

    def _event(self, app: Mapping[str, Any], event: lifecycle.Event, kind: str = APP_KIND) -> None:
        meta = app.get("metadata") or {}
        now = lifecycle.timestamp(self.clock())
        manifest = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:16]}", "namespace": meta.get("namespace")},
            "involvedObject": {
                "apiVersion": API_VERSION,
                "kind": kind,
                "name": meta.get("name"),
                "namespace": meta.get("namespace"),
                "uid": meta.get("uid"),
            },
            "reason": event.reason,
            "message": event.message[: lifecycle.MAX_MESSAGE],
            "type": event.type,
            "source": {"component": COMPONENT},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            self.kube.create(manifest, namespace=str(meta.get("namespace")))
        except KubeaccelError as exc:  # an Event is a courtesy: its loss must not stop the app
            log.warning("event %s on %s not recorded: %s", event.reason, meta.get("name"), exc.message)
