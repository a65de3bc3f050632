"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection: one replica reconciles.

Every `retry_s` each candidate reads the Lease and, by compare-and-swap on its resourceVersion, takes it
when it is free or expired (renewTime + leaseDurationSeconds in the past), or renews it when it is its
own. A leader that cannot renew within `renew_deadline_s` (less than the lease duration) calls
`on_lost`, which ends the process: it stops writing before any other replica may take the Lease, so two
replicas never submit at once. A killed leader is replaced once its Lease expires (12 s by default, so within 14 s).

`step` is the pure decision; `LeaderElector` runs it through the kube door.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kubeaccel.errors import AlreadyExistsError, ConflictError, KubeaccelError, NotFoundError
from kubeaccel.kube.client import Kube
from kubeaccel.kube.rest import LEASES

log = logging.getLogger(__name__)
LEASE_NAME = "kubeaccel-operator"
LEASE_SECONDS = 12  # with RETRY_S: a dead leader is replaced within 14 s
RENEW_DEADLINE_S = 8.0  # < LEASE_SECONDS: a leader that cannot renew stops before the Lease expires
RETRY_S = 2.0


def identity() -> str:
    return f"{os.environ.get('POD_NAME') or socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def micro_time(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_micro_time(text: str | None) -> datetime | None:
    if not text:
        return None
    for pattern in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=UTC)
        except ValueError:
            continue
    return None


@dataclass(frozen=True)
class Step:
    """What to write: a new Lease spec (None: nothing), and whether we lead after it is written."""

    spec: dict[str, Any] | None
    leading: bool


def step(lease: Mapping[str, Any] | None, me: str, now: datetime, duration: int = LEASE_SECONDS) -> Step:
    """The candidate's move given the Lease as read (None: there is none)."""
    ours = {"holderIdentity": me, "leaseDurationSeconds": duration, "renewTime": micro_time(now)}
    if lease is None:
        return Step({**ours, "acquireTime": micro_time(now), "leaseTransitions": 0}, True)
    spec = dict(lease.get("spec") or {})
    holder = spec.get("holderIdentity")
    if holder == me:
        return Step({**spec, **ours}, True)
    renewed = parse_micro_time(spec.get("renewTime"))
    held_for = int(spec.get("leaseDurationSeconds") or duration)
    if holder and renewed is not None and now < renewed + timedelta(seconds=held_for):
        return Step(None, False)  # another replica leads
    transitions = int(spec.get("leaseTransitions") or 0) + (1 if holder else 0)
    return Step({**spec, **ours, "acquireTime": micro_time(now), "leaseTransitions": transitions}, True)


class LeaderElector:
    def __init__(
        self,
        kube: Kube,
        namespace: str,
        *,
        name: str = LEASE_NAME,
        me: str | None = None,
        on_started: Callable[[], None],
        on_lost: Callable[[], None],
        retry_s: float = RETRY_S,
        renew_deadline_s: float = RENEW_DEADLINE_S,
        duration: int = LEASE_SECONDS,
    ) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.me = me or identity()
        self.on_started, self.on_lost = on_started, on_lost
        self.retry_s, self.renew_deadline_s, self.duration = retry_s, renew_deadline_s, duration
        self.leading = threading.Event()
        self._released = threading.Event()  # a clean stop: the loop ends without on_lost, and takes nothing

    def run(self, stop: threading.Event) -> None:
        last_renewed = 0.0
        while not stop.is_set() and not self._released.is_set():
            try:
                leads = self._try()
            except KubeaccelError as exc:
                log.warning("lease %s/%s: %s", self.namespace, self.name, exc.message)
                leads = None
            if self._released.is_set():
                return  # released meanwhile: a renewal refused now is our own release, not a loss
            now = time.monotonic()
            if leads:
                last_renewed = now
                if not self.leading.is_set():
                    self.leading.set()
                    log.info("leading as %s", self.me)
                    self.on_started()
            elif self.leading.is_set() and (leads is False or now - last_renewed > self.renew_deadline_s):
                log.error("lost the lease %s/%s: stopping", self.namespace, self.name)
                self.leading.clear()
                self.on_lost()
                return
            stop.wait(self.retry_s)

    def _try(self) -> bool:
        """True: we lead (the Lease is written); False: another does."""
        try:
            lease: dict[str, Any] | None = self.kube.get_raw(LEASES, self.name, self.namespace)
        except NotFoundError:
            lease = None
        decision = step(lease, self.me, datetime.now(UTC), self.duration)
        if decision.spec is None:
            return False
        metadata: dict[str, Any] = {"name": self.name, "namespace": self.namespace}
        manifest = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": metadata,
            "spec": decision.spec,
        }
        try:
            if lease is None:
                self.kube.create(manifest, namespace=self.namespace)
            else:
                metadata["resourceVersion"] = lease["metadata"]["resourceVersion"]
                self.kube.replace(manifest, namespace=self.namespace)
        except (AlreadyExistsError, ConflictError):
            return False  # another replica wrote first
        return decision.leading

    def release(self) -> None:
        """On a clean stop: leave the Lease free at once, so a standby takes over without waiting."""
        self._released.set()
        if not self.leading.is_set():
            return
        try:
            lease = self.kube.get_raw(LEASES, self.name, self.namespace)
            spec = dict(lease.get("spec") or {})
            if spec.get("holderIdentity") != self.me:
                return
            spec.update(holderIdentity=None, leaseDurationSeconds=1)
            manifest = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": lease["metadata"],
                "spec": spec,
            }
            self.kube.replace(manifest, namespace=self.namespace)
        except KubeaccelError as exc:
            log.warning("lease %s/%s not released: %s", self.namespace, self.name, exc.message)
