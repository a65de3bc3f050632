"""``dra check``'s registration, health and restart steps as kubelet v1.37.2 does them, with no API
server (the slice and claim steps then fail, and are not what these tests look at).

Matrix:
- the registration socket is any unix socket under the registry directory, subdirectories included,
  whatever its name, except names starting with "." (``plugin_watcher.go``); one that appears after
  the checker started is found within ``--timeout``;
- health negotiated as the kubelet does: ``v1`` before ``v1alpha1``; ``v1alpha1`` alone is read with
  its own proto; ``UNIMPLEMENTED`` and no health service are SKIP;
- the kubelet restart re-dials the existing socket and notifies again: the same file (same inode) is
  still there afterwards, nothing deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from kubeaccel.conformance import Result
from kubeaccel.dra._generated import dra_v1_pb2_grpc
from kubeaccel.dra._generated import health_v1_pb2 as h1
from kubeaccel.dra._generated import health_v1_pb2_grpc as h1_grpc
from kubeaccel.dra._generated import health_v1alpha1_pb2 as ha
from kubeaccel.dra._generated import health_v1alpha1_pb2_grpc as ha_grpc
from kubeaccel.dra._generated import pluginregistration_pb2 as reg_pb
from kubeaccel.dra._generated import pluginregistration_pb2_grpc as reg_grpc
from kubeaccel.dra.checker import Report, run_checks
from kubeaccel.errors import UnavailableError

DRIVER = "py.example.com"


class _Registration(reg_grpc.RegistrationServicer):
    def __init__(self, name: str, endpoint: Path, versions: list[str]) -> None:
        self.info = reg_pb.PluginInfo(type="DRAPlugin", name=name, endpoint=str(endpoint), supported_versions=versions)
        self.notified = 0

    async def GetInfo(self, request, context):  # type: ignore[no-untyped-def]
        return self.info

    async def NotifyRegistrationStatus(self, request, context):  # type: ignore[no-untyped-def]
        self.notified += 1
        return reg_pb.RegistrationStatusResponse()


def _health_servicer(module: Any, grpc_module: Any, *, unimplemented: bool = False) -> Any:
    class Health(grpc_module.DRAResourceHealthServicer):  # type: ignore[misc,name-defined]
        async def NodeWatchResources(self, request, context) -> AsyncIterator[Any]:  # type: ignore[no-untyped-def]
            if unimplemented:
                await context.abort(grpc.StatusCode.UNIMPLEMENTED, "no health reporting")
            yield module.NodeWatchResourcesResponse(devices=[module.DeviceHealth(
                device=module.DeviceIdentifier(pool_name="p", device_name="d"), health=module.HEALTHY)])
            await asyncio.Event().wait()

    return Health()


async def _driver(registry: Path, socket_name: str, versions: list[str], health: str, ready: asyncio.Event,
                  *, name: str = DRIVER, delay: float = 0.0) -> None:
    await asyncio.sleep(delay)
    endpoint = registry.parent / "plugins" / f"{name}.sock"
    endpoint.parent.mkdir(exist_ok=True)
    socket = registry / socket_name
    socket.parent.mkdir(parents=True, exist_ok=True)
    server = grpc.aio.server()
    reg_grpc.add_RegistrationServicer_to_server(_Registration(name, endpoint, versions), server)
    dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(dra_v1_pb2_grpc.DRAPluginServicer(), server)
    if health == "v1":
        h1_grpc.add_DRAResourceHealthServicer_to_server(_health_servicer(h1, h1_grpc), server)
    elif health == "v1alpha1":
        ha_grpc.add_DRAResourceHealthServicer_to_server(_health_servicer(ha, ha_grpc), server)
    elif health == "unimplemented":
        h1_grpc.add_DRAResourceHealthServicer_to_server(_health_servicer(h1, h1_grpc, unimplemented=True), server)
    server.add_insecure_port(f"unix://{endpoint}")
    server.add_insecure_port(f"unix://{socket}")
    await server.start()
    ready.set()
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop(None)


def _no_api_server() -> Any:
    raise UnavailableError("no API server in this test")


def _check(socket_name: str = "py-reg.sock", versions: list[str] | None = None, health: str = "none", *,
           delay: float = 0.0, timeout: float = 3.0,
           inodes: list[int] | None = None) -> Report:
    base = Path(tempfile.mkdtemp(prefix="kdr-"))
    registry = base / "registry"
    registry.mkdir()

    async def scenario() -> Report:
        ready = asyncio.Event()
        tasks = [asyncio.create_task(_driver(registry, socket_name, versions or ["v1.DRAPlugin"], health, ready,
                                             delay=delay))]
        try:
            if inodes is not None:
                await asyncio.wait_for(ready.wait(), timeout + delay)
                inodes.append((registry / socket_name).stat().st_ino)
            report = await run_checks(registry, node="n", timeout=timeout, kube_factory=_no_api_server)
            if inodes is not None:
                inodes.append((registry / socket_name).stat().st_ino)
            return report
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    try:
        return asyncio.run(scenario())
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _steps(report: Report) -> dict[str, tuple[Result, str]]:
    return {s.name: (s.result, s.detail) for s in report.steps}


def test_any_socket_name_in_a_subdirectory_is_found() -> None:
    steps = _steps(_check("sub/driver-registration"))
    assert steps["registration socket"] == (Result.PASS, "driver-registration")
    assert steps["GetInfo"][0] is Result.PASS
    assert steps["NotifyRegistrationStatus"][0] is Result.PASS
    assert steps["ResourceSlices for the node"][0] is Result.FAIL  # no API server here


def test_a_hidden_socket_is_ignored_as_the_kubelet_ignores_it() -> None:
    steps = _steps(_check(".hidden-reg.sock", timeout=0.5))
    assert steps["registration socket"][0] is Result.FAIL
    assert "no DRA registration socket" in steps["registration socket"][1]


def test_a_driver_started_after_the_checker_is_found() -> None:
    steps = _steps(_check(delay=1.0, timeout=5.0))
    assert steps["registration socket"][0] is Result.PASS


@pytest.mark.parametrize(("versions", "health", "want"), [
    (["v1.DRAPlugin", "v1.DRAResourceHealth", "v1alpha1.DRAResourceHealth"], "v1", (Result.PASS, "v1.")),
    (["v1.DRAPlugin", "v1alpha1.DRAResourceHealth"], "v1alpha1", (Result.PASS, "v1alpha1.")),
    (["v1.DRAPlugin", "v1.DRAResourceHealth"], "unimplemented", (Result.SKIP, "UNIMPLEMENTED")),
    (["v1.DRAPlugin"], "none", (Result.SKIP, "advertises no health service")),
], ids=["v1-before-v1alpha1", "v1alpha1-only", "unimplemented", "none"])
def test_health_is_negotiated_as_the_kubelet_does(versions: list[str], health: str, want: tuple[Result, str]) -> None:
    result, detail = _steps(_check(versions=versions, health=health))["health stream"]
    assert result is want[0] and want[1] in detail, detail


def test_the_kubelet_restart_re_dials_the_existing_socket_and_deletes_nothing() -> None:
    inodes: list[int] = []
    steps = _steps(_check(inodes=inodes))
    assert steps["kubelet restart: re-register"][0] is Result.PASS, steps
    assert "re-registered in" in steps["kubelet restart: re-register"][1]
    assert len(inodes) == 2 and inodes[0] == inodes[1]  # the driver's own socket, never deleted
