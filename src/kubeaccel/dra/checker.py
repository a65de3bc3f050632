"""A conformance checker for *any* kubelet DRA driver: it plays the kubelet and grades the driver.

``run_checks`` finds the driver's registration socket in the plugin registry directory, calls
``GetInfo`` and ``NotifyRegistrationStatus`` like the kubelet's plugin watcher, negotiates the DRA
service version like the kubelet (``v1.DRAPlugin`` before ``v1beta1.DRAPlugin``), reads the driver's
ResourceSlices for the node from a real API server, creates a ResourceClaim there and allocates one
of the published devices to it (writing ``status.allocation`` as the scheduler would), then calls
Prepare / Unprepare the way the kubelet does: twice each (idempotency), for an unknown claim (a
per-claim error, not a failed call), across a kubelet restart (new connections, the registration
socket deleted and expected back). One ``Step`` per check with its timing; nothing of kubeaccel's
own driver is assumed, so Go drivers are graded the same way. The claim is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from kubeaccel.conformance import CheckFailedError, Graded, Step, StepSkippedError, timed_step
from kubeaccel.dra._generated import dra_v1_pb2, dra_v1_pb2_grpc, dra_v1beta1_pb2, dra_v1beta1_pb2_grpc
from kubeaccel.dra._generated import health_v1_pb2 as hpb
from kubeaccel.dra._generated import health_v1_pb2_grpc as hpb_grpc
from kubeaccel.dra._generated import pluginregistration_pb2 as reg_pb
from kubeaccel.dra._generated import pluginregistration_pb2_grpc as reg_grpc
from kubeaccel.dra.registration import DRA_V1_SERVICE, DRA_V1BETA1_SERVICE, HEALTH_V1_SERVICE, PLUGIN_TYPE
from kubeaccel.errors import ConfigError, KubeaccelError

_CDI_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_-]*=[A-Za-z0-9][A-Za-z0-9_.:-]*")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
CHECK_LABEL = "kubeaccel.io/dra-check"
DETAIL_LIMIT = 400  # a step's detail may quote a driver's error text, of any length


@dataclass
class Report(Graded):
    driver: str = ""
    endpoint: str = ""
    service: str = ""
    steps: list[Step] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "passed": self.passed}


def _describe(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


def _failure(exc: Exception) -> str:
    """Every error fails the step: a driver's garbage (or a dead API server) must not crash the checker."""
    if isinstance(exc, grpc.aio.AioRpcError):
        return _describe(exc)
    if isinstance(exc, KubeaccelError):
        return exc.message
    return f"unexpected: {exc!r}"


class _Session:
    def __init__(  # noqa: PLR0917
        self, registry_dir: Path, driver: str | None, node: str, namespace: str,
        kube_factory: Callable[[], Any], cdi_dir: Path | None, timeout: float) -> None:
        self.registry_dir = registry_dir
        self.want_driver = driver
        self.node = node
        self.namespace = namespace
        self._kube_factory = kube_factory
        self._kube: Any = None
        self.cdi_dir = cdi_dir
        self.timeout = timeout
        self.socket: Path | None = None
        self.info = reg_pb.PluginInfo()
        self.service = ""
        self.channels: list[grpc.aio.Channel] = []
        self.dra: Any = None
        self.pool = ""
        self.device = ""
        self.claim: dict[str, Any] | None = None
        self.first: Any = None

    def kube(self) -> Any:
        if self._kube is None:
            self._kube = self._kube_factory()
        return self._kube

    def channel(self, path: str | Path) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(f"unix://{path}")
        self.channels.append(channel)
        return channel

    def connect(self) -> None:
        module = dra_v1_pb2_grpc if self.service == DRA_V1_SERVICE else dra_v1beta1_pb2_grpc
        self.dra = module.DRAPluginStub(self.channel(self.info.endpoint))

    @property
    def pb(self) -> Any:
        return dra_v1_pb2 if self.service == DRA_V1_SERVICE else dra_v1beta1_pb2

    def claim_ref(self) -> Any:
        if self.claim is None:
            raise StepSkippedError("no claim was allocated")
        meta = self.claim["metadata"]
        return self.pb.Claim(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])

    def stub(self) -> Any:
        if self.dra is None:
            raise StepSkippedError("no DRA endpoint")
        return self.dra

    async def prepare(self, *claims: Any) -> Any:
        request = self.pb.NodePrepareResourcesRequest(claims=claims)
        return await self.stub().NodePrepareResources(request, timeout=self.timeout)

    async def unprepare(self, *claims: Any) -> Any:
        request = self.pb.NodeUnprepareResourcesRequest(claims=claims)
        return await self.stub().NodeUnprepareResources(request, timeout=self.timeout)

    async def get_info(self) -> reg_pb.PluginInfo:
        assert self.socket is not None
        stub = reg_grpc.RegistrationStub(self.channel(self.socket))
        info: reg_pb.PluginInfo = await stub.GetInfo(reg_pb.InfoRequest(), timeout=self.timeout)
        return info

    async def close(self) -> None:
        for channel in self.channels:
            await channel.close(None)
        self.channels.clear()
        if self.claim is not None and self._kube is not None:
            from kubeaccel.kube.dra import delete_claim

            meta = self.claim["metadata"]
            with contextlib.suppress(KubeaccelError):
                await asyncio.to_thread(delete_claim, self._kube, meta["namespace"], meta["name"])
        if self._kube is not None:
            self._kube.close()


async def _find_socket(s: _Session) -> str:
    deadline = time.monotonic() + s.timeout
    while True:
        candidates = sorted(p for p in s.registry_dir.glob("*.sock") if p.is_socket())
        for path in candidates:
            s.socket = path
            try:
                info = await s.get_info()
            except grpc.aio.AioRpcError:
                continue
            if info.type == PLUGIN_TYPE and (s.want_driver is None or info.name == s.want_driver):
                s.info = info
                return f"{path.name}"
        if time.monotonic() > deadline:
            s.socket = None
            want = f" for driver {s.want_driver}" if s.want_driver else ""
            raise CheckFailedError(f"no DRA registration socket{want} answered GetInfo in {s.registry_dir} "
                                   f"within {s.timeout:g}s ({len(candidates)} sockets there)")
        await asyncio.sleep(0.05)


async def _get_info(s: _Session) -> str:
    if s.socket is None:
        raise StepSkippedError("no registration socket")
    info = s.info
    problems = []
    if not _DNS_SUBDOMAIN.fullmatch(info.name) or len(info.name) > 63:
        problems.append(f"name {info.name!r} is not a DNS subdomain of at most 63 characters")
    endpoint = Path(info.endpoint)
    if not endpoint.is_absolute() or not endpoint.is_socket():
        problems.append(f"endpoint {info.endpoint!r} is not an existing unix socket path")
    versions = list(info.supported_versions)
    for service in (DRA_V1_SERVICE, DRA_V1BETA1_SERVICE):  # the kubelet's order of preference
        if service in versions:
            s.service = service
            break
    else:
        problems.append(f"supported_versions {versions} name no DRA service the kubelet knows "
                        f"({DRA_V1_SERVICE}, {DRA_V1BETA1_SERVICE})")
    if problems:
        raise CheckFailedError("; ".join(problems))
    s.connect()
    return f"{info.name} at {info.endpoint}, serving {', '.join(versions)}; using {s.service}"


async def _notify(s: _Session) -> str:
    if s.socket is None:
        raise StepSkippedError("no registration socket")
    stub = reg_grpc.RegistrationStub(s.channel(s.socket))
    await stub.NotifyRegistrationStatus(reg_pb.RegistrationStatus(plugin_registered=True), timeout=s.timeout)
    return "accepted"


async def _slices(s: _Session) -> str:
    if not s.info.name:
        raise StepSkippedError("no driver registered")
    from kubeaccel.kube.dra import list_slices

    try:
        found = await asyncio.to_thread(list_slices, s.kube(), driver=s.info.name, node=s.node)
    except KubeaccelError as exc:
        raise CheckFailedError(f"cannot list ResourceSlices: {exc.message}") from None
    devices = [(sl["spec"]["pool"]["name"], d["name"]) for sl in found for d in sl["spec"].get("devices") or []
               if not d.get("taints")]
    if not devices:
        raise CheckFailedError(f"no untainted device of driver {s.info.name} in ResourceSlices for node {s.node}")
    s.pool, s.device = devices[0]
    return f"{len(found)} slices, {len(devices)} untainted devices; allocating {s.pool}/{s.device}"


async def _allocate_claim(s: _Session) -> str:
    if not s.device:
        raise StepSkippedError("no device to allocate")
    from kubeaccel.kube import dra as kdra

    name = f"kubeaccel-check-{uuid.uuid4().hex[:8]}"
    manifest = {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": s.namespace, "labels": {CHECK_LABEL: "true"}},
        "spec": {"devices": {"requests": [{"name": "dev", "exactly": {"deviceClassName": "kubeaccel-check"}}]}},
    }
    status = {"allocation": {"devices": {"results": [
        {"request": "dev", "driver": s.info.name, "pool": s.pool, "device": s.device}]}}}
    try:
        s.claim = await asyncio.to_thread(kdra.create_claim, s.kube(), manifest, s.namespace)
        await asyncio.to_thread(kdra.set_claim_allocation, s.kube(), s.namespace, name, status)
    except KubeaccelError as exc:
        raise CheckFailedError(f"cannot create and allocate a claim: {exc.message}") from None
    return f"{s.namespace}/{name}"


def _cdi_ids_in_dir(directory: Path) -> set[str]:
    """Every fully qualified CDI device name declared by a spec in ``directory`` (JSON is YAML too)."""
    ids: set[str] = set()
    for path in [*directory.glob("*.json"), *directory.glob("*.yaml")]:
        try:
            doc = yaml.safe_load(path.read_text())
            ids |= {f"{doc['kind']}={d['name']}" for d in doc.get("devices") or []}
        except (OSError, yaml.YAMLError, KeyError, TypeError, AttributeError):
            continue
    return ids


async def _prepare(s: _Session) -> str:
    claim = s.claim_ref()
    response = await s.prepare(claim)
    result = response.claims.get(claim.uid)
    if result is None:
        raise CheckFailedError(f"no result for claim UID {claim.uid} (results keyed {list(response.claims)})")
    if result.error:
        raise CheckFailedError(f"error: {result.error}")
    got = [(d.pool_name, d.device_name) for d in result.devices]
    if got != [(s.pool, s.device)]:
        raise CheckFailedError(f"prepared {got}, allocated [{(s.pool, s.device)}]")
    ids = [i for d in result.devices for i in d.cdi_device_ids]
    bad = [i for i in ids if not _CDI_ID.fullmatch(i)]
    if bad:
        raise CheckFailedError(f"malformed CDI device IDs {bad} (want vendor/class=name)")
    if list(result.devices[0].request_names) != ["dev"]:
        raise CheckFailedError(f"request_names {list(result.devices[0].request_names)}, want ['dev']")
    if s.cdi_dir is not None:
        missing = set(ids) - _cdi_ids_in_dir(s.cdi_dir)
        if missing:
            raise CheckFailedError(f"CDI devices {sorted(missing)} are in no spec in {s.cdi_dir}")
    s.first = result
    return f"{len(ids)} CDI IDs: {', '.join(ids)}" if ids else "no CDI IDs (the runtime injects nothing)"


async def _prepare_again(s: _Session) -> str:
    if s.first is None:
        raise StepSkippedError("the first prepare failed")
    claim = s.claim_ref()
    again = (await s.prepare(claim)).claims.get(claim.uid)
    if again != s.first:
        raise CheckFailedError(f"a repeated prepare answered differently: {again} (the kubelet retries)")
    return "same answer"


async def _unknown_claim(s: _Session) -> str:
    s.stub()
    ghost = s.pb.Claim(namespace=s.namespace, name=f"kubeaccel-check-absent-{uuid.uuid4().hex[:8]}",
                       uid=str(uuid.uuid4()))
    try:
        response = await s.prepare(ghost)
    except grpc.aio.AioRpcError as exc:
        raise CheckFailedError(f"the whole call failed ({_describe(exc)}); expected a per-claim error") from None
    result = response.claims.get(ghost.uid)
    if result is None or not result.error:
        raise CheckFailedError(f"no error for a claim that does not exist: {result}")
    if result.devices:
        raise CheckFailedError("devices returned for a claim that does not exist")
    unprepared = (await s.unprepare(ghost)).claims.get(ghost.uid)
    if unprepared is None or unprepared.error:
        raise CheckFailedError(f"unprepare of a never-prepared claim failed: {unprepared}")
    return f"per-claim error: {result.error[:120]}"


async def _health(s: _Session) -> str:
    if HEALTH_V1_SERVICE not in s.info.supported_versions:
        raise StepSkippedError("the driver does not advertise v1.DRAResourceHealth")
    stub = hpb_grpc.DRAResourceHealthStub(s.channel(s.info.endpoint))
    stream = stub.NodeWatchResources(hpb.NodeWatchResourcesRequest())
    try:
        first = await asyncio.wait_for(stream.read(), s.timeout)
    except TimeoutError:
        raise CheckFailedError(f"no health report within {s.timeout:g}s") from None
    finally:
        stream.cancel()
    if not isinstance(first, hpb.NodeWatchResourcesResponse):
        raise CheckFailedError("the health stream ended without a report")
    known = {(d.device.pool_name, d.device.device_name): d.health for d in first.devices}
    if s.device and (s.pool, s.device) not in known:
        raise CheckFailedError(f"the health report does not name the published device {s.pool}/{s.device}")
    healthy = sum(h == hpb.HEALTHY for h in known.values())
    return f"{len(known)} devices, {healthy} healthy"


async def _kubelet_restart(s: _Session) -> str:
    if s.socket is None:
        raise StepSkippedError("no registration socket")
    for channel in s.channels:  # the kubelet's connections die with it
        await channel.close(None)
    s.channels.clear()
    s.connect()  # the new kubelet dials the endpoint again (later steps use this connection)
    start = time.monotonic()
    s.socket.unlink(missing_ok=True)  # and a restart may clear the registry directory
    while not s.socket.exists():
        if time.monotonic() - start > s.timeout:
            raise CheckFailedError(f"the registration socket was not re-created within {s.timeout:g}s")
        await asyncio.sleep(0.01)
    back = time.monotonic() - start
    deadline = start + s.timeout
    while True:
        try:
            info = await s.get_info()
            break
        except grpc.aio.AioRpcError as exc:
            if time.monotonic() > deadline:
                raise CheckFailedError(f"GetInfo on the re-created socket failed: {_describe(exc)}") from None
            await asyncio.sleep(0.02)
    if info != s.info:
        raise CheckFailedError(f"GetInfo answered differently after the restart: {info}")
    s.connect()
    if s.first is not None:
        claim = s.claim_ref()
        again = (await s.prepare(claim)).claims.get(claim.uid)
        if again != s.first:
            raise CheckFailedError(f"prepare after the restart answered differently: {again}")
    return f"socket back in {back * 1000:.1f} ms; same GetInfo and prepare answer"


async def _unprepare(s: _Session) -> str:
    claim = s.claim_ref()
    for attempt in ("first", "repeated"):
        result = (await s.unprepare(claim)).claims.get(claim.uid)
        if result is None or result.error:
            raise CheckFailedError(f"{attempt} unprepare failed: {result}")
    if s.cdi_dir is not None and s.first is not None:
        left = {i for d in s.first.devices for i in d.cdi_device_ids} & _cdi_ids_in_dir(s.cdi_dir)
        if left:
            raise CheckFailedError(f"CDI devices {sorted(left)} are still in {s.cdi_dir} after unprepare")
    return "twice, no error" + (", CDI spec gone" if s.cdi_dir is not None else "")


STEPS: list[tuple[str, Callable[[_Session], Awaitable[str]]]] = [
    ("registration socket", _find_socket),
    ("GetInfo", _get_info),
    ("NotifyRegistrationStatus", _notify),
    ("ResourceSlices for the node", _slices),
    ("claim created and allocated", _allocate_claim),
    ("NodePrepareResources", _prepare),
    ("NodePrepareResources again (idempotent)", _prepare_again),
    ("unknown claim", _unknown_claim),
    ("health stream", _health),
    ("kubelet restart: re-register", _kubelet_restart),
    ("NodeUnprepareResources, twice", _unprepare),
]


def _default_kube(kubeconfig: Path | None) -> Callable[[], Any]:
    def connect() -> Any:
        from kubeaccel.kube.dra import connect as kube_connect

        return kube_connect(kubeconfig)

    return connect


async def run_checks(
    registry_dir: Path, *, driver: str | None = None, node: str, namespace: str = "default",
    kubeconfig: Path | None = None, cdi_dir: Path | None = None, timeout: float = 10.0,
    kube_factory: Callable[[], Any] | None = None,
) -> Report:
    """Grade the DRA driver registered in ``registry_dir`` (or ``driver``) on ``node``."""
    if not registry_dir.is_dir():
        raise ConfigError(f"plugin registry directory {registry_dir} does not exist",
                          hint="pass --registry-dir with the directory the driver registers in")
    session = _Session(registry_dir, driver, node, namespace, kube_factory or _default_kube(kubeconfig), cdi_dir,
                       timeout)
    report = Report()
    try:
        for name, check in STEPS:
            report.steps.append(await timed_step(name, check(session), _failure, limit=DETAIL_LIMIT))
    finally:
        await session.close()
    report.driver, report.endpoint, report.service = session.info.name, session.info.endpoint, session.service
    return report
