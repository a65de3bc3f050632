"""A conformance checker for *any* kubelet device plugin: it plays the kubelet and grades the plugin.

``run_checks`` serves ``Registration`` on ``<dir>/kubelet.sock`` (via ``KubeletStandIn``), waits
for a plugin to register, then exercises the protocol the way the kubelet's device manager does
and records one ``Step`` per check with its timing. It needs nothing from kubeaccel's own daemon,
so it grades Go plugins as well. Steps whose precondition the plugin did not opt into (pre-start,
preferred allocation) are skipped, not failed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from kubeaccel.conformance import CheckFailedError, Graded, Result, Step, StepSkippedError, timed_step
from kubeaccel.errors import ConfigError
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.kubelet import KubeletStandIn

MAX_ID_LENGTH = 63  # the kubelet API's limit on device IDs
UNKNOWN_ID = "kubeaccel-check-no-such-device"
QUIET_PERIOD_S = 0.5  # how long ListAndWatch must stay open with no end


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

    @property
    def plugin(self) -> pb_grpc.DevicePluginAsyncStub:
        if self.stub is None:
            raise StepSkippedError("no plugin registered")
        return self.stub

    def healthy_ids(self) -> list[str]:
        ids = [d.ID for d in self.devices if d.health == "Healthy"]
        if not ids:
            raise StepSkippedError("the plugin advertises no healthy device")
        return ids

    async def wait_registration(self) -> pb.RegisterRequest:
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                rejected = "; ".join(problem for _, problem in self.kubelet.rejected)
                why = f" (rejected: {rejected})" if rejected else ""
                raise CheckFailedError("no plugin registered in time" + why)
            try:
                _, request = await self.kubelet.next_registration(remaining)
            except TimeoutError:
                continue
            if self.want_resource is None or request.resource_name == self.want_resource:
                return request

    async def connect(self, request: pb.RegisterRequest) -> None:
        if self.channel is not None:
            await self.channel.close(None)
        self.channel = self.kubelet.plugin_channel(request.endpoint)
        self.stub = pb_grpc.DevicePluginStub(self.channel)

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
    """A gRPC error the plugin answered fails the step; anything else is the checker's bug and propagates."""
    return _describe(exc) if isinstance(exc, grpc.aio.AioRpcError) else None


async def _register(s: _Session) -> str:
    s.request = await s.wait_registration()
    await s.connect(s.request)
    opts = s.request.options
    return (f"{s.request.resource_name} at {s.request.endpoint} (pre_start_required={opts.pre_start_required}, "
            f"get_preferred_allocation_available={opts.get_preferred_allocation_available})")


async def _options(s: _Session) -> str:
    options = await s.plugin.GetDevicePluginOptions(pb.Empty(), timeout=s.timeout)
    if options != s.request.options:
        raise CheckFailedError(f"options {options} differ from those sent in Register {s.request.options}")
    return "match the registration"


async def _first_list(s: _Session) -> str:
    s.stream = s.plugin.ListAndWatch(pb.Empty())
    try:
        response = await _read(s.stream, s.timeout)
    except TimeoutError:
        raise CheckFailedError(f"no device list within {s.timeout:g}s: the first list must be sent at once") from None
    if response is None:
        raise CheckFailedError("the stream ended before sending a device list")
    s.devices = list(response.devices)
    ids = [d.ID for d in s.devices]
    problems = []
    if len(set(ids)) != len(ids):
        problems.append("duplicate device IDs")
    problems += [f"ID {i!r} is longer than {MAX_ID_LENGTH} characters" for i in ids if len(i) > MAX_ID_LENGTH]
    problems += [f"{d.ID!r} has health {d.health!r}" for d in s.devices if d.health not in ("Healthy", "Unhealthy")]
    if problems:
        raise CheckFailedError("; ".join(problems))
    healthy = sum(d.health == "Healthy" for d in s.devices)
    return f"{len(ids)} devices, {healthy} healthy"


async def _stream_stays_open(s: _Session) -> str:
    if s.stream is None:
        raise StepSkippedError("no stream")
    deadline = time.monotonic() + QUIET_PERIOD_S
    updates = 0
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            response = await _read(s.stream, remaining)
        except TimeoutError:
            break
        except grpc.aio.AioRpcError as exc:
            raise CheckFailedError(f"the stream failed: {_describe(exc)}") from None
        if response is None:
            raise CheckFailedError("the stream ended: ListAndWatch must stay open for the kubelet's lifetime")
        s.devices = list(response.devices)
        updates += 1
    return f"open after {QUIET_PERIOD_S:g}s" + (f" ({updates} updates)" if updates else "")


async def _preferred(s: _Session) -> str:
    if not s.request.options.get_preferred_allocation_available:
        raise StepSkippedError("the plugin does not offer GetPreferredAllocation")
    available = s.healthy_ids()
    size = min(2, len(available))
    must = available[-1:]
    request = pb.PreferredAllocationRequest(container_requests=[pb.ContainerPreferredAllocationRequest(
        available_deviceIDs=available, must_include_deviceIDs=must, allocation_size=size)])
    response = await s.plugin.GetPreferredAllocation(request, timeout=s.timeout)
    if len(response.container_responses) != 1:
        raise CheckFailedError(f"{len(response.container_responses)} container responses for 1 request")
    got = list(response.container_responses[0].deviceIDs)
    if len(got) != size or not set(must) <= set(got) or not set(got) <= set(available) or len(set(got)) != len(got):
        raise CheckFailedError(f"asked for {size} of {available} including {must}, got {got}")
    return f"{got}"


async def _allocate(s: _Session) -> str:
    device = s.healthy_ids()[0]
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[device])])
    first = await s.plugin.Allocate(request, timeout=s.timeout)
    if len(first.container_responses) != 1:
        raise CheckFailedError(f"{len(first.container_responses)} container responses for 1 request")
    again = await s.plugin.Allocate(request, timeout=s.timeout)
    if again != first:
        raise CheckFailedError("a repeated Allocate answered differently (the kubelet re-calls it after restarts)")
    got = first.container_responses[0]
    return f"{device}: {len(got.envs)} env, {len(got.devices)} device nodes, {len(got.mounts)} mounts"


async def _allocate_unknown(s: _Session) -> str:
    s.plugin  # noqa: B018 - skip when nothing registered
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[UNKNOWN_ID])])
    try:
        await s.plugin.Allocate(request, timeout=s.timeout)
    except grpc.aio.AioRpcError as exc:
        if exc.code() is not grpc.StatusCode.INVALID_ARGUMENT:
            raise CheckFailedError(f"rejected, but with {_describe(exc)}; expected INVALID_ARGUMENT") from None
        if UNKNOWN_ID not in (exc.details() or ""):
            raise CheckFailedError(f"rejected without naming the ID: {exc.details()}") from None
        return f"INVALID_ARGUMENT: {exc.details()}"
    raise CheckFailedError(f"allocated the unknown device {UNKNOWN_ID!r}")


async def _pre_start(s: _Session) -> str:
    if not s.request.options.pre_start_required:
        raise StepSkippedError("the plugin does not require PreStartContainer")
    device = s.healthy_ids()[0]
    await s.plugin.PreStartContainer(pb.PreStartContainerRequest(devices_ids=[device]), timeout=s.timeout)
    return device


async def _kubelet_restart(s: _Session) -> str:
    before = s.request
    if s.stub is None:
        raise StepSkippedError("no plugin registered")
    if s.stream is not None:
        s.stream.cancel()
        s.stream = None
    served = await s.kubelet.restart()
    deadline = served + s.timeout
    while True:
        try:
            arrived, request = await s.kubelet.next_registration(max(deadline - time.monotonic(), 0.001))
        except TimeoutError:
            raise CheckFailedError(f"no re-registration within {s.timeout:g}s of kubelet.sock re-appearing") from None
        if request.resource_name == before.resource_name:
            break
    await s.connect(request)
    stream = s.plugin.ListAndWatch(pb.Empty())
    try:
        response = await _read(stream, s.timeout)
    finally:
        stream.cancel()
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


async def run_checks(socket_dir: Path, *, timeout: float = 10.0, resource: str | None = None) -> Report:
    """Play the kubelet in ``socket_dir`` and grade the first plugin that registers (or ``resource``)."""
    if not socket_dir.is_dir():
        raise ConfigError(f"socket directory {socket_dir} does not exist",
                               hint="pass --socket-dir with the directory the plugin uses")
    report = Report()
    async with KubeletStandIn(socket_dir) as kubelet:
        session = _Session(kubelet, timeout, resource)
        try:
            for name, check in STEPS:
                step = await timed_step(name, check(session), _failure)
                report.steps.append(step)
                if name == "Register" and step.result is Result.FAIL:
                    break
        finally:
            await session.close()
        report.resource, report.endpoint = session.request.resource_name, session.request.endpoint
    return report
