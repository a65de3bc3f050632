"""``plugin check`` agrees with the kubelet (v1.37.2's device manager): plugins written the way others
write them pass, with WARN where an answer is legal but weaker, in either start order.

Matrix:
- the Go plugin (``bench/goplugin``, the kubelet's own stubs, grpc-go, fsnotify; built by
  ``scripts/bootstrap.d/35-go-references.sh``, a missing binary FAILS) answering plain Go errors
  (gRPC ``UNKNOWN``): passes with exactly one WARN ("Allocate: unknown ID"), checker first and
  plugin first (it then registers, sees ``kubelet.sock`` appear and restarts its server: a later
  Register replaces the earlier one); with ``-errors status`` it passes with no WARN; with
  ``kubelet.sock`` in another directory than its own socket (``--kubelet-socket``) too;
- a Python plugin that behaves like NVIDIA's (fixed socket, server stopped on a failed Register and
  recreated whenever ``kubelet.sock`` is created), in both orders;
- kubeaccel's own daemon: every step PASS or SKIP, no WARN;
- the stand-in does what the kubelet does inside ``Register``: waits for an endpoint that is not yet
  listening (``dial`` blocks up to 10 s), refuses one whose ``GetDevicePluginOptions`` fails (a
  plain error: ``UNKNOWN``);
- WARN, not FAIL, for answers the kubelet copes with: options that differ from Register's, a
  GetPreferredAllocation answer of the wrong size, an unknown ID allocated;
- ``plugin check --json`` carries the WARN and exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner
from fixtures.goref import go_binary
from fixtures.plugin import PluginDaemon, short_socket_dir
from inotify_simple import INotify, flags

from kubeaccel.cli import cli, main
from kubeaccel.conformance import Result
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.checker import Report, run_checks
from kubeaccel.plugin.kubelet import KubeletStandIn

GO_RESOURCE = "example.com/go"


def _verdicts(report: Report) -> dict[str, Result]:
    return {s.name: s.result for s in report.steps}


def _table(report: Report) -> str:
    return "\n".join(f"{s.name}: {s.result} {s.detail}" for s in report.steps)


@contextlib.contextmanager
def _go_plugin(socket_dir: Path, *flags: str) -> Iterator[subprocess.Popen[bytes]]:
    state = Path(tempfile.mkdtemp(prefix="kgs-"))
    proc = subprocess.Popen([str(go_binary("bench/goplugin", "goplugin")), *flags, str(socket_dir), GO_RESOURCE, "4",
                             "1", str(state / "state.json")], stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(state, ignore_errors=True)


def _only_unknown_id_warns(report: Report) -> None:
    table = _table(report)
    assert report.passed, table
    assert report.warned == ["Allocate: unknown ID"], table
    unknown = next(s for s in report.steps if s.name == "Allocate: unknown ID")
    assert "UNKNOWN" in unknown.detail and "INVALID_ARGUMENT is better" in unknown.detail
    assert _verdicts(report)["kubelet restart: re-register"] is Result.PASS


@pytest.mark.slow
def test_go_plugin_with_plain_errors_checker_first() -> None:
    socket_dir = short_socket_dir()

    async def scenario() -> Report:
        checking = asyncio.create_task(run_checks(socket_dir, timeout=10))
        await asyncio.sleep(0.3)  # the checker's kubelet.sock is there before the plugin starts
        with _go_plugin(socket_dir):
            return await checking

    _only_unknown_id_warns(asyncio.run(scenario()))
    shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.mark.slow
def test_go_plugin_with_plain_errors_plugin_first() -> None:
    socket_dir = short_socket_dir()
    with _go_plugin(socket_dir) as proc:
        # The plugin serves and tries to register before any kubelet.sock exists; when the checker's
        # appears it registers, then restarts its server on the create event and registers again.
        for _ in range(500):
            if (socket_dir / "goplugin.sock").exists():
                break
            assert proc.poll() is None
            asyncio.run(asyncio.sleep(0.01))
        report = asyncio.run(run_checks(socket_dir, timeout=10))
    _only_unknown_id_warns(report)
    shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.mark.slow
def test_go_plugin_with_status_errors_has_no_warning() -> None:
    socket_dir = short_socket_dir()
    with _go_plugin(socket_dir, "-errors", "status"):
        report = asyncio.run(run_checks(socket_dir, timeout=10))
    shutil.rmtree(socket_dir, ignore_errors=True)
    assert report.passed and report.warned == [], _table(report)
    assert "INVALID_ARGUMENT" in next(s.detail for s in report.steps if s.name == "Allocate: unknown ID")


@pytest.mark.slow
def test_go_plugin_with_kubelet_socket_elsewhere() -> None:
    plugin_dir, kubelet_dir = short_socket_dir(), short_socket_dir()
    kubelet_socket = kubelet_dir / "kubelet.sock"
    with _go_plugin(plugin_dir, "-kubelet-socket", str(kubelet_socket)):
        report = asyncio.run(run_checks(plugin_dir, timeout=10, kubelet_socket=kubelet_socket))
    _only_unknown_id_warns(report)
    assert report.endpoint == "goplugin.sock"
    for d in (plugin_dir, kubelet_dir):
        shutil.rmtree(d, ignore_errors=True)


class _NvidiaLike(pb_grpc.DevicePluginServicer):
    async def GetDevicePluginOptions(self, request, context):  # type: ignore[no-untyped-def]
        return pb.DevicePluginOptions(get_preferred_allocation_available=True)

    async def ListAndWatch(self, request, context) -> AsyncIterator[pb.ListAndWatchResponse]:  # type: ignore[no-untyped-def]
        yield pb.ListAndWatchResponse(devices=[pb.Device(ID=f"GPU-{i}", health="Healthy") for i in range(2)])
        await asyncio.Event().wait()

    async def GetPreferredAllocation(self, request, context):  # type: ignore[no-untyped-def]
        return pb.PreferredAllocationResponse(container_responses=[
            pb.ContainerPreferredAllocationResponse(deviceIDs=list(r.must_include_deviceIDs) + [
                i for i in r.available_deviceIDs if i not in r.must_include_deviceIDs][
                    :r.allocation_size - len(r.must_include_deviceIDs)])
            for r in request.container_requests])

    async def Allocate(self, request, context):  # type: ignore[no-untyped-def]
        for r in request.container_requests:
            if any(not i.startswith("GPU-") for i in r.devices_ids):
                await context.abort(grpc.StatusCode.UNKNOWN, f"invalid allocation request: unknown device: {r}")
        return pb.AllocateResponse(container_responses=[
            pb.ContainerAllocateResponse(envs={"NVIDIA_VISIBLE_DEVICES": ",".join(r.devices_ids)})
            for r in request.container_requests])


async def _nvidia_like(plugin_dir: Path, kubelet_socket: Path) -> None:
    """What NVIDIA's plugin does (cmd/nvidia-device-plugin/main.go, internal/plugin/server.go): serve
    on a fixed socket, register; a failed Register stops the server (its socket removed) until the
    next try; every creation of kubelet.sock restarts it: server stopped, socket removed, served and
    registered anew."""
    socket = plugin_dir / "nvidia-gpu.sock"
    server: grpc.aio.Server | None = None

    async def start() -> None:
        nonlocal server
        socket.unlink(missing_ok=True)
        server = grpc.aio.server()
        pb_grpc.add_DevicePluginServicer_to_server(_NvidiaLike(), server)
        server.add_insecure_port(f"unix://{socket}")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"unix://{kubelet_socket}") as channel:
                await pb_grpc.RegistrationStub(channel).Register(pb.RegisterRequest(
                    version="v1beta1", endpoint=socket.name, resource_name="nvidia.com/gpu",
                    options=pb.DevicePluginOptions(get_preferred_allocation_available=True)), timeout=5,
                    wait_for_ready=True)
        except grpc.aio.AioRpcError:
            await stop()

    async def stop() -> None:
        nonlocal server
        if server is not None:
            await server.stop(None)
            server = None
        socket.unlink(missing_ok=True)

    inotify = INotify()
    inotify.add_watch(kubelet_socket.parent, flags.CREATE)
    ready = asyncio.Event()
    asyncio.get_running_loop().add_reader(inotify.fileno(), ready.set)
    try:
        await start()
        while True:
            await ready.wait()
            ready.clear()
            if any(event.name == kubelet_socket.name for event in inotify.read(timeout=0)):
                await stop()  # "inotify: kubelet.sock created, restarting."
                await start()
    finally:
        asyncio.get_running_loop().remove_reader(inotify.fileno())
        inotify.close()
        await stop()


@pytest.mark.parametrize("plugin_first", [True, False], ids=["plugin-first", "checker-first"])
def test_a_plugin_that_restarts_like_nvidias_passes_in_either_order(plugin_first: bool) -> None:
    plugin_dir, kubelet_dir = short_socket_dir(), short_socket_dir()
    kubelet_socket = kubelet_dir / "kubelet.sock"

    async def scenario() -> Report:
        if plugin_first:
            plugin = asyncio.create_task(_nvidia_like(plugin_dir, kubelet_socket))
            await asyncio.sleep(0.3)
            checking = asyncio.create_task(run_checks(plugin_dir, timeout=10, kubelet_socket=kubelet_socket))
        else:
            checking = asyncio.create_task(run_checks(plugin_dir, timeout=10, kubelet_socket=kubelet_socket))
            await asyncio.sleep(0.3)
            plugin = asyncio.create_task(_nvidia_like(plugin_dir, kubelet_socket))
        try:
            return await checking
        finally:
            plugin.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await plugin

    report = asyncio.run(scenario())
    for d in (plugin_dir, kubelet_dir):
        shutil.rmtree(d, ignore_errors=True)
    assert report.passed, _table(report)
    assert report.warned == ["Allocate: unknown ID"], _table(report)
    assert report.resource == "nvidia.com/gpu" and report.endpoint == "nvidia-gpu.sock"
    if plugin_first:  # it registered, then restarted on kubelet.sock's create event: the checker followed
        assert any("later registration" in s.detail for s in report.steps), _table(report)


def test_our_daemon_passes_with_no_warning(plugin_daemon: PluginDaemon) -> None:
    report = asyncio.run(run_checks(plugin_daemon.socket_dir, timeout=5))
    assert report.passed, _table(report)
    assert {s.result for s in report.steps} <= {Result.PASS, Result.SKIP}, _table(report)
    assert _verdicts(report)["Allocate: unknown ID"] is Result.PASS


class _Weaker(pb_grpc.DevicePluginServicer):
    """Answers the kubelet copes with: options unlike Register's, a preferred allocation of the wrong
    size, an unknown ID allocated."""

    async def GetDevicePluginOptions(self, request, context):  # type: ignore[no-untyped-def]
        return pb.DevicePluginOptions(get_preferred_allocation_available=True)

    async def ListAndWatch(self, request, context) -> AsyncIterator[pb.ListAndWatchResponse]:  # type: ignore[no-untyped-def]
        yield pb.ListAndWatchResponse(devices=[pb.Device(ID=f"d-{i}", health="Healthy") for i in range(3)])
        await asyncio.Event().wait()

    async def GetPreferredAllocation(self, request, context):  # type: ignore[no-untyped-def]
        return pb.PreferredAllocationResponse(container_responses=[
            pb.ContainerPreferredAllocationResponse(deviceIDs=["d-0"]) for _ in request.container_requests])

    async def Allocate(self, request, context):  # type: ignore[no-untyped-def]
        return pb.AllocateResponse(container_responses=[pb.ContainerAllocateResponse()
                                                        for _ in request.container_requests])


async def _serve(socket_dir: Path, servicer: pb_grpc.DevicePluginServicer, *, listen_after: float = 0.0,
                 options: pb.DevicePluginOptions | None = None) -> None:
    """Register on every creation of kubelet.sock (inotify), serving anew when our socket was deleted;
    the first time, listen only ``listen_after`` s after Register is sent."""
    endpoint = socket_dir / "p.sock"
    kubelet_socket = socket_dir / "kubelet.sock"
    servers: list[grpc.aio.Server] = []

    async def serve(delay: float) -> None:
        await asyncio.sleep(delay)
        server = grpc.aio.server()
        pb_grpc.add_DevicePluginServicer_to_server(servicer, server)
        server.add_insecure_port(f"unix://{endpoint}")
        await server.start()
        servers.append(server)

    async def register() -> None:
        async with grpc.aio.insecure_channel(f"unix://{kubelet_socket}") as channel:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await pb_grpc.RegistrationStub(channel).Register(pb.RegisterRequest(
                    version="v1beta1", endpoint=endpoint.name, resource_name="example.com/p",
                    options=options or pb.DevicePluginOptions()), timeout=15, wait_for_ready=True)

    inotify = INotify()
    inotify.add_watch(socket_dir, flags.CREATE)
    ready = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_reader(inotify.fileno(), ready.set)
    try:
        await asyncio.gather(serve(listen_after), register())
        while True:
            await ready.wait()
            ready.clear()
            if any(event.name == kubelet_socket.name for event in inotify.read(timeout=0)):
                if not endpoint.exists():
                    await serve(0)
                await register()
    finally:
        loop.remove_reader(inotify.fileno())
        inotify.close()
        for server in servers:
            await server.stop(None)


def _check_against(servicer: pb_grpc.DevicePluginServicer, **serve: object) -> Report:
    socket_dir = short_socket_dir()

    async def scenario() -> Report:
        plugin = asyncio.create_task(_serve(socket_dir, servicer, **serve))  # type: ignore[arg-type]
        try:
            return await run_checks(socket_dir, timeout=5)
        finally:
            plugin.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await plugin

    try:
        return asyncio.run(scenario())
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_answers_the_kubelet_copes_with_are_warnings() -> None:
    report = _check_against(_Weaker())
    verdicts = _verdicts(report)
    assert report.passed, _table(report)
    assert verdicts["GetDevicePluginOptions"] is Result.WARN  # Register said no preferred allocation
    assert verdicts["GetPreferredAllocation"] is Result.WARN  # 1 device for 2
    assert verdicts["Allocate: unknown ID"] is Result.WARN
    assert verdicts["Allocate: healthy ID, twice"] is Result.PASS
    detail = {s.name: s.detail for s in report.steps}
    assert "the kubelet uses these" in detail["GetDevicePluginOptions"]
    assert "chooses the rest itself" in detail["GetPreferredAllocation"]


def test_an_endpoint_that_listens_after_register_is_dialled_until_it_answers() -> None:
    # client.go, dial: grpc.WithBlock() within 10 s; the kubelet accepts a plugin still starting up.
    report = _check_against(_Weaker(), listen_after=1.0,
                            options=pb.DevicePluginOptions(get_preferred_allocation_available=True))
    assert _verdicts(report)["Register"] is Result.PASS, _table(report)


class _NoOptions(_Weaker):
    async def GetDevicePluginOptions(self, request, context):  # type: ignore[no-untyped-def]
        await context.abort(grpc.StatusCode.INTERNAL, "options broken")


def test_failing_options_fail_the_registration_as_the_kubelet_does() -> None:
    socket_dir = short_socket_dir()

    async def scenario() -> tuple[grpc.StatusCode, str]:
        server = grpc.aio.server()
        pb_grpc.add_DevicePluginServicer_to_server(_NoOptions(), server)
        server.add_insecure_port(f"unix://{socket_dir}/p.sock")
        await server.start()
        try:
            async with KubeletStandIn(socket_dir) as kubelet, grpc.aio.insecure_channel(
                    f"unix://{kubelet.socket_path}") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await pb_grpc.RegistrationStub(channel).Register(pb.RegisterRequest(
                        version="v1beta1", endpoint="p.sock", resource_name="example.com/p"), timeout=5)
                assert kubelet.received.empty()
                return info.value.code(), info.value.details() or ""
        finally:
            await server.stop(None)

    code, details = asyncio.run(scenario())
    shutil.rmtree(socket_dir, ignore_errors=True)
    assert code is grpc.StatusCode.UNKNOWN
    assert "failed to get device plugin options: INTERNAL: options broken" in details


@pytest.mark.slow
def test_check_json_carries_the_warning_and_exits_zero() -> None:
    socket_dir = short_socket_dir()
    with _go_plugin(socket_dir):
        result = CliRunner().invoke(cli, ["plugin", "check", "--socket-dir", str(socket_dir), "--timeout", "10",
                                          "--json"])
    shutil.rmtree(socket_dir, ignore_errors=True)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["passed"] is True and data["warned"] == ["Allocate: unknown ID"], data
    assert data["resource"] == GO_RESOURCE
    assert any(step["result"] == "WARN" for step in data["steps"])


def test_bad_kubelet_socket_is_one_clear_error(capsys: pytest.CaptureFixture[str]) -> None:
    socket_dir = short_socket_dir()
    with pytest.raises(SystemExit) as info:
        main(["plugin", "check", "--socket-dir", str(socket_dir), "--kubelet-socket", "/nonexistent/dir/kubelet.sock",
              "--timeout", "1"])
    os.rmdir(socket_dir)
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    assert "/nonexistent/dir" in err and "Traceback" not in err


def test_a_missing_go_reference_fails_naming_the_step(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import fixtures.goref as goref

    monkeypatch.setattr(goref, "CACHE", tmp_path)
    with pytest.raises(pytest.fail.Exception, match=r"35-go-references\.sh"):
        goref.go_binary("bench/goplugin", "goplugin")


def test_our_daemon_started_after_the_checker_passes_with_no_warning(tmp_path: Path) -> None:
    from fixtures.plugin import write_sim_config

    from kubeaccel.devices.config import load_config
    from kubeaccel.plugin.daemon import BackgroundDaemon, Daemon

    socket_dir = short_socket_dir()
    config = write_sim_config(tmp_path / "c.yaml", tmp_path / "state.json", tmp_path / "dev")

    async def scenario() -> Report:
        checking = asyncio.ensure_future(run_checks(socket_dir, timeout=10))
        await asyncio.sleep(0.3)  # kubelet.sock is there before the daemon starts
        with BackgroundDaemon(Daemon(lambda: load_config(config), socket_dir)):
            return await checking

    report = asyncio.run(scenario())
    shutil.rmtree(socket_dir, ignore_errors=True)
    assert report.passed, _table(report)
    assert {s.result for s in report.steps} <= {Result.PASS, Result.SKIP}, _table(report)


class _Flapping(_Weaker):
    """Ends every ListAndWatch after one list and registers again: the kubelet marks its devices
    unhealthy each time (PluginDisconnected), so following it forever would hide a broken plugin."""

    def __init__(self, socket_dir: Path) -> None:
        self.socket_dir = socket_dir
        self.tasks: set[asyncio.Task[None]] = set()

    async def _register(self) -> None:
        await asyncio.sleep(0.05)
        async with grpc.aio.insecure_channel(f"unix://{self.socket_dir}/kubelet.sock") as channel:
            with contextlib.suppress(grpc.aio.AioRpcError):
                await pb_grpc.RegistrationStub(channel).Register(pb.RegisterRequest(
                    version="v1beta1", endpoint="p.sock", resource_name="example.com/p"), timeout=5)

    async def ListAndWatch(self, request, context) -> AsyncIterator[pb.ListAndWatchResponse]:  # type: ignore[no-untyped-def]
        yield pb.ListAndWatchResponse(devices=[pb.Device(ID="d-0", health="Healthy")])
        task = asyncio.get_running_loop().create_task(self._register())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)


def test_a_plugin_that_keeps_restarting_fails_the_stream_step() -> None:
    socket_dir = short_socket_dir()

    async def scenario() -> Report:
        plugin = asyncio.create_task(_serve(socket_dir, _Flapping(socket_dir)))
        try:
            return await run_checks(socket_dir, timeout=3)
        finally:
            plugin.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await plugin

    report = asyncio.run(scenario())
    shutil.rmtree(socket_dir, ignore_errors=True)
    stays = next(s for s in report.steps if s.name == "ListAndWatch: stays open")
    assert stays.result is Result.FAIL and "keeps restarting" in stays.detail, _table(report)
