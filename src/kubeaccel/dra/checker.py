"""A conformance checker for *any* kubelet DRA driver: it plays the kubelet and grades the driver.

``run_checks`` does what kubelet v1.37.2 does with a DRA driver, each verdict following that code
(cited at the step; FAIL where the kubelet would fail a pod, drop the driver or lose devices, WARN
where it copes with a weaker answer, SKIP where an optional feature is absent):

* registration as the plugin watcher does it (``pkg/kubelet/pluginmanager``): a socket in the
  registry directory (waited for within the timeout: either start order works), ``GetInfo``, the
  DRA service negotiated as ``pkg/kubelet/cm/dra/plugin`` does (``v1.DRAPlugin`` before
  ``v1beta1.DRAPlugin``; health ``v1`` before ``v1alpha1``), ``NotifyRegistrationStatus``;
* the driver's ResourceSlices for the node, waited for within the timeout (publishing is
  asynchronous), a ResourceClaim created and allocated to a published device as the scheduler would;
* prepare and unprepare (``checkclaims``), the health stream, and a kubelet restart: connections
  dropped and the *existing* registration socket dialled again (the plugin watcher re-walks the
  registry directory at start and never deletes a socket).

Nothing of kubeaccel's own driver is assumed, so helper-based Go drivers are graded the same way.
The claim is deleted afterwards.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from kubeaccel.conformance import CheckFailedError, CheckWarnedError, Graded, Step, StepSkippedError, timed_step
from kubeaccel.dra import checkclaims
from kubeaccel.dra._generated import health_v1_pb2 as hpb
from kubeaccel.dra._generated import health_v1_pb2_grpc as hpb_grpc
from kubeaccel.dra._generated import health_v1alpha1_pb2 as hpb_alpha
from kubeaccel.dra._generated import health_v1alpha1_pb2_grpc as hpb_alpha_grpc
from kubeaccel.dra.checkclaims import CHECK_LABEL
from kubeaccel.dra.checksession import Session, describe, failure
from kubeaccel.dra.registration import DRA_V1_SERVICE, DRA_V1BETA1_SERVICE, HEALTH_V1_SERVICE, PLUGIN_TYPE
from kubeaccel.errors import ConfigError, KubeaccelError

__all__ = ["CHECK_LABEL", "Report", "run_checks"]

_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
HEALTH_V1ALPHA1_SERVICE = "v1alpha1.DRAResourceHealth"
# pkg/kubelet/cm/dra/plugin/dra_plugin.go: the health services the kubelet knows, newest first.
HEALTH_SERVICES = (HEALTH_V1_SERVICE, HEALTH_V1ALPHA1_SERVICE)
DETAIL_LIMIT = 600  # a step's detail may quote a driver's error text, of any length
POLL_S = 0.05


@dataclass
class Report(Graded):
    driver: str = ""
    endpoint: str = ""
    service: str = ""
    steps: list[Step] = field(default_factory=list)


async def _find_socket(s: Session) -> str:
    # plugin_watcher.go (traversePluginDir, handleCreateEvent): every unix socket under the registry
    # directory, subdirectories included, whatever its name unless it starts with "."; the operation
    # generator (GenerateRegisterPluginFunc) calls GetInfo on it. A driver that starts after the
    # kubelet is found when its socket appears: waited for within the timeout.
    deadline = time.monotonic() + s.timeout
    while True:
        candidates = sorted(p for p in s.registry_dir.rglob("*") if not p.name.startswith(".") and p.is_socket())
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
        await asyncio.sleep(POLL_S)


async def _get_info(s: Session) -> str:
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
    # dra_plugin_manager.go, validateSupportedServices: the first DRA service the kubelet knows, in
    # its order of preference; none is a failed registration. pickHealthService likewise for health.
    s.service = next((v for v in (DRA_V1_SERVICE, DRA_V1BETA1_SERVICE) if v in versions), "")
    s.health_service = next((v for v in HEALTH_SERVICES if v in versions), "")
    if not s.service:
        problems.append(f"supported_versions {versions} name no DRA service the kubelet knows "
                        f"({DRA_V1_SERVICE}, {DRA_V1BETA1_SERVICE})")
    if problems:
        raise CheckFailedError("; ".join(problems))
    s.connect()
    return f"{info.name} at {info.endpoint}, serving {', '.join(versions)}; using {s.service}"


async def _notify(s: Session) -> str:
    # GenerateRegisterPluginFunc: a failed NotifyRegistrationStatus de-registers the driver.
    if s.socket is None:
        raise StepSkippedError("no registration socket")
    await s.notify()
    return "accepted"


async def _slices(s: Session) -> str:
    # Without a published, untainted device on the node the scheduler allocates nothing there. The
    # driver publishes asynchronously (the helper's ResourceSlice controller): waited for.
    if not s.info.name:
        raise StepSkippedError("no driver registered")
    from kubeaccel.kube.dra import list_slices

    deadline = time.monotonic() + s.timeout
    while True:
        try:
            found = await asyncio.to_thread(list_slices, s.kube(), driver=s.info.name, node=s.node)
        except KubeaccelError as exc:
            raise CheckFailedError(f"cannot list ResourceSlices: {exc.message}") from None
        devices = [(sl["spec"]["pool"]["name"], d["name"]) for sl in found for d in sl["spec"].get("devices") or []
                   if not d.get("taints")]
        if devices:
            break
        if time.monotonic() > deadline:
            raise CheckFailedError(f"no untainted device of driver {s.info.name} in ResourceSlices for node "
                                   f"{s.node} within {s.timeout:g}s ({len(found)} slices)")
        await asyncio.sleep(0.2)
    s.pool, s.device = devices[0]
    return f"{len(found)} slices, {len(devices)} untainted devices; allocating {s.pool}/{s.device}"


async def _health(s: Session) -> str:
    # The kubelet only puts device health into pod status (manager.go, HandleWatchResourcesStream):
    # nothing here fails a pod, so a weak health service is a warning, an absent one a skip.
    if not s.health_service:
        raise StepSkippedError(f"the driver advertises no health service ({', '.join(HEALTH_SERVICES)})")
    alpha = s.health_service == HEALTH_V1ALPHA1_SERVICE
    pb: Any = hpb_alpha if alpha else hpb
    stub: Any = (hpb_alpha_grpc if alpha else hpb_grpc).DRAResourceHealthStub(s.channel(s.info.endpoint))
    stream = stub.NodeWatchResources(pb.NodeWatchResourcesRequest())
    try:
        first = await asyncio.wait_for(stream.read(), s.timeout)
    except TimeoutError:
        raise CheckWarnedError(f"no health report within {s.timeout:g}s (pod status shows health unknown)") from None
    except grpc.aio.AioRpcError as exc:
        if exc.code() is grpc.StatusCode.UNIMPLEMENTED:  # the kubelet stops watching: not an error
            raise StepSkippedError(f"{s.health_service} advertised, but health reporting is not supported "
                                   "(UNIMPLEMENTED: the kubelet stops watching)") from None
        raise CheckWarnedError(f"the health stream failed: {describe(exc)} (the kubelet retries every 5 s)") from None
    finally:
        stream.cancel()
    if not isinstance(first, pb.NodeWatchResourcesResponse):
        raise CheckWarnedError("the health stream ended without a report (the kubelet retries every 5 s)")
    known = {(d.device.pool_name, d.device.device_name): d.health for d in first.devices}
    if s.device and (s.pool, s.device) not in known:
        raise CheckWarnedError(f"the first health report does not name the published device {s.pool}/{s.device} "
                               "(its health shows as unknown)")
    healthy = sum(h == pb.HEALTHY for h in known.values())
    return f"{s.health_service}: {len(known)} devices, {healthy} healthy"


async def _kubelet_restart(s: Session) -> str:
    # A restarting kubelet drops its connections; its plugin watcher then walks the registry
    # directory (plugin_watcher.go, Start -> traversePluginDir) and registers every socket there
    # again: GetInfo, validation, NotifyRegistrationStatus. It deletes nothing, so a driver that
    # never re-creates its socket (the kubelet-plugin helper's) is found again.
    if s.socket is None:
        raise StepSkippedError("no registration socket")
    await s.drop_connections()
    start = time.monotonic()
    if not s.socket.is_socket():
        raise CheckFailedError(f"the registration socket {s.socket} is gone: the kubelet would not find the driver")
    deadline = start + s.timeout
    while True:
        try:
            info = await s.get_info()
            break
        except grpc.aio.AioRpcError as exc:
            if time.monotonic() > deadline:
                raise CheckFailedError(f"GetInfo on the registration socket failed: {describe(exc)}") from None
            await asyncio.sleep(POLL_S)
    if info != s.info:
        raise CheckFailedError(f"GetInfo answered differently after the restart: {info}")
    await s.notify()
    back = time.monotonic() - start
    s.connect()
    if s.first is not None:
        claim = s.claim_ref()
        again = (await s.prepare(claim)).claims.get(claim.uid)
        if again is None or again.error:
            raise CheckFailedError(f"prepare after the restart failed: {again}")
        if again != s.first:
            raise CheckWarnedError(f"re-registered in {back * 1000:.1f} ms; prepare after the restart answered "
                                   f"differently: {again}")
    return f"re-registered in {back * 1000:.1f} ms; same GetInfo" + (" and prepare answer" if s.first else "")


STEPS: list[tuple[str, Callable[[Session], Awaitable[str]]]] = [
    ("registration socket", _find_socket),
    ("GetInfo", _get_info),
    ("NotifyRegistrationStatus", _notify),
    ("ResourceSlices for the node", _slices),
    ("claim created and allocated", checkclaims.allocate_claim),
    ("NodePrepareResources", checkclaims.prepare),
    ("NodePrepareResources again (idempotent)", checkclaims.prepare_again),
    ("unknown claim", checkclaims.unknown_claim),
    ("health stream", _health),
    ("kubelet restart: re-register", _kubelet_restart),
    ("NodeUnprepareResources, twice", checkclaims.unprepare),
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
    session = Session(registry_dir, driver, node, namespace, kube_factory or _default_kube(kubeconfig), cdi_dir,
                      timeout)
    report = Report()
    try:
        for name, check in STEPS:
            report.steps.append(await timed_step(name, check(session), failure, limit=DETAIL_LIMIT))
    finally:
        await session.close()
    report.driver, report.endpoint, report.service = session.info.name, session.info.endpoint, session.service
    return report
