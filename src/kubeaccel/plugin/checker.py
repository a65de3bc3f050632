"""A conformance checker for *any* kubelet device plugin: it plays the kubelet and grades the plugin.

``run_checks`` serves ``Registration`` on ``kubelet.sock`` (via ``KubeletStandIn``), waits for a
plugin to register, then exercises the protocol the way the device manager of kubelet v1.37.2 does
(``pkg/kubelet/cm/devicemanager``) and records one ``Step`` per check with its timing. Each verdict
follows what that code does with the answer, cited at the step: FAIL where the kubelet would fail
a container, drop the plugin or lose its devices; WARN where it copes but the answer is weaker than
best practice; SKIP where an optional feature is not offered.

It follows a restarting plugin as the kubelet does: a later ``Register`` for the resource replaces
the earlier one (``manager.go``, ``PluginConnected`` sets ``m.endpoints[resource]``), so a plugin
that restarts its server when ``kubelet.sock`` appears (NVIDIA's does) is graded on its newest
endpoint, in either start order. It needs nothing from kubeaccel's own daemon.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc

from kubeaccel.conformance import (
    CheckFailedError,
    CheckWarnedError,
    Graded,
    Result,
    Step,
    StepSkippedError,
    timed_step,
)
from kubeaccel.errors import ConfigError
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.kubelet import KubeletStandIn

UNKNOWN_ID = "kubeaccel-check-no-such-device"
QUIET_PERIOD_S = 0.5  # how long ListAndWatch must stay open with no end
MAX_FOLLOWS = 5  # re-registrations followed within one step: a plugin that restarts forever fails
DETAIL_LIMIT = 600  # a detail may quote a plugin's error text, of any length
T = TypeVar("T")


@dataclass
class Report(Graded):
    resource: str = ""
    endpoint: str = ""
    steps: list[Step] = field(default_factory=list)


class _Session:
    """The checker's state across steps (what the plugin registered, its devices, its stub)."""

    def __init__(self, kubelet: KubeletStandIn, timeout: float, resource: str | None) -> None:
        self.kubelet = kubelet
        self.timeout = timeout
        self.want_resource = resource
        self.request = pb.RegisterRequest()
        self.channel: grpc.aio.Channel | None = None
        self.stub: pb_grpc.DevicePluginAsyncStub | None = None
        self.devices: list[pb.Device] = []
        self.stream: grpc.aio.UnaryStreamCall[pb.Empty, pb.ListAndWatchResponse] | None = None
        self.replaced = 0  # later registrations followed

    @property
    def options(self) -> pb.DevicePluginOptions:
        """What the kubelet acts on: GetDevicePluginOptions's answer during Register (manager.go,
        PluginConnected keeps it as endpointInfo.opts), not the options inside the RegisterRequest."""
        return self.kubelet.options.get(self.request.endpoint, self.request.options)

    @property
    def plugin(self) -> pb_grpc.DevicePluginAsyncStub:
        if self.stub is None:
            raise StepSkippedError("no plugin registered")
        return self.stub

    def wanted(self, request: pb.RegisterRequest) -> bool:
        if self.request.resource_name:
            return request.resource_name == self.request.resource_name
        return self.want_resource is None or request.resource_name == self.want_resource

    def healthy_ids(self) -> list[str]:
        ids = [d.ID for d in self.devices if d.health == "Healthy"]
        if not ids:
            raise StepSkippedError("the plugin advertises no healthy device")
        return ids

    async def wait_registration(self, timeout: float) -> tuple[float, pb.RegisterRequest] | None:
        """The next accepted registration of our resource within ``timeout``, or None."""
        deadline = time.monotonic() + timeout
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                arrived, request = await self.kubelet.next_registration(remaining)
            except TimeoutError:
                break
            if self.wanted(request):
                return arrived, request
        return None

    async def connect(self, request: pb.RegisterRequest) -> None:
        """Use this registration's endpoint from now on, as the kubelet does (the old stream goes)."""
        if self.stream is not None:
            self.stream.cancel()
            self.stream = None
        if self.channel is not None:
            await self.channel.close(None)
        self.request = request
        self.channel = self.kubelet.plugin_channel(request.endpoint)
        self.stub = pb_grpc.DevicePluginStub(self.channel)

    async def follow(self) -> bool:
        """Adopt registrations that arrived since the last look; True when one replaced the endpoint."""
        newest = None
        while not self.kubelet.received.empty():
            _, request = self.kubelet.received.get_nowait()
            if self.wanted(request):
                newest = request
        if newest is None:
            return False
        await self.connect(newest)
        self.replaced += 1
        return True

    async def rpc(self, call: Callable[[pb_grpc.DevicePluginAsyncStub], Awaitable[T]]) -> T:
        """One call on the newest endpoint. When the plugin's server is gone (UNAVAILABLE) and it
        registers again within the timeout, the call goes to the new endpoint: a kubelet that got
        the new registration would have used it."""
        await self.follow()
        try:
            return await call(self.plugin)
        except grpc.aio.AioRpcError as exc:
            if exc.code() is not grpc.StatusCode.UNAVAILABLE:
                raise
            again = await self.wait_registration(self.timeout)
            if again is None:
                raise
            await self.connect(again[1])
            self.replaced += 1
            return await call(self.plugin)

    async def open_stream(self) -> pb.ListAndWatchResponse | None:
        """A new ListAndWatch on the newest endpoint and its first list (None: ended before one)."""
        await self.follow()
        self.stream = self.plugin.ListAndWatch(pb.Empty())
        return await _read(self.stream, self.timeout)

    async def first_list(self) -> pb.ListAndWatchResponse | None:
        """The first list of a new stream; when the stream ends or fails before one and the plugin
        registers again (it restarted), the new endpoint's, as the kubelet would read it. None: ended
        with no new registration; a failure with none is raised."""
        for _ in range(MAX_FOLLOWS + 1):
            failure: grpc.aio.AioRpcError | None = None
            try:
                response = await self.open_stream()
            except grpc.aio.AioRpcError as exc:
                response, failure = None, exc
            if response is not None:
                return response
            again = await self.wait_registration(self.timeout)
            if again is None:
                if failure is not None:
                    raise failure
                return None
            await self.connect(again[1])
            self.replaced += 1
        raise CheckFailedError(f"the stream ended {MAX_FOLLOWS + 1} times, each followed by a new registration: "
                               "the plugin keeps restarting")

    async def close(self) -> None:
        if self.stream is not None:
            self.stream.cancel()
        if self.channel is not None:
            await self.channel.close(None)


async def _read(
    stream: grpc.aio.UnaryStreamCall[pb.Empty, pb.ListAndWatchResponse], timeout: float
) -> pb.ListAndWatchResponse | None:
    """The next list, or None when the stream ended (grpc.aio's EOF sentinel)."""
    response = await asyncio.wait_for(stream.read(), timeout)
    return response if isinstance(response, pb.ListAndWatchResponse) else None


def _describe(exc: grpc.aio.AioRpcError) -> str:
    return f"{exc.code().name}: {exc.details()}"


def _failure(exc: Exception) -> str | None:
    """A gRPC error the plugin answered fails the step (each call the checker makes is one whose error
    the kubelet turns into a failed container or a dropped plugin); anything else is the checker's bug."""
    return _describe(exc) if isinstance(exc, grpc.aio.AioRpcError) else None


async def _register(s: _Session) -> str:
    # A resource with no accepted registration is never in the node's capacity (manager.go, GetCapacity).
    got = await s.wait_registration(s.timeout)
    if got is None:
        rejected = "; ".join(problem for _, problem in s.kubelet.rejected)
        raise CheckFailedError(f"no plugin registered within {s.timeout:g}s" + (f" (rejected: {rejected})"
                                                                                if rejected else ""))
    await s.connect(got[1])
    opts = s.request.options
    return (f"{s.request.resource_name} at {s.request.endpoint} (pre_start_required={opts.pre_start_required}, "
            f"get_preferred_allocation_available={opts.get_preferred_allocation_available})")


async def _options(s: _Session) -> str:
    # manager.go, PluginConnected: an error here fails Register; the answer, not Register's options,
    # is what the kubelet keeps (endpointInfo.opts) and consults before GetPreferredAllocation/PreStart.
    options = await s.rpc(lambda p: p.GetDevicePluginOptions(pb.Empty(), timeout=s.timeout))
    if options != s.request.options:
        raise CheckWarnedError(f"options {options} differ from those sent in Register {s.request.options}: the "
                               "kubelet uses these (manager.go, PluginConnected) and ignores Register's")
    return "match the registration"


async def _first_list(s: _Session) -> str:
    # client.go, Run: the kubelet reads ListAndWatch for as long as the plugin lives; until the first
    # list arrives the resource has no devices (manager.go, genericDeviceUpdateCallback).
    try:
        response = await s.first_list()
    except TimeoutError:
        raise CheckFailedError(f"no device list within {s.timeout:g}s: the first list must be sent at once") from None
    if response is None:
        raise CheckFailedError("the stream ended before sending a device list")
    s.devices = list(response.devices)
    ids = [d.ID for d in s.devices]
    weaker = []
    # genericDeviceUpdateCallback keys devices by ID (a duplicate is counted once) and counts every
    # health other than "Healthy" as unhealthy.
    if len(set(ids)) != len(ids):
        weaker.append("duplicate device IDs (the kubelet counts each ID once)")
    weaker += [f"{d.ID!r} has health {d.health!r} (the kubelet counts it unhealthy)" for d in s.devices
               if d.health not in ("Healthy", "Unhealthy")]
    healthy = sum(d.health == "Healthy" for d in s.devices)
    summary = f"{len(ids)} devices, {healthy} healthy"
    if weaker:
        raise CheckWarnedError(f"{summary}; " + "; ".join(weaker))
    return summary


async def _stream_stays_open(s: _Session) -> str:
    # client.go, Run returns when the stream ends or fails; handler.go, runClient then disconnects the
    # plugin and manager.go, PluginDisconnected marks every device of the resource unhealthy.
    if s.stream is None:
        raise StepSkippedError("no stream")
    deadline = time.monotonic() + QUIET_PERIOD_S
    updates = replaced = 0
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            response = await _read(s.stream, remaining) if s.stream is not None else None
            ended = "ended"
        except TimeoutError:
            break
        except grpc.aio.AioRpcError as exc:
            response, ended = None, f"failed ({_describe(exc)})"
        if response is not None:
            s.devices = list(response.devices)
            updates += 1
            continue
        # Ended: a plugin that restarts registers again, and the kubelet reads the new endpoint.
        again = await s.wait_registration(s.timeout)
        if again is None:
            raise CheckFailedError(f"the stream {ended} with no new registration: the kubelet marks every device "
                                   "unhealthy (manager.go, PluginDisconnected)")
        await s.connect(again[1])
        s.replaced += 1
        replaced += 1
        if replaced > MAX_FOLLOWS:
            raise CheckFailedError(f"the stream ended {replaced} times, each followed by a new registration: the "
                                   "plugin keeps restarting, and the kubelet marks its devices unhealthy each time")
        first = await s.first_list()
        if first is None:
            raise CheckFailedError("the re-registered endpoint's stream ended at once")
        s.devices = list(first.devices)
        deadline = time.monotonic() + QUIET_PERIOD_S
    await s.follow()
    detail = f"open after {QUIET_PERIOD_S:g}s" + (f" ({updates} updates)" if updates else "")
    return detail + (f"; followed {replaced} re-registration(s)" if replaced else "")


async def _preferred(s: _Session) -> str:
    if not s.options.get_preferred_allocation_available:
        raise StepSkippedError("the plugin does not offer GetPreferredAllocation")
    available = s.healthy_ids()
    size = min(2, len(available))
    must = available[-1:]
    request = pb.PreferredAllocationRequest(container_requests=[pb.ContainerPreferredAllocationRequest(
        available_deviceIDs=available, must_include_deviceIDs=must, allocation_size=size)])
    # manager.go, devicesToAllocate: an error fails the container; the answer is only a preference,
    # intersected with what is available and topped up by the kubelet (allocateRemainingFrom).
    response = await s.rpc(lambda p: p.GetPreferredAllocation(request, timeout=s.timeout))
    if len(response.container_responses) != 1:
        raise CheckWarnedError(f"{len(response.container_responses)} container responses for 1 request: the kubelet "
                               "reads the first only, and falls back to its own choice without one")
    got = list(response.container_responses[0].deviceIDs)
    if len(got) != size or not set(must) <= set(got) or not set(got) <= set(available) or len(set(got)) != len(got):
        raise CheckWarnedError(f"asked for {size} of {available} including {must}, got {got}: the kubelet keeps the "
                               "available ones and chooses the rest itself")
    return f"{got}"


async def _allocate(s: _Session) -> str:
    device = s.healthy_ids()[0]
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[device])])
    # manager.go, allocateContainerResources: an error, or no container response, fails the container.
    first = await s.rpc(lambda p: p.Allocate(request, timeout=s.timeout))
    if not first.container_responses:
        raise CheckFailedError("no container response: the kubelet fails the container "
                               "(\"no containers return in allocation response\")")
    got = first.container_responses[0]
    summary = f"{device}: {len(got.envs)} env, {len(got.devices)} device nodes, {len(got.mounts)} mounts"
    if len(first.container_responses) != 1:
        raise CheckWarnedError(f"{summary}; {len(first.container_responses)} container responses for 1 request "
                               "(the kubelet uses the first)")
    again = await s.rpc(lambda p: p.Allocate(request, timeout=s.timeout))
    if again != first:
        # The kubelet checkpoints the first answer and does not ask again for a container it allocated
        # (devicesToAllocate), so this harms no pod; an idempotent plugin is simply easier to trust.
        raise CheckWarnedError(f"{summary}; a repeated Allocate answered differently")
    return summary


async def _allocate_unknown(s: _Session) -> str:
    # The kubelet only ever sends IDs it holds as healthy for the resource (devicesToAllocate picks
    # from m.healthyDevices) and fails the container on any error code alike: how a plugin answers an
    # unknown ID harms no pod. INVALID_ARGUMENT naming the ID is what best practice asks.
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[UNKNOWN_ID])])
    try:
        await s.rpc(lambda p: p.Allocate(request, timeout=s.timeout))
    except grpc.aio.AioRpcError as exc:
        if exc.code() is not grpc.StatusCode.INVALID_ARGUMENT:
            raise CheckWarnedError(f"rejected with {_describe(exc)}; INVALID_ARGUMENT is better (the kubelet "
                                   "fails the container on any code alike)") from None
        if UNKNOWN_ID not in (exc.details() or ""):
            raise CheckWarnedError(f"rejected without naming the ID: {exc.details()}") from None
        return f"INVALID_ARGUMENT: {exc.details()}"
    raise CheckWarnedError(f"allocated the unknown device {UNKNOWN_ID!r} (the kubelet never sends one, but a "
                           "plugin that checks IDs catches a stale kubelet checkpoint)")


async def _pre_start(s: _Session) -> str:
    # manager.go, callPreStartContainerIfNeeded: called only when the options require it; an error
    # fails the container.
    if not s.options.pre_start_required:
        raise StepSkippedError("the plugin does not require PreStartContainer")
    device = s.healthy_ids()[0]
    await s.rpc(lambda p: p.PreStartContainer(pb.PreStartContainerRequest(devices_ids=[device]), timeout=s.timeout))
    return device


async def _kubelet_restart(s: _Session) -> str:
    # After a restart the resource has no capacity until its plugin registers again (manager.go,
    # GetCapacity): the kubelet never dials a plugin by itself, plugins watch for kubelet.sock.
    if s.stub is None:
        raise StepSkippedError("no plugin registered")
    await s.follow()
    if s.stream is not None:
        s.stream.cancel()
        s.stream = None
    served = await s.kubelet.restart()
    got = await s.wait_registration(s.timeout)
    if got is None:
        raise CheckFailedError(f"no re-registration within {s.timeout:g}s of kubelet.sock re-appearing")
    arrived, request = got
    await s.connect(request)
    try:
        response = await s.first_list()
    except TimeoutError:
        raise CheckFailedError(f"re-registered, but no device list within {s.timeout:g}s") from None
    if response is None:
        raise CheckFailedError("re-registered, but the new endpoint's ListAndWatch ended at once")
    return f"re-registered in {(arrived - served) * 1000:.1f} ms, {len(response.devices)} devices listed"


STEPS: list[tuple[str, Callable[[_Session], Awaitable[str]]]] = [
    ("Register", _register),
    ("GetDevicePluginOptions", _options),
    ("ListAndWatch: first list", _first_list),
    ("ListAndWatch: stays open", _stream_stays_open),
    ("GetPreferredAllocation", _preferred),
    ("Allocate: healthy ID, twice", _allocate),
    ("Allocate: unknown ID", _allocate_unknown),
    ("PreStartContainer", _pre_start),
    ("kubelet restart: re-register", _kubelet_restart),
]


async def run_checks(
    socket_dir: Path, *, timeout: float = 10.0, resource: str | None = None, kubelet_socket: Path | None = None,
) -> Report:
    """Play the kubelet and grade the first plugin that registers (or ``resource``). Endpoints are
    resolved in ``socket_dir``; ``kubelet.sock`` is served there unless ``kubelet_socket`` says where."""
    if not socket_dir.is_dir():
        raise ConfigError(f"socket directory {socket_dir} does not exist",
                          hint="pass --socket-dir with the directory the plugin uses")
    if kubelet_socket is not None and not kubelet_socket.parent.is_dir():
        raise ConfigError(f"directory {kubelet_socket.parent} of --kubelet-socket does not exist",
                          hint="create it, or leave --kubelet-socket out to serve kubelet.sock in --socket-dir")
    report = Report()
    async with KubeletStandIn(socket_dir, kubelet_socket) as kubelet:
        session = _Session(kubelet, timeout, resource)
        try:
            for name, check in STEPS:
                replaced = session.replaced
                step = await timed_step(name, check(session), _failure, limit=DETAIL_LIMIT)
                if session.replaced > replaced and name != "kubelet restart: re-register":
                    step.detail += f" (on the endpoint of a later registration: {session.replaced - replaced} followed)"
                report.steps.append(step)
                if name == "Register" and step.result is Result.FAIL:
                    break
        finally:
            await session.close()
        report.resource, report.endpoint = session.request.resource_name, session.request.endpoint
    return report
