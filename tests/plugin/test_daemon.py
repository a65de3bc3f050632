"""The daemon against a kubelet stand-in, over real gRPC on real unix sockets in temp dirs.

Matrix: registration (serve before Register; version, endpoint, resource, options); ListAndWatch
(full list at once with NUMA topology; health flip, unplug and replug via the state file, each
pushed as a new full list; the stream stays open); Allocate (sorted indices env, device specs,
idempotence, several containers; unknown/unhealthy/duplicated/empty IDs → INVALID_ARGUMENT
naming the ID, and the daemon keeps serving); GetPreferredAllocation (NUMA packing,
must-include, impossible sizes, unknown available IDs); kubelet restart (sockets deleted →
served anew and re-registered); kubelet absent at start and gone mid-run (no exit; registers
when it comes back); metrics scraped over HTTP.
"""

from __future__ import annotations

import asyncio
import urllib.request
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest
from fixtures.plugin import SIM_RESOURCE, PluginDaemon

from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.kubelet import KubeletStandIn
from kubeaccel.plugin.server import socket_name

ENV = "KUBEACCEL_DEVICES_EXAMPLE_COM_SIM"


def run(plugin: PluginDaemon, scenario: Callable[[KubeletStandIn, pb_grpc.DevicePluginStub], Awaitable[Any]]) -> Any:
    """Start a kubelet stand-in, wait for the daemon to register, hand the scenario a plugin stub."""

    async def main() -> Any:
        async with KubeletStandIn(plugin.socket_dir) as kubelet:
            _, request = await kubelet.next_registration(timeout=5)
            async with kubelet.plugin_channel(request.endpoint) as channel:
                return await scenario(kubelet, pb_grpc.DevicePluginStub(channel))

    return asyncio.run(main())


async def _next_list(stream: Any, timeout: float = 5) -> dict[str, tuple[str, list[int]]]:
    response = await asyncio.wait_for(stream.read(), timeout)
    assert response is not grpc.aio.EOF
    return {d.ID: (d.health, [n.ID for n in d.topology.nodes]) for d in response.devices}


async def _until_unhealthy(stub: pb_grpc.DevicePluginStub, device_id: str) -> None:
    stream = stub.ListAndWatch(pb.Empty())
    while (await _next_list(stream))[device_id][0] != "Unhealthy":
        pass
    stream.cancel()


def test_registers_with_the_kubelet(plugin_daemon: PluginDaemon) -> None:
    async def main() -> pb.RegisterRequest:
        async with KubeletStandIn(plugin_daemon.socket_dir) as kubelet:
            _, request = await kubelet.next_registration(timeout=5)
            # Served before Register: the endpoint answers right away.
            async with kubelet.plugin_channel(request.endpoint) as channel:
                options = await pb_grpc.DevicePluginStub(channel).GetDevicePluginOptions(pb.Empty(), timeout=2)
            assert options == request.options
            return request

    request = asyncio.run(main())
    assert request.version == "v1beta1"
    assert request.resource_name == SIM_RESOURCE
    assert request.endpoint == socket_name(SIM_RESOURCE) == "kubeaccel-example.com_sim.sock"
    assert request.options.get_preferred_allocation_available is True
    assert request.options.pre_start_required is False  # the simulated backend has no reset


def test_list_and_watch_follows_the_state_file(plugin_daemon: PluginDaemon) -> None:
    async def scenario(kubelet: KubeletStandIn, stub: pb_grpc.DevicePluginStub) -> None:
        stream = stub.ListAndWatch(pb.Empty())
        first = await _next_list(stream)
        assert first == {
            "sim-0": ("Healthy", [0]),
            "sim-1": ("Healthy", [0]),
            "sim-2": ("Healthy", [1]),
            "sim-3": ("Healthy", [1]),
        }
        plugin_daemon.set_states({"sim-2": "Unhealthy"})
        assert (await _next_list(stream))["sim-2"] == ("Unhealthy", [1])
        plugin_daemon.set_states({"sim-2": "Unhealthy", "sim-3": "Absent"})
        assert sorted(await _next_list(stream)) == ["sim-0", "sim-1", "sim-2"]
        plugin_daemon.set_states({})
        replugged = await _next_list(stream)
        assert sorted(replugged) == ["sim-0", "sim-1", "sim-2", "sim-3"]
        assert {h for h, _ in replugged.values()} == {"Healthy"}
        # Nothing changes: the stream stays open and sends nothing.
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(stream.read(), 0.3)
        stream.cancel()

    run(plugin_daemon, scenario)


def test_allocate(plugin_daemon: PluginDaemon) -> None:
    async def scenario(kubelet: KubeletStandIn, stub: pb_grpc.DevicePluginStub) -> pb.AllocateResponse:
        request = pb.AllocateRequest(
            container_requests=[
                pb.ContainerAllocateRequest(devices_ids=["sim-3", "sim-1"]),
                pb.ContainerAllocateRequest(devices_ids=["sim-0"]),
            ]
        )
        first = await stub.Allocate(request, timeout=2)
        again = await stub.Allocate(request, timeout=2)
        assert first == again  # idempotent: the kubelet re-calls Allocate after restarts
        return first

    response = run(plugin_daemon, scenario)
    one, two = response.container_responses
    assert one.envs[ENV] == "1,3" and two.envs[ENV] == "0"
    assert [(d.container_path, d.permissions) for d in one.devices] == [("/dev/sim-1", "rw"), ("/dev/sim-3", "rw")]
    assert one.devices[0].host_path.endswith("/dev/sim-1")
    assert not one.cdi_devices


@pytest.mark.parametrize(
    ("ids", "named"),
    [
        (["sim-9"], "'sim-9'"),
        (["sim-0", "nope"], "'nope'"),
        (["sim-1", "sim-1"], "duplicated device ID(s) 'sim-1'"),
        (["sim-2"], "unhealthy device ID(s) 'sim-2'"),
        ([], "empty allocation request"),
    ],
)
def test_allocate_rejects_bad_ids(plugin_daemon: PluginDaemon, ids: list[str], named: str) -> None:
    plugin_daemon.set_states({"sim-2": "Unhealthy"})

    async def scenario(kubelet: KubeletStandIn, stub: pb_grpc.DevicePluginStub) -> None:
        await _until_unhealthy(stub, "sim-2")
        request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)])
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.Allocate(request, timeout=2)
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert named in (info.value.details() or "")
        # The daemon keeps serving after bad input.
        ok = await stub.Allocate(pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(
            devices_ids=["sim-0"])]), timeout=2)
        assert ok.container_responses[0].envs[ENV] == "0"

    run(plugin_daemon, scenario)


def test_preferred_allocation(plugin_daemon: PluginDaemon) -> None:
    def request(available: list[str], must: list[str], size: int) -> pb.PreferredAllocationRequest:
        return pb.PreferredAllocationRequest(container_requests=[pb.ContainerPreferredAllocationRequest(
            available_deviceIDs=available, must_include_deviceIDs=must, allocation_size=size)])

    async def scenario(kubelet: KubeletStandIn, stub: pb_grpc.DevicePluginStub) -> None:
        all_ids = ["sim-0", "sim-1", "sim-2", "sim-3"]

        async def preferred(available: list[str], must: list[str], size: int) -> list[str]:
            response = await stub.GetPreferredAllocation(request(available, must, size), timeout=2)
            return list(response.container_responses[0].deviceIDs)

        assert await preferred(all_ids, [], 2) == ["sim-0", "sim-1"]
        assert await preferred(all_ids, ["sim-2"], 2) == ["sim-2", "sim-3"]  # same NUMA node as must-include
        assert await preferred(["sim-0", "sim-2", "sim-3"], [], 2) == ["sim-2", "sim-3"]
        assert await preferred(all_ids, ["sim-1"], 4) == all_ids
        for bad, named in [
            ((all_ids, [], 5), "exceeds"),
            ((all_ids, ["sim-7"], 1), "'sim-7'"),
            ((["sim-0", "gpu-0"], [], 1), "'gpu-0'"),
            ((all_ids, [], 0), "less than 1"),
        ]:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await preferred(*bad)
            assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert named in (info.value.details() or "")

    run(plugin_daemon, scenario)


def test_kubelet_restart_reregisters(plugin_daemon: PluginDaemon) -> None:
    async def main() -> None:
        async with KubeletStandIn(plugin_daemon.socket_dir) as kubelet:
            _, first = await kubelet.next_registration(timeout=5)
            plugin_socket = plugin_daemon.socket_dir / first.endpoint
            for _ in range(3):
                await kubelet.restart()
                _, again = await kubelet.next_registration(timeout=5)
                assert again == first
                assert plugin_socket.is_socket()
                async with kubelet.plugin_channel(again.endpoint) as channel:
                    stream = pb_grpc.DevicePluginStub(channel).ListAndWatch(pb.Empty())
                    assert len(await _next_list(stream)) == 4
                    stream.cancel()

    asyncio.run(main())


def test_survives_an_absent_kubelet(plugin_daemon: PluginDaemon) -> None:
    async def main() -> None:
        await asyncio.sleep(0.5)  # no kubelet at all: the daemon backs off, it does not exit
        async with KubeletStandIn(plugin_daemon.socket_dir) as kubelet:
            await kubelet.next_registration(timeout=5)
        await asyncio.sleep(0.5)  # the kubelet went away again
        async with KubeletStandIn(plugin_daemon.socket_dir) as kubelet:
            _, request = await kubelet.next_registration(timeout=5)
            assert request.resource_name == SIM_RESOURCE

    asyncio.run(main())
    assert plugin_daemon.runner._thread.is_alive()


def test_metrics_are_scraped(plugin_daemon: PluginDaemon) -> None:
    plugin_daemon.set_states({"sim-3": "Unhealthy"})

    async def scenario(kubelet: KubeletStandIn, stub: pb_grpc.DevicePluginStub) -> None:
        await _until_unhealthy(stub, "sim-3")
        await stub.Allocate(pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(
            devices_ids=["sim-0"])]), timeout=2)
        with pytest.raises(grpc.aio.AioRpcError):
            await stub.Allocate(pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(
                devices_ids=["sim-3"])]), timeout=2)

    run(plugin_daemon, scenario)
    port = plugin_daemon.daemon.metrics_port
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'kubeaccel_plugin_devices{health="Healthy",resource="example.com/sim"} 3.0' in text
    assert 'kubeaccel_plugin_devices{health="Unhealthy",resource="example.com/sim"} 1.0' in text
    assert 'kubeaccel_plugin_allocations_total{resource="example.com/sim",result="ok"} 1.0' in text
    assert 'kubeaccel_plugin_allocations_total{resource="example.com/sim",result="error"} 1.0' in text
    assert 'kubeaccel_plugin_allocate_duration_seconds_count{resource="example.com/sim"} 2.0' in text
    assert 'kubeaccel_plugin_registrations_total{resource="example.com/sim",result="ok"}' in text


def test_reload_keeps_serving_on_a_bad_config_and_applies_a_good_one(plugin_daemon: PluginDaemon) -> None:
    original = plugin_daemon.config_path.read_text()
    blocker = plugin_daemon.config_path.parent / "not-a-dir"
    blocker.write_text("")
    port = plugin_daemon.daemon.metrics_port

    def scrape() -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()

    async def main() -> None:
        async with KubeletStandIn(plugin_daemon.socket_dir) as kubelet:
            _, first = await kubelet.next_registration(timeout=5)
            # A config whose backend cannot be built: logged, the running resource untouched.
            plugin_daemon.config_path.write_text(original.replace(str(plugin_daemon.config_path.parent / "dev"),
                                                                  str(blocker / "dev")))
            plugin_daemon.runner.call(plugin_daemon.daemon.reload_requested.set)
            await asyncio.sleep(0.3)
            assert kubelet.received.empty()
            async with kubelet.plugin_channel(first.endpoint) as channel:
                stream = pb_grpc.DevicePluginStub(channel).ListAndWatch(pb.Empty())
                assert len(await _next_list(stream)) == 4
                stream.cancel()
            # A good config: applied, re-registered, and the metrics follow.
            plugin_daemon.config_path.write_text(original.replace("count: 4", "count: 2"))
            plugin_daemon.runner.call(plugin_daemon.daemon.reload_requested.set)
            _, again = await kubelet.next_registration(timeout=5)
            async with kubelet.plugin_channel(again.endpoint) as channel:
                stream = pb_grpc.DevicePluginStub(channel).ListAndWatch(pb.Empty())
                assert sorted(await _next_list(stream)) == ["sim-0", "sim-1"]
                stream.cancel()

    asyncio.run(main())
    assert 'kubeaccel_plugin_devices{health="Healthy",resource="example.com/sim"} 2.0' in scrape()
