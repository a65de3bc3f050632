"""Request handling in depth, over real gRPC on unix sockets, plus hypothesis fuzzing.

Matrix: a resettable backend → pre_start_required and PreStartContainer resets exactly the
requested devices (unknown IDs → INVALID_ARGUMENT); ``cdi: true`` → CDI names; ``replicas`` →
``<id>::<n>`` IDs and the distinct real index in the env; fuzz (thousands of cases) of Allocate
and GetPreferredAllocation through the socket: every answer either satisfies the contract or is
INVALID_ARGUMENT naming what was wrong, and the daemon keeps serving.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
import pytest
from fixtures.plugin import PluginDaemon, short_socket_dir
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeaccel.devices.backends.simulated import Config, SimulatedBackend
from kubeaccel.devices.model import Device
from kubeaccel.devices.sharing import SharedBackend
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.kubelet import KubeletStandIn
from kubeaccel.plugin.manager import Manager
from kubeaccel.plugin.service import ResourcePlugin

ENV = "KUBEACCEL_DEVICES_EXAMPLE_COM_SIM"


class ResettableSim(SimulatedBackend):
    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.resets: list[list[str]] = []

    def reset(self, devices: Sequence[Device]) -> None:
        self.resets.append([d.id for d in devices])


async def _serve(plugins: list[ResourcePlugin], scenario):  # type: ignore[no-untyped-def]
    socket_dir = short_socket_dir()
    manager = Manager(socket_dir)
    try:
        for plugin in plugins:
            await manager.add(plugin)
        async with KubeletStandIn(socket_dir) as kubelet:
            await manager.tick()
            _, request = await kubelet.next_registration(timeout=5)
            async with kubelet.plugin_channel(request.endpoint) as channel:
                return await scenario(request, pb_grpc.DevicePluginStub(channel))
    finally:
        await manager.close()
        socket_dir.rmdir()


def test_pre_start_resets_requested_devices() -> None:
    backend = ResettableSim("example.com/sim", Config(count=3))

    async def scenario(request, stub):  # type: ignore[no-untyped-def]
        assert request.options.pre_start_required is True
        await stub.PreStartContainer(pb.PreStartContainerRequest(devices_ids=["sim-2", "sim-0"]), timeout=2)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.PreStartContainer(pb.PreStartContainerRequest(devices_ids=["sim-7"]), timeout=2)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT and "'sim-7'" in (info.value.details() or "")

    asyncio.run(_serve([ResourcePlugin(backend)], scenario))
    assert backend.resets == [["sim-0", "sim-2"]]


def test_cdi_names() -> None:
    backend = SimulatedBackend("example.com/sim", Config(count=2))

    async def scenario(request, stub):  # type: ignore[no-untyped-def]
        response = await stub.Allocate(pb.AllocateRequest(container_requests=[
            pb.ContainerAllocateRequest(devices_ids=["sim-1", "sim-0"])]), timeout=2)
        return response.container_responses[0]

    got = asyncio.run(_serve([ResourcePlugin(backend, cdi=True)], scenario))
    assert [c.name for c in got.cdi_devices] == ["example.com/sim=0", "example.com/sim=1"]
    assert got.envs[ENV] == "0,1"


def test_replicas_share_a_device() -> None:
    backend = SharedBackend(SimulatedBackend("example.com/sim", Config(count=2)), replicas=2)

    async def scenario(request, stub):  # type: ignore[no-untyped-def]
        stream = stub.ListAndWatch(pb.Empty())
        listed = [d.ID for d in (await stream.read()).devices]
        stream.cancel()
        response = await stub.Allocate(pb.AllocateRequest(container_requests=[
            pb.ContainerAllocateRequest(devices_ids=["sim-1::1", "sim-1::0"])]), timeout=2)
        return listed, response.container_responses[0]

    listed, got = asyncio.run(_serve([ResourcePlugin(backend)], scenario))
    assert listed == ["sim-0::0", "sim-0::1", "sim-1::0", "sim-1::1"]
    assert got.envs[ENV] == "1"


# -- fuzzing through the socket ---------------------------------------------------------------

KNOWN = ["sim-0", "sim-1", "sim-2", "sim-3"]
UNHEALTHY = "sim-1"
ids_strategy = st.lists(st.one_of(st.sampled_from(KNOWN), st.text(min_size=0, max_size=70)), max_size=8)


@pytest.fixture
def fuzz_target(plugin_daemon: PluginDaemon):  # type: ignore[no-untyped-def]
    plugin_daemon.set_states({UNHEALTHY: "Unhealthy"})
    channel = grpc.insecure_channel(f"unix://{plugin_daemon.socket_dir}/kubeaccel-example.com_sim.sock")
    stub = pb_grpc.DevicePluginStub(channel)
    stream = stub.ListAndWatch(pb.Empty(), timeout=10)
    for response in stream:  # wait until the daemon sees the state file
        if {d.ID: d.health for d in response.devices}[UNHEALTHY] == "Unhealthy":
            break
    stream.cancel()
    yield stub
    channel.close()


FUZZ = settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(ids=ids_strategy)
def test_fuzz_allocate(fuzz_target: pb_grpc.DevicePluginStub, ids: list[str]) -> None:
    request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)])
    bad = {i for i in ids if i not in KNOWN or i == UNHEALTHY or ids.count(i) > 1}
    try:
        response = fuzz_target.Allocate(request, timeout=5)
    except grpc.RpcError as exc:
        assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT, exc.details()
        assert bad or not ids
        details = exc.details() or ""
        # Bad IDs are named (the first few of each kind, in natural order), and the text is bounded.
        assert any(repr(i) in details for i in bad) or not ids
        assert len(bad) <= 5 * 3 or "more (" in details
        assert len(details) < 2000
        return
    assert ids and not bad
    want = ",".join(sorted({i.removeprefix("sim-") for i in ids}, key=int))
    assert response.container_responses[0].envs[ENV] == want


@FUZZ
@given(
    available=st.lists(st.one_of(st.sampled_from(KNOWN), st.text(max_size=10)), max_size=6),
    must=st.lists(st.sampled_from([*KNOWN, "gpu-0"]), max_size=3),
    size=st.integers(min_value=-2, max_value=7),
)
def test_fuzz_preferred(fuzz_target: pb_grpc.DevicePluginStub, available: list[str], must: list[str],
                        size: int) -> None:
    request = pb.PreferredAllocationRequest(container_requests=[pb.ContainerPreferredAllocationRequest(
        available_deviceIDs=available, must_include_deviceIDs=must, allocation_size=size)])
    pool = set(available)
    valid = (
        pool <= set(KNOWN)
        and set(must) <= pool
        and len(set(must)) == len(must)
        and max(1, len(must)) <= size <= len(pool)
    )
    try:
        response = fuzz_target.GetPreferredAllocation(request, timeout=5)
    except grpc.RpcError as exc:
        assert exc.code() is grpc.StatusCode.INVALID_ARGUMENT, exc.details()
        assert not valid, exc.details()
        return
    assert valid
    got = list(response.container_responses[0].deviceIDs)
    assert len(got) == len(set(got)) == size
    assert set(must) <= set(got) <= pool
