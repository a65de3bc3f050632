"""The DRA node services: prepare and unprepare claims (``v1`` and ``v1beta1``), stream device health.

``Driver`` holds the rules and is independent of the wire version: a claim already in the
checkpoint is answered from it (idempotent, no API server needed, so prepared claims keep being
served while the API server is down); a new one is read from the API server, resolved against the
node's pools, its CDI spec written, the checkpoint saved, and only then answered. Every failure is
that claim's ``error``; a request never fails as a whole and the daemon never crashes on input.
"""

from __future__ import annotations

import asyncio
import logging
import re
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
from kubeaccel.dra.checkpoint import Checkpoint, PreparedClaim, PreparedDevice
from kubeaccel.dra.claims import ClaimError, allocated, claim_spec, spec_file
from kubeaccel.dra.inventory import Inventory
from kubeaccel.dra.metrics import Metrics
from kubeaccel.errors import KubeaccelError, NotFoundError, UnavailableError

log = logging.getLogger(__name__)
Ctx = grpc.aio.ServicerContext[Any, Any]

MAX_CLAIMS_PER_CALL = 1024
MAX_ERROR_CHARS = 1024
MAX_FIELD_CHARS = 253
HEALTH_CHECK_TIMEOUT_S = 0  # the kubelet's default (30 s) suits our backends' change signals

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


# A Kubernetes UID is a UUID; anything else could not name a claim, and must not name a file.
_UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")


def _uid_problem(uid: str) -> str:
    if not _UID.fullmatch(uid):
        return f"{uid[:64]!r} is not a claim UID (letters, digits, '-', '_', '.'; at most 253)"
    return ""


def _check_ref(ref: ClaimRef) -> None:
    if not ref.uid or not ref.name or not ref.namespace:
        raise ClaimError("the claim reference needs namespace, name and uid")
    if max(len(ref.uid), len(ref.name), len(ref.namespace)) > MAX_FIELD_CHARS:
        raise ClaimError("the claim reference has a field longer than 253 characters")
    if problem := _uid_problem(ref.uid):
        raise ClaimError(problem)


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
        self._lock = asyncio.Lock()  # one writer of the checkpoint and the spec files at a time

    def restore(self) -> None:
        """At start: drop our spec files no checkpointed claim owns (a crash between the two writes), and
        rewrite the specs of checkpointed claims that are gone (``/var/run/cdi`` is a tmpfs)."""
        owned = {spec_file(uid) for uid in self.checkpoint.claims}
        prefix = cdi.spec_file_name("dra-").removesuffix(".json")
        if self.cdi_dir.is_dir():
            for path in self.cdi_dir.glob(f"{prefix}*.json"):
                if path.name not in owned:
                    log.info("removing orphaned CDI spec %s", path)
                    cdi.remove_spec(self.cdi_dir, path.name)
        for known in self.checkpoint.claims.values():
            try:
                self._ensure_spec(known)
            except cdi.CdiError as exc:
                log.error("claim %s: %s", known.uid, exc)

    def _ensure_spec(self, known: PreparedClaim) -> None:
        if known.spec and not (self.cdi_dir / spec_file(known.uid)).exists():
            cdi.write_spec(self.cdi_dir, spec_file(known.uid), known.spec)

    async def prepare(self, refs: Sequence[ClaimRef]) -> dict[str, Outcome]:
        with self.metrics.call_seconds.labels("prepare").time():
            out = await self._prepare(refs)
        for outcome in out.values():
            self.metrics.claims.labels("prepare", "error" if outcome.error else "ok").inc()
        self.metrics.prepared.set(len(self.checkpoint.claims))
        return out

    async def _prepare(self, refs: Sequence[ClaimRef]) -> dict[str, Outcome]:
        if len(refs) > MAX_CLAIMS_PER_CALL:
            error = f"too many claims in one call ({len(refs)} > {MAX_CLAIMS_PER_CALL})"
            return {r.uid: Outcome(error=error) for r in refs[:MAX_CLAIMS_PER_CALL]}
        todo = [r for r in refs if r.uid not in self.checkpoint.claims]
        fetched = await asyncio.gather(*(self._fetch(r) for r in todo), return_exceptions=True)
        claims = dict(zip((r.uid for r in todo), fetched, strict=True))
        out: dict[str, Outcome] = {}
        async with self._lock:
            for ref in refs:
                out[ref.uid] = self._prepare_one(ref, claims.get(ref.uid))
        return out

    async def _fetch(self, ref: ClaimRef) -> Mapping[str, Any]:
        _check_ref(ref)
        try:
            return await self._read_claim(ref.namespace, ref.name)
        except NotFoundError:
            raise ClaimError(f"claim {ref.namespace}/{ref.name} does not exist (deleted?)") from None
        except UnavailableError as exc:
            raise ClaimError(f"cannot read claim {ref.namespace}/{ref.name}: {exc.message}; the kubelet "
                             "retries") from None
        except KubeaccelError as exc:
            raise ClaimError(f"cannot read claim {ref.namespace}/{ref.name}: {exc.message}") from None

    def _prepare_one(self, ref: ClaimRef, claim: Mapping[str, Any] | BaseException | None) -> Outcome:
        known = self.checkpoint.claims.get(ref.uid)
        if known is not None:  # prepared before (maybe by an earlier run): the same answer, no API call
            try:
                self._ensure_spec(known)
            except cdi.CdiError as exc:
                return Outcome(error=_bounded(str(exc)))
            return Outcome(devices=known.devices)
        if isinstance(claim, ClaimError):
            return Outcome(error=_bounded(str(claim)))
        if isinstance(claim, BaseException):
            log.error("claim %s: unexpected error", ref.uid, exc_info=claim)
            return Outcome(error=_bounded(f"internal error: {claim!r}"))
        assert claim is not None
        try:
            devices = allocated(claim, ref.uid, self.driver, self.inventory.pools)
            document, ids = claim_spec(self.driver, ref.uid, devices, self.inventory.backends)
        except (ClaimError, cdi.CdiError) as exc:
            return Outcome(error=_bounded(str(exc)))
        prepared = PreparedClaim(ref.uid, ref.namespace, ref.name, tuple(_merge(devices, ids)), document)
        try:
            cdi.write_spec(self.cdi_dir, spec_file(ref.uid), document)
        except cdi.CdiError as exc:
            return Outcome(error=_bounded(str(exc)))
        self.checkpoint.claims[ref.uid] = prepared
        try:
            self.checkpoint.save()
        except OSError as exc:
            # Nothing half-made: without the checkpoint entry the spec must go too.
            del self.checkpoint.claims[ref.uid]
            cdi.remove_spec(self.cdi_dir, spec_file(ref.uid))
            return Outcome(error=_bounded(f"cannot save the checkpoint {self.checkpoint.path}: {exc}"))
        log.info("prepared claim %s/%s (%s): %s", ref.namespace, ref.name, ref.uid,
                 ", ".join(f"{d.pool}/{d.device}" for d in prepared.devices))
        return Outcome(devices=prepared.devices)

    async def unprepare(self, refs: Sequence[ClaimRef]) -> dict[str, str]:
        out: dict[str, str] = {}
        with self.metrics.call_seconds.labels("unprepare").time():
            async with self._lock:
                for ref in refs[:MAX_CLAIMS_PER_CALL]:
                    out[ref.uid] = self._unprepare_one(ref)
        for error in out.values():
            self.metrics.claims.labels("unprepare", "error" if error else "ok").inc()
        self.metrics.prepared.set(len(self.checkpoint.claims))
        return out

    def _unprepare_one(self, ref: ClaimRef) -> str:
        if problem := _uid_problem(ref.uid):
            return problem
        try:
            cdi.remove_spec(self.cdi_dir, spec_file(ref.uid))
        except OSError as exc:
            return _bounded(f"cannot remove the CDI spec of claim {ref.uid}: {exc}")
        known = self.checkpoint.claims.pop(ref.uid, None)
        if known is None:
            return ""  # never prepared, or already unprepared: fine
        try:
            self.checkpoint.save()
        except OSError as exc:
            self.checkpoint.claims[ref.uid] = known  # still on disk: the kubelet's retry tries again
            return _bounded(f"cannot save the checkpoint {self.checkpoint.path}: {exc}")
        log.info("unprepared claim %s/%s (%s)", ref.namespace, ref.name, ref.uid)
        return ""


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
