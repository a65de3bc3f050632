"""The DRA node services: prepare and unprepare claims (``v1`` and ``v1beta1``), stream device health.

``Driver`` holds the rules and is independent of the wire version: a claim already in the
checkpoint is answered from it (idempotent, no API server needed, so prepared claims keep being
served while the API server is down); a new one is read from the API server, resolved against the
node's pools, its CDI spec written, the checkpoint record made durable, and only then answered.
Every failure is that claim's ``error``; a request never fails as a whole, every claim it names gets
an answer however many there are, and the daemon never crashes on input.

Claims are independent: each claim of a call runs as its own task, so a slow API read or a large
unprepare holds up nobody else; calls naming the same claim are serialized by a lock per UID. File
I/O (CDI specs) runs in threads and the checkpoint's writes are group-committed off the event loop
(``kubeaccel.dra.checkpoint``). A call the kubelet cancels (its deadline) leaves the work it
started to finish, so the disk never holds half of a claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from kubeaccel.devices import cdi
from kubeaccel.dra._generated import dra_v1_pb2, dra_v1_pb2_grpc, dra_v1beta1_pb2, dra_v1beta1_pb2_grpc
from kubeaccel.dra._generated import health_v1_pb2 as hpb
from kubeaccel.dra._generated import health_v1_pb2_grpc as hpb_grpc
from kubeaccel.dra.checkpoint import UID, Checkpoint, PreparedClaim, PreparedDevice
from kubeaccel.dra.claims import ClaimError, allocated, cdi_kind, claim_spec, spec_file
from kubeaccel.dra.inventory import Inventory
from kubeaccel.dra.metrics import Metrics, holders
from kubeaccel.errors import KubeaccelError, NotFoundError, UnavailableError

log = logging.getLogger(__name__)
Ctx = grpc.aio.ServicerContext[Any, Any]

MAX_ERROR_CHARS = 1024
MAX_FIELD_CHARS = 253
MAX_CONCURRENT_READS = 32  # ResourceClaim GETs in flight at once (one call may name thousands of claims)
HEALTH_CHECK_TIMEOUT_S = 0  # the kubelet's default (30 s) suits our backends' change signals
MAX_SPEC_BYTES = 4 << 20  # a claim's spec is a few KiB; more is not one we wrote
SPEC_PREFIX = spec_file("").removesuffix(".json")  # kubeaccel-dra-: our per-claim spec files

ClaimReader = Callable[[str, str], Awaitable[Mapping[str, Any]]]


@dataclass(frozen=True)
class ClaimRef:
    namespace: str
    uid: str
    name: str


@dataclass(frozen=True)
class Outcome:
    devices: tuple[PreparedDevice, ...] = ()
    error: str = ""


def _bounded(text: str) -> str:
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


def _uid_problem(uid: str) -> str:
    if not UID.fullmatch(uid):
        return f"{uid[:64]!r} is not a claim UID (letters, digits, '-', '_', '.'; at most 253)"
    return ""


def _check_ref(ref: ClaimRef) -> None:
    if not ref.uid or not ref.name or not ref.namespace:
        raise ClaimError("the claim reference needs namespace, name and uid")
    if max(len(ref.uid), len(ref.name), len(ref.namespace)) > MAX_FIELD_CHARS:
        raise ClaimError("the claim reference has a field longer than 253 characters")
    if problem := _uid_problem(ref.uid):
        raise ClaimError(problem)


def _unique(refs: Sequence[ClaimRef]) -> list[ClaimRef]:
    """One reference per UID (the answer is a map by UID): the first wins."""
    seen: dict[str, ClaimRef] = {}
    for ref in refs:
        seen.setdefault(ref.uid, ref)
    return list(seen.values())


class Driver:
    """Prepare/unprepare rules over the inventory, the checkpoint and the CDI directory."""

    def __init__(
        self, driver: str, inventory: Inventory, checkpoint: Checkpoint, cdi_dir: Path, read_claim: ClaimReader, *,
        metrics: Metrics | None = None,
    ) -> None:
        self.driver = driver
        self.metrics = metrics or Metrics()
        self.inventory = inventory
        self.checkpoint = checkpoint
        self.cdi_dir = cdi_dir
        self._read_claim = read_claim
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}  # per claim UID, while someone uses it
        self._reads: asyncio.Semaphore | None = None
        self._inflight: set[asyncio.Future[Any]] = set()
        self.unremovable: list[str] = []  # spec files restore() could not remove

    # -- start ------------------------------------------------------------------------------------

    def restore(self) -> None:
        """At start: remove temp files of interrupted spec writes and our spec files no checkpointed
        claim owns (a crash between the two writes), and rewrite the specs of checkpointed claims that
        are gone (``/var/run/cdi`` is a tmpfs). A file that cannot be removed or written is logged and
        counted (``kubeaccel_dra_cdi_spec_errors_total``); start goes on and claims are served."""
        owned = {spec_file(uid) for uid in self.checkpoint.claims}
        try:
            names = os.listdir(self.cdi_dir)
        except FileNotFoundError:
            names = []
        except OSError as exc:
            log.error("cannot read the CDI directory %s: %s", self.cdi_dir, exc.strerror or exc)
            self.metrics.cdi_errors.labels("list").inc()
            names = []
        kind = cdi_kind(self.driver)
        for name in names:
            interrupted = name.startswith(f".{SPEC_PREFIX}") and name.endswith(".tmp")
            orphan = (name.startswith(SPEC_PREFIX) and name.endswith(".json") and name not in owned
                      and _spec_kind(self.cdi_dir / name) in (kind, None))
            if interrupted or orphan:
                log.info("removing %s CDI spec %s", "a half-written" if interrupted else "orphaned",
                         self.cdi_dir / name)
                try:
                    (self.cdi_dir / name).unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.error("cannot remove %s: %s (serving goes on)", self.cdi_dir / name, exc.strerror or exc)
                    self.metrics.cdi_errors.labels("remove").inc()
                    self.unremovable.append(name)
        present = set(names)
        for known in self.checkpoint.claims.values():
            if known.spec and spec_file(known.uid) not in present:
                try:
                    cdi.write_spec(self.cdi_dir, spec_file(known.uid), known.spec)
                except cdi.CdiError as exc:
                    log.error("claim %s: %s", known.uid, exc)
                    self.metrics.cdi_errors.labels("write").inc()
        self._metrics_claims()

    def _metrics_claims(self) -> None:
        """The prepared-claims gauges from the checkpoint, the one truth (at start, after every call)."""
        self.metrics.prepared.set(len(self.checkpoint.claims))
        resources = {name: pool.resource_name for name, pool in self.inventory.pools.items()}
        self.metrics.set_allocated(self.checkpoint.claims.values(), resources)

    # -- per-claim serialization --------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _claim(self, uid: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(uid) or (asyncio.Lock(), 0)
        self._locks[uid] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[uid]
            if users == 1:
                del self._locks[uid]
            else:
                self._locks[uid] = (lock, users - 1)

    async def _each(self, refs: Sequence[ClaimRef], one: Callable[[ClaimRef], Awaitable[Any]]) -> list[Any]:
        """``one`` for every claim, concurrently; the work goes on if the kubelet cancels the call."""
        tasks = [asyncio.ensure_future(one(ref)) for ref in refs]
        if not tasks:
            return []
        self._inflight.update(tasks)
        for task in tasks:
            task.add_done_callback(self._inflight.discard)
        return await asyncio.shield(asyncio.gather(*tasks))

    async def drain(self, timeout: float) -> None:
        """On stop, after the servers: let claims under way finish (cancelled calls leave them running)."""
        if self._inflight:
            await asyncio.wait(set(self._inflight), timeout=timeout)

    # -- prepare ------------------------------------------------------------------------------------

    async def prepare(self, refs: Sequence[ClaimRef]) -> dict[str, Outcome]:
        unique = _unique(refs)
        with self.metrics.call_seconds.labels("prepare").time():
            outcomes = await self._each(unique, self._prepare_claim)
        out = {ref.uid: outcome for ref, outcome in zip(unique, outcomes, strict=True)}
        for outcome in outcomes:
            self.metrics.claims.labels("prepare", "error" if outcome.error else "ok").inc()
        self._metrics_claims()
        return out

    async def _prepare_claim(self, ref: ClaimRef) -> Outcome:
        if problem := _uid_problem(ref.uid):
            return Outcome(error=_bounded(problem))
        try:
            async with self._claim(ref.uid):
                return await self._prepare_locked(ref)
        except Exception as exc:  # a bug must cost one claim, never the call
            log.error("claim %s: unexpected error", ref.uid, exc_info=exc)
            return Outcome(error=_bounded(f"internal error: {exc!r}"))

    async def _prepare_locked(self, ref: ClaimRef) -> Outcome:
        known = self.checkpoint.claims.get(ref.uid)
        if known is not None:  # prepared before (maybe by an earlier run): the same answer, no API call
            if known.spec and not (self.cdi_dir / spec_file(known.uid)).exists():
                try:
                    await asyncio.to_thread(cdi.write_spec, self.cdi_dir, spec_file(known.uid), known.spec)
                except cdi.CdiError as exc:
                    return Outcome(error=_bounded(str(exc)))
            return Outcome(devices=known.devices)
        try:
            claim = await self._fetch(ref)
            devices = allocated(claim, ref.uid, self.driver, self.inventory.pools)
            document, ids = claim_spec(self.driver, ref.uid, devices, self.inventory.backends)
        except (ClaimError, cdi.CdiError) as exc:
            return Outcome(error=_bounded(str(exc)))
        pods, app = holders(claim)
        prepared = PreparedClaim(ref.uid, ref.namespace, ref.name, tuple(_merge(devices, ids)), document, pods, app)
        try:
            await asyncio.to_thread(cdi.write_spec, self.cdi_dir, spec_file(ref.uid), document)
        except cdi.CdiError as exc:
            return Outcome(error=_bounded(str(exc)))
        try:
            await self.checkpoint.put(prepared)
        except OSError as exc:
            # Nothing half-made: without the checkpoint record the spec must go too.
            with contextlib.suppress(OSError):
                await asyncio.to_thread(cdi.remove_spec, self.cdi_dir, spec_file(ref.uid))
            return Outcome(error=_bounded(exc.strerror or str(exc)))
        log.info("prepared claim %s/%s (%s): %s", ref.namespace, ref.name, ref.uid,
                 ", ".join(f"{d.pool}/{d.device}" for d in prepared.devices))
        return Outcome(devices=prepared.devices)

    async def _fetch(self, ref: ClaimRef) -> Mapping[str, Any]:
        _check_ref(ref)
        if self._reads is None:
            self._reads = asyncio.Semaphore(MAX_CONCURRENT_READS)
        try:
            async with self._reads:
                return await self._read_claim(ref.namespace, ref.name)
        except NotFoundError:
            raise ClaimError(f"claim {ref.namespace}/{ref.name} does not exist (deleted?)") from None
        except UnavailableError as exc:
            raise ClaimError(f"cannot read claim {ref.namespace}/{ref.name}: {exc.message}; the kubelet "
                             "retries") from None
        except KubeaccelError as exc:
            raise ClaimError(f"cannot read claim {ref.namespace}/{ref.name}: {exc.message}") from None

    # -- unprepare ----------------------------------------------------------------------------------

    async def unprepare(self, refs: Sequence[ClaimRef]) -> dict[str, str]:
        unique = _unique(refs)
        with self.metrics.call_seconds.labels("unprepare").time():
            errors = await self._each(unique, self._unprepare_claim)
        for error in errors:
            self.metrics.claims.labels("unprepare", "error" if error else "ok").inc()
        self._metrics_claims()
        return {ref.uid: error for ref, error in zip(unique, errors, strict=True)}

    async def _unprepare_claim(self, ref: ClaimRef) -> str:
        if problem := _uid_problem(ref.uid):
            return _bounded(problem)
        try:
            async with self._claim(ref.uid):
                try:
                    await asyncio.to_thread(cdi.remove_spec, self.cdi_dir, spec_file(ref.uid))
                except OSError as exc:
                    return _bounded(f"cannot remove the CDI spec of claim {ref.uid}: {exc}")
                known = ref.uid in self.checkpoint.claims
                try:
                    await self.checkpoint.delete(ref.uid)  # still recorded on failure: the kubelet's retry tries again
                except OSError as exc:
                    return _bounded(exc.strerror or str(exc))
        except Exception as exc:
            log.error("claim %s: unexpected error", ref.uid, exc_info=exc)
            return _bounded(f"internal error: {exc!r}")
        if known:
            log.info("unprepared claim %s/%s (%s)", ref.namespace, ref.name, ref.uid)
        return ""


def _spec_kind(path: Path) -> str | None:
    """The CDI kind a spec file declares; None when it is not a readable spec (then it is nobody's).
    Another kubeaccel driver on the node (another driver name) names its files the same way: its
    specs declare its own kind and are left alone."""
    try:
        with path.open("rb") as fh:
            data = json.loads(fh.read(MAX_SPEC_BYTES + 1)[:MAX_SPEC_BYTES].decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    kind = data.get("kind") if isinstance(data, dict) else None
    return kind if isinstance(kind, str) else None


def _merge(devices: Sequence[Any], ids: Mapping[tuple[str, str], str]) -> list[PreparedDevice]:
    by_key: dict[tuple[str, str], list[str]] = {}
    for item in devices:
        by_key.setdefault((item.pool, item.name), []).append(item.request)
    return [PreparedDevice(tuple(reqs), pool, name, (ids[(pool, name)],)) for (pool, name), reqs in by_key.items()]


def _refs(claims: Sequence[Any]) -> list[ClaimRef]:
    return [ClaimRef(c.namespace, c.uid, c.name) for c in claims]


def _prepare_response(pb: Any, outcomes: Mapping[str, Outcome]) -> Any:
    """NodePrepareResourcesResponse in the message module of either version (v1 and v1beta1 share the shape)."""
    return pb.NodePrepareResourcesResponse(claims={
        uid: pb.NodePrepareResourceResponse(
            devices=[pb.Device(request_names=d.requests, pool_name=d.pool, device_name=d.device,
                               cdi_device_ids=d.cdi_ids) for d in o.devices],
            error=o.error)
        for uid, o in outcomes.items()})  # fmt: skip


def _unprepare_response(pb: Any, errors: Mapping[str, str]) -> Any:
    return pb.NodeUnprepareResourcesResponse(
        claims={uid: pb.NodeUnprepareResourceResponse(error=e) for uid, e in errors.items()}
    )


class DRAServiceV1(dra_v1_pb2_grpc.DRAPluginServicer):
    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def NodePrepareResources(  # noqa: N802 - names fixed by the API
        self, request: dra_v1_pb2.NodePrepareResourcesRequest, context: Ctx
    ) -> dra_v1_pb2.NodePrepareResourcesResponse:
        response: dra_v1_pb2.NodePrepareResourcesResponse = _prepare_response(
            dra_v1_pb2, await self.driver.prepare(_refs(request.claims))
        )
        return response

    async def NodeUnprepareResources(  # noqa: N802
        self, request: dra_v1_pb2.NodeUnprepareResourcesRequest, context: Ctx
    ) -> dra_v1_pb2.NodeUnprepareResourcesResponse:
        response: dra_v1_pb2.NodeUnprepareResourcesResponse = _unprepare_response(
            dra_v1_pb2, await self.driver.unprepare(_refs(request.claims))
        )
        return response


class DRAServiceV1beta1(dra_v1beta1_pb2_grpc.DRAPluginServicer):
    """The same rules for kubelets that still speak v1beta1 (identical messages, no share_id)."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver

    async def NodePrepareResources(  # noqa: N802
        self, request: dra_v1beta1_pb2.NodePrepareResourcesRequest, context: Ctx
    ) -> dra_v1beta1_pb2.NodePrepareResourcesResponse:
        response: dra_v1beta1_pb2.NodePrepareResourcesResponse = _prepare_response(
            dra_v1beta1_pb2, await self.driver.prepare(_refs(request.claims))
        )
        return response

    async def NodeUnprepareResources(  # noqa: N802
        self, request: dra_v1beta1_pb2.NodeUnprepareResourcesRequest, context: Ctx
    ) -> dra_v1beta1_pb2.NodeUnprepareResourcesResponse:
        response: dra_v1beta1_pb2.NodeUnprepareResourcesResponse = _unprepare_response(
            dra_v1beta1_pb2, await self.driver.unprepare(_refs(request.claims))
        )
        return response


def health_response(inventory: Inventory) -> hpb.NodeWatchResourcesResponse:
    now = int(time.time())
    return hpb.NodeWatchResourcesResponse(devices=[
        hpb.DeviceHealth(
            device=hpb.DeviceIdentifier(pool_name=pool.name, device_name=name),
            health=hpb.HEALTHY if device.healthy else hpb.UNHEALTHY,
            last_updated_time=now,
            health_check_timeout_seconds=HEALTH_CHECK_TIMEOUT_S,
            message="" if device.healthy else f"{pool.resource_name} device {device.id} is {device.health}",
        )
        for pool in inventory.pools.values() for name, device in pool.devices.items()
    ])


class HealthService(hpb_grpc.DRAResourceHealthServicer):
    """Streams every device's health: the whole list now, then again on every change."""

    def __init__(self, inventory: Inventory) -> None:
        self.inventory = inventory

    async def NodeWatchResources(  # noqa: N802
        self, request: hpb.NodeWatchResourcesRequest, context: Ctx
    ) -> AsyncIterator[hpb.NodeWatchResourcesResponse]:
        version = self.inventory.version
        yield health_response(self.inventory)
        while True:
            version = await self.inventory.changed(version)
            yield health_response(self.inventory)
