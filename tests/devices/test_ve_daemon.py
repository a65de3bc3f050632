"""The VE backend served by the real daemon over real gRPC on a unix socket, with a kubelet
stand-in speaking the v1beta1 protocol, on a fake VE /dev + /sys tree: registration options
(PreStartContainer because a reset command is set), ListAndWatch with NUMA topology and a live
os_state flip, Allocate with the VE env vars, nodes and VEOS mount, and PreStartContainer running
the reset command once per VE behind shared replicas.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from fixtures.ve import FakeVETree

from kubeaccel.devices.config import load_config
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.daemon import BackgroundDaemon, Daemon
from kubeaccel.plugin.kubelet import KubeletStandIn


def set_os_state(root: Path, node: int, value: int) -> None:
    FakeVETree(root).set(node, "os_state", value)


@pytest.fixture
def ve_node(tmp_path: Path) -> Iterator[tuple[Path, Path, Path]]:
    """(root of the fake tree, socket dir, reset log) with a daemon serving nec.com/ve on it."""
    root = tmp_path / "node"
    tree = FakeVETree(root)
    for node, slot, numa in ((0, 0, 0), (1, 1, 0), (2, 2, 1), (3, 3, 1)):
        tree.add(node, slot, numa=numa, ve_state=None)
    log = tmp_path / "reset.log"
    config = tmp_path / "plugin.yaml"
    resource = {
        "name": "nec.com/ve",
        "backend": "ve",
        "replicas": 2,
        "veosSocketDir": "/var/opt/nec/ve/veos",
        "resetCommand": ["sh", "-c", f"echo {{slot}} >> {log}"],
        "pollIntervalSeconds": 0.01,
    }
    config.write_text(yaml.safe_dump({"version": "v1", "resources": [resource]}))
    socket_dir = Path(tempfile.mkdtemp(prefix="kav-"))  # unix socket paths must stay short
    runner = BackgroundDaemon(Daemon(lambda: load_config(config), socket_dir, root=root))
    runner.start()
    try:
        yield root, socket_dir, log
    finally:
        runner.stop()
        shutil.rmtree(socket_dir, ignore_errors=True)


async def next_list(stream: Any) -> dict[str, tuple[str, list[int]]]:
    response = await asyncio.wait_for(stream.read(), 5)
    assert response is not grpc.aio.EOF
    return {d.ID: (d.health, [n.ID for n in d.topology.nodes]) for d in response.devices}


def test_ve_resource_end_to_end(ve_node: tuple[Path, Path, Path]) -> None:
    root, socket_dir, log = ve_node

    async def main() -> None:
        async with KubeletStandIn(socket_dir) as kubelet:
            _, registration = await kubelet.next_registration(timeout=10)
            assert registration.resource_name == "nec.com/ve"
            assert registration.options.pre_start_required is True
            async with kubelet.plugin_channel(registration.endpoint) as channel:
                stub = pb_grpc.DevicePluginStub(channel)
                stream = stub.ListAndWatch(pb.Empty())
                first = await next_list(stream)
                assert len(first) == 8
                assert first["veslot0::1"] == ("Healthy", [0])
                assert first["veslot3::0"] == ("Healthy", [1])

                set_os_state(root, 2, 1)  # ve2 (slot 2) goes OFFLINE
                flipped = await next_list(stream)
                assert flipped["veslot2::0"][0] == flipped["veslot2::1"][0] == "Unhealthy"
                set_os_state(root, 2, 0)
                assert (await next_list(stream))["veslot2::0"][0] == "Healthy"
                stream.cancel()

                preferred = await stub.GetPreferredAllocation(
                    pb.PreferredAllocationRequest(
                        container_requests=[
                            pb.ContainerPreferredAllocationRequest(
                                available_deviceIDs=["veslot0::0", "veslot2::0", "veslot3::0", "veslot3::1"],
                                must_include_deviceIDs=["veslot2::0"],
                                allocation_size=2,
                            )
                        ]
                    ),
                    timeout=5,
                )
                assert list(preferred.container_responses[0].deviceIDs) == ["veslot2::0", "veslot3::0"]

                ids = ["veslot3::1", "veslot1::0", "veslot3::0"]
                response = await stub.Allocate(
                    pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)]), timeout=5
                )
                container = response.container_responses[0]
                assert container.envs["VE_NODE_NUMBER"] == "1"
                assert container.envs["_VENODELIST"] == "1 3"
                assert container.envs["KUBEACCEL_DEVICES_NEC_COM_VE"] == "1,3"
                assert sorted(d.container_path for d in container.devices) == [
                    "/dev/ve1",
                    "/dev/ve3",
                    "/dev/veslot1",
                    "/dev/veslot3",
                ]
                assert all(d.host_path.startswith(str(root)) for d in container.devices)
                assert [(m.host_path, m.container_path) for m in container.mounts] == [
                    ("/var/opt/nec/ve/veos", "/var/opt/nec/ve/veos")
                ]

                await stub.PreStartContainer(pb.PreStartContainerRequest(devices_ids=ids), timeout=10)
                assert log.read_text().splitlines() == ["1", "3"]

    asyncio.run(main())
