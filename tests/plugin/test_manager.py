"""The supervisor's decisions, with an injected server factory and registrar (no sockets).

Matrix: first tick starts and registers every resource; no kubelet → no register, no exit;
registrar failures back off and a new kubelet.sock retries at once; our socket vanishing →
server restarted and re-registered; kubelet.sock replaced → re-registered without a restart;
close stops everything.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from kubeaccel.devices.backends.simulated import Config, create
from kubeaccel.devices.model import ContainerAllocation, Device, Devices
from kubeaccel.errors import UnavailableError
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin.manager import Manager
from kubeaccel.plugin.service import ResourcePlugin


class FakeServer:
    def __init__(self, plugin: ResourcePlugin, socket_dir: Path) -> None:
        self.socket_path = socket_dir / f"{plugin.resource_name.replace('/', '_')}.sock"
        self.intact = False
        self.stopped = False

    async def start(self) -> None:
        self.intact = True

    def socket_intact(self) -> bool:
        return self.intact

    async def stop(self, grace: float | None = None) -> None:
        self.stopped = True
        self.intact = False


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.fail = False

    async def __call__(self, kubelet: Path, endpoint: str, resource: str, options: pb.DevicePluginOptions) -> None:
        self.calls.append(resource)
        if self.fail:
            raise UnavailableError("kubelet refused")


def _plugin(name: str) -> ResourcePlugin:
    return ResourcePlugin(create(name, Config(count=2)))


def test_supervisor_decisions(tmp_path: Path) -> None:
    servers: list[FakeServer] = []

    def factory(plugin: ResourcePlugin, socket_dir: Path) -> FakeServer:
        servers.append(FakeServer(plugin, socket_dir))
        return servers[-1]

    registrar = Recorder()
    kubelet = tmp_path / "kubelet.sock"

    async def main() -> None:
        manager = Manager(tmp_path, server_factory=factory, registrar=registrar)
        await manager.add(_plugin("example.com/a"))
        await manager.add(_plugin("example.com/b"))
        assert len(servers) == 2

        await manager.tick()  # no kubelet yet: nothing to register with, and no error
        assert registrar.calls == [] and not manager.registered.is_set()

        kubelet.touch()
        await manager.tick()
        await manager.settle()
        assert sorted(registrar.calls) == ["example.com/a", "example.com/b"]
        assert manager.registered.is_set()
        await manager.tick()  # already registered with this kubelet: nothing more
        assert len(registrar.calls) == 2

        servers[0].intact = False  # our socket vanished
        await manager.tick()
        await manager.settle()
        assert len(servers) == 3 and servers[0].stopped and registrar.calls[-1] == "example.com/a"

        kubelet.unlink()
        await manager.tick()
        await manager.settle()
        kubelet.touch()  # a new kubelet: both register again, no server restart needed
        registrar.calls.clear()
        await manager.tick()
        await manager.settle()
        assert sorted(registrar.calls) == ["example.com/a", "example.com/b"] and len(servers) == 3

        # A refusing kubelet: one attempt, then back off instead of hammering it.
        kubelet.unlink()
        await manager.tick()
        await manager.settle()
        registrar.fail = True
        kubelet.touch()
        registrar.calls.clear()
        await manager.tick()
        await manager.settle()
        await manager.tick()
        await manager.settle()
        assert sorted(registrar.calls) == ["example.com/a", "example.com/b"]
        assert not manager.registered.is_set()
        registrar.fail = False
        await asyncio.sleep(0.25)  # past the first backoff step
        await manager.tick()
        await manager.settle()
        assert manager.registered.is_set()

        await manager.close()
        assert all(s.stopped for s in servers) and manager.entries == {}

    asyncio.run(main())


class _ClosedReturnsAtOnce:
    """A backend whose ``wait_for_change`` returns at once after ``close`` (as NVIDIA's does); counts scans."""

    def __init__(self) -> None:
        self.inner = create("example.com/c", Config(count=2))
        self.resource_name = self.inner.resource_name
        self.scans = 0
        self.closed = threading.Event()

    def scan(self) -> Devices:
        self.scans += 1
        return self.inner.scan()

    def container_allocation(self, devices: Sequence[Device]) -> ContainerAllocation:
        return self.inner.container_allocation(devices)

    def wait_for_change(self, timeout: float) -> bool:
        self.closed.wait(timeout)
        return False

    def close(self) -> None:
        self.closed.set()
        time.sleep(0.3)  # NVIDIA's close joins its health thread: the watch thread must not spin meanwhile


def test_close_stops_watch_threads_before_closing_backends(tmp_path: Path) -> None:
    """Regression (seen on a GPU node): closing backends first left each watch thread rescanning
    in a tight loop until its plugin was stopped (120 scans in one shutdown)."""
    backend = _ClosedReturnsAtOnce()

    async def main() -> None:
        manager = Manager(tmp_path, server_factory=FakeServer, registrar=Recorder())
        await manager.add(ResourcePlugin(backend))
        await asyncio.sleep(0.05)
        before = backend.scans
        await manager.close()
        assert backend.scans - before <= 1, f"{backend.scans - before} rescans while closing"

    asyncio.run(main())
