"""The DRA checker's claim steps: a claim allocated as the scheduler would, then prepared and
unprepared as kubelet v1.37.2 does (``pkg/kubelet/cm/dra/manager.go``, ``prepareResources`` and
``unprepareResources``), each verdict following what that code does with the answer."""

from __future__ import annotations

import asyncio
import re
import uuid

import grpc

from kubeaccel.conformance import CheckFailedError, CheckWarnedError, StepSkippedError
from kubeaccel.dra.checksession import Session, cdi_ids_in_dir, describe
from kubeaccel.errors import KubeaccelError

_CDI_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_-]*=[A-Za-z0-9][A-Za-z0-9_.:-]*")
CHECK_LABEL = "kubeaccel.io/dra-check"
REQUEST = "dev"


async def allocate_claim(s: Session) -> str:
    if not s.device:
        raise StepSkippedError("no device to allocate")
    from kubeaccel.kube import dra as kdra

    name = f"kubeaccel-check-{uuid.uuid4().hex[:8]}"
    manifest = {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": s.namespace, "labels": {CHECK_LABEL: "true"}},
        "spec": {"devices": {"requests": [{"name": REQUEST, "exactly": {"deviceClassName": "kubeaccel-check"}}]}},
    }
    status = {"allocation": {"devices": {"results": [
        {"request": REQUEST, "driver": s.info.name, "pool": s.pool, "device": s.device}]}}}
    try:
        s.claim = await asyncio.to_thread(kdra.create_claim, s.kube(), manifest, s.namespace)
        await asyncio.to_thread(kdra.set_claim_allocation, s.kube(), s.namespace, name, status)
    except KubeaccelError as exc:
        raise CheckFailedError(f"cannot create and allocate a claim: {exc.message}") from None
    return f"{s.namespace}/{name}"


async def prepare(s: Session) -> str:
    claim = s.claim_ref()
    if s.cdi_dir is not None:
        s.cdi_before = cdi_ids_in_dir(s.cdi_dir)
    # manager.go, prepareResources: a failed call, a per-claim error, a result for another UID or a
    # missing result each fail the pod's start ("NodePrepareResources skipped %d ResourceClaims").
    response = await s.prepare(claim)
    extra = sorted(set(response.claims) - {claim.uid})
    if extra:
        raise CheckFailedError(f"results for claim UIDs {extra} the kubelet did not ask for: it fails the pod")
    result = response.claims.get(claim.uid)
    if result is None:
        raise CheckFailedError(f"no result for claim UID {claim.uid}: the kubelet fails the pod")
    if result.error:
        raise CheckFailedError(f"error: {result.error}")
    # The answer is authoritative (claiminfo: addDevice): the CDI IDs go to the runtime as they are.
    got = [(d.pool_name, d.device_name) for d in result.devices]
    if got != [(s.pool, s.device)]:
        raise CheckFailedError(f"prepared {got}, allocated [{(s.pool, s.device)}]: the container would get "
                               "devices the scheduler did not allocate")
    ids = [i for d in result.devices for i in d.cdi_device_ids]
    bad = [i for i in ids if not _CDI_ID.fullmatch(i)]
    if bad:
        raise CheckFailedError(f"malformed CDI device IDs {bad} (want vendor/class=name): the runtime cannot "
                               "start the container")
    names = list(result.devices[0].request_names)
    # claiminfo.go, cdiDevicesAsList: a device whose request_names are empty serves every request.
    if names and REQUEST not in names:
        raise CheckFailedError(f"request_names {names} do not name request {REQUEST!r}: the container asking "
                               "for it gets none of the device's CDI IDs (claiminfo.go, cdiDevicesAsList)")
    if s.cdi_dir is not None:
        missing = set(ids) - cdi_ids_in_dir(s.cdi_dir)
        if missing:
            raise CheckFailedError(f"CDI devices {sorted(missing)} are in no spec in {s.cdi_dir}: the runtime "
                                   "cannot resolve them")
    s.first = result
    return f"{len(ids)} CDI IDs: {', '.join(ids)}" if ids else "no CDI IDs (the runtime injects nothing)"


async def prepare_again(s: Session) -> str:
    if s.first is None:
        raise StepSkippedError("the first prepare failed")
    claim = s.claim_ref()
    # The kubelet prepares again after its own restart and on retries; an error fails the pod's start.
    again = (await s.prepare(claim)).claims.get(claim.uid)
    if again is None or again.error:
        raise CheckFailedError(f"a repeated prepare failed: {again} (the kubelet retries and fails the pod)")
    if again != s.first:
        # manager.go keeps the newest answer (resetDevices): running containers keep the first one.
        raise CheckWarnedError(f"a repeated prepare answered differently: {again}")
    return "same answer"


async def unknown_claim(s: Session) -> str:
    s.stub()
    ghost = s.pb.Claim(namespace=s.namespace, name=f"kubeaccel-check-absent-{uuid.uuid4().hex[:8]}",
                       uid=str(uuid.uuid4()))
    # The kubelet never sends a claim it could not read itself (prepareResources fetches each one and
    # fails the pod before calling the driver), and it treats a failed call like a per-claim error:
    # how a driver answers for a claim that does not exist harms no pod. The API allows either
    # (a per-claim error "can" be reported); per claim is what spares the other claims of a call.
    weaker = ""
    try:
        response = await s.prepare(ghost)
    except grpc.aio.AioRpcError as exc:
        weaker = f"the whole call failed ({describe(exc)[:200]}); a per-claim error is better"
    else:
        result = response.claims.get(ghost.uid)
        if result is None or not result.error:
            weaker = f"no error for a claim that does not exist: {result}"
        elif result.devices:
            weaker = "devices returned for a claim that does not exist"
    # unprepareResources: an error for a claim it never prepared keeps the kubelet retrying the pod's
    # cleanup (the kubelet may unprepare what a driver never prepared, e.g. after its own restart).
    try:
        unprepared = (await s.unprepare(ghost)).claims.get(ghost.uid)
    except grpc.aio.AioRpcError as exc:
        raise CheckFailedError(f"unprepare of a never-prepared claim failed: {describe(exc)}") from None
    if unprepared is None or unprepared.error:
        raise CheckFailedError(f"unprepare of a never-prepared claim failed: {unprepared}")
    if weaker:
        raise CheckWarnedError(weaker)
    return f"per-claim error: {result.error[:120]}"


async def unprepare(s: Session) -> str:
    claim = s.claim_ref()
    # unprepareResources: an error (whole call or this claim) leaves the claim prepared in the kubelet
    # and the pod's cleanup is retried until it succeeds.
    for attempt in ("first", "repeated"):
        result = (await s.unprepare(claim)).claims.get(claim.uid)
        if result is None or result.error:
            raise CheckFailedError(f"{attempt} unprepare failed: {result}")
    if s.cdi_dir is not None and s.first is not None:
        # Only what this claim's prepare created: driver-wide specs written earlier stay, rightly.
        created = {i for d in s.first.devices for i in d.cdi_device_ids} - s.cdi_before
        left = created & cdi_ids_in_dir(s.cdi_dir)
        if left:
            raise CheckWarnedError(f"CDI devices {sorted(left)}, created for this claim, are still in {s.cdi_dir} "
                                   "after unprepare (a leak the kubelet does not notice)")
        return f"twice, no error; the {len(created)} CDI IDs created for the claim are gone"
    return "twice, no error"
