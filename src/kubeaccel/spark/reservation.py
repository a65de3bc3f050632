"""Quota reservations that hold under concurrency: one submit at a time per namespace, between the
quota pre-flight and the creation of the app, serialised by a coordination.k8s.io Lease.

Why a lock and not a reservation record: the pre-flight already derives every admitted app's outstanding
demand from the cluster itself (drivers whose executors do not exist yet, read from each driver's conf
ConfigMap; see `preflight.outstanding_demand`). That derived reservation is released exactly when it
should be (the executors exist, or the app ended) and never goes stale. What was missing is only that
two submitters could both read the same room before either created its driver. So the read and the
create become one critical section:

    lock = QuotaLock.acquire(kube, "team-a")    # compare-and-swap on the Lease's resourceVersion
    preflight(...); create(...)                  # the driver + its conf ConfigMap exist before...
    lock.release()                               # ...the next submitter reads the room

A submitter that dies holding the lock loses it after `LEASE_SECONDS` (the Lease's `renewTime` +
`leaseDurationSeconds`, compared with the local clock: keep clocks in sync, as for any Lease).
Right before its first create the holder renews the Lease (again by compare-and-swap), so a holder
that stalled past the expiry and lost the lock finds out before it writes anything.
"""

from __future__ import annotations

import os
import random
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubeaccel.errors import (
    AlreadyExistsError,
    ConflictError,
    ForbiddenError,
    KubeaccelError,
    NotFoundError,
    UnavailableError,
)
from kubeaccel.kube.client import Kube
from kubeaccel.kube.rest import LEASES

LEASE_NAME = "kubeaccel-quota-lock"
LEASE_SECONDS = 20
DEFAULT_WAIT_SECONDS = 60.0
_BACKOFF_FIRST, _BACKOFF_MAX = 0.05, 1.0


def holder_identity() -> str:
    """Who holds the lock, for people reading the Lease: host, process, and a random suffix."""
    return f"{socket.gethostname()}/pid-{os.getpid()}/{uuid.uuid4().hex[:8]}"


def _now() -> datetime:
    return datetime.now(UTC)


def _micro_time(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@dataclass(frozen=True)
class LeaseView:
    """The parts of the Lease this lock reads."""

    resource_version: str
    holder: str | None
    renewed: datetime | None
    duration: int
    transitions: int

    @classmethod
    def of(cls, lease: dict[str, Any]) -> LeaseView:
        spec = lease.get("spec") or {}
        return cls(
            resource_version=str(lease["metadata"]["resourceVersion"]),
            holder=spec.get("holderIdentity") or None,
            renewed=_parse_time(spec.get("renewTime")),
            duration=int(spec.get("leaseDurationSeconds") or LEASE_SECONDS),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def free_at(self, now: datetime) -> bool:
        """Nobody holds it, or its holder stopped renewing it in time (died or stalled)."""
        if self.holder is None:
            return True
        return self.renewed is None or self.renewed + timedelta(seconds=self.duration) <= now

    def expires_in(self, now: datetime) -> float:
        if self.renewed is None:
            return 0.0
        return max(0.0, (self.renewed + timedelta(seconds=self.duration) - now).total_seconds())


def lease_manifest(namespace: str, holder: str | None, now: datetime, *, transitions: int = 0) -> dict[str, Any]:
    spec: dict[str, Any] = {"leaseDurationSeconds": LEASE_SECONDS, "leaseTransitions": transitions}
    if holder is not None:
        spec.update(holderIdentity=holder, acquireTime=_micro_time(now), renewTime=_micro_time(now))
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {
            "name": LEASE_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "kubeaccel"},
        },
        "spec": spec,
    }


# --- the API calls, through the door (on its fast lane where the kubeconfig allows) ---------------


def _read(kube: Kube, namespace: str) -> LeaseView | None:
    try:
        return LeaseView.of(kube.get_raw(LEASES, LEASE_NAME, namespace))
    except NotFoundError:
        return None


def _create(kube: Kube, manifest: dict[str, Any]) -> LeaseView | None:
    """None when someone else created it first."""
    try:
        return LeaseView.of(kube.create(manifest))
    except (AlreadyExistsError, ConflictError):
        return None


def _swap(kube: Kube, manifest: dict[str, Any], resource_version: str) -> LeaseView | None:
    """Replace the Lease only if it is still at `resource_version`; None when it changed meanwhile."""
    manifest = {**manifest, "metadata": {**manifest["metadata"], "resourceVersion": resource_version}}
    try:
        return LeaseView.of(kube.replace(manifest))
    except (ConflictError, NotFoundError):
        return None


def _forbidden_hint(exc: KubeaccelError) -> KubeaccelError:
    if not isinstance(exc, ForbiddenError):
        return exc
    return ForbiddenError(
        exc.message,
        hint="the quota pre-flight takes a per-namespace lock: get, create and update on "
        "leases.coordination.k8s.io (kubeaccel tenant create grants them); or skip the check with --no-preflight",
        reason=exc.reason,
        code=exc.code,
    )


@dataclass
class QuotaLock:
    """A held lock on one namespace's quota; `release` it (or let it expire)."""

    kube: Kube
    namespace: str
    holder: str
    view: LeaseView

    @classmethod
    def acquire(
        cls,
        kube: Kube,
        namespace: str,
        *,
        wait_seconds: float = DEFAULT_WAIT_SECONDS,
        sleep: Callable[[float], None] = time.sleep,
    ) -> QuotaLock:
        """Take the namespace's lock, waiting (with jittered backoff) while another submit holds it."""
        holder = holder_identity()
        deadline = time.monotonic() + wait_seconds
        backoff = _BACKOFF_FIRST
        try:
            while True:
                now = _now()
                current = _read(kube, namespace)
                if current is None:
                    taken = _create(kube, lease_manifest(namespace, holder, now))
                elif current.free_at(now):
                    manifest = lease_manifest(namespace, holder, now, transitions=current.transitions + 1)
                    taken = _swap(kube, manifest, current.resource_version)
                else:
                    taken = None
                if taken is not None:
                    return cls(kube, namespace, holder, taken)
                if time.monotonic() > deadline:
                    who = f" by {current.holder}" if current and current.holder else ""
                    raise UnavailableError(
                        f"the quota lock of namespace {namespace!r} (lease {LEASE_NAME}) is held{who} "
                        f"after waiting {wait_seconds:.0f}s",
                        hint="other submits are in progress: retry; a lock whose submitter died expires "
                        f"after {LEASE_SECONDS}s",
                    )
                sleep(backoff * random.uniform(0.5, 1.5))  # jitter: waiters must not retry in lockstep
                backoff = min(backoff * 2, _BACKOFF_MAX)
        except KubeaccelError as exc:
            raise _forbidden_hint(exc) from exc

    def renew(self) -> None:
        """Prove we still hold the lock right before writing (compare-and-swap on the Lease)."""
        now = _now()
        manifest = lease_manifest(self.namespace, self.holder, now, transitions=self.view.transitions)
        renewed = _swap(self.kube, manifest, self.view.resource_version)
        if renewed is None:
            raise UnavailableError(
                f"lost the quota lock of namespace {self.namespace!r} while checking the quota "
                f"(held longer than {LEASE_SECONDS}s: a slow or stalled API server?)",
                hint="nothing was created; retry the submit",
            )
        self.view = renewed

    def release(self) -> bool:
        """Free the lock if we still hold it; False when that failed (it then expires by itself)."""
        manifest = lease_manifest(self.namespace, None, _now(), transitions=self.view.transitions)
        try:
            return _swap(self.kube, manifest, self.view.resource_version) is not None
        except KubeaccelError:
            return False
