"""``kubeaccel plugin``: run / devices / check, their error paths, signals, and the checker's verdicts.

Matrix: ``plugin check`` passes against our daemon and fails, naming each fault, against a
deliberately broken plugin (stream that ends, never re-registers; accepting unknown IDs only warns) and when
no plugin registers; ``plugin devices`` prints the table; bad input (missing config, bad key,
missing socket dir) prints an error and a hint with no traceback; the real ``kubeaccel plugin
run`` process registers, re-registers after SIGHUP with the new config, and stops cleanly on
SIGTERM removing its socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import yaml
from click.testing import CliRunner
from fixtures.plugin import PluginDaemon, short_socket_dir, write_sim_config

from kubeaccel.cli import cli, main
from kubeaccel.conformance import Result
from kubeaccel.devices.config import load_config
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.checker import run_checks
from kubeaccel.plugin.daemon import BackgroundDaemon, Daemon
from kubeaccel.plugin.kubelet import KubeletStandIn

KUBEACCEL = Path(sys.executable).parent / "kubeaccel"


def test_check_passes_against_our_daemon(plugin_daemon: PluginDaemon) -> None:
    result = CliRunner().invoke(cli, ["plugin", "check", "--socket-dir", str(plugin_daemon.socket_dir),
                                      "--timeout", "5"])
    assert result.exit_code == 0, result.output
    assert "PASS" in result.output and "FAIL" not in result.output and "WARN" not in result.output
    assert "re-registered in" in result.output


class _BrokenPlugin(pb_grpc.DevicePluginServicer):
    """Everything a careless plugin gets wrong."""

    async def GetDevicePluginOptions(self, request, context):  # type: ignore[no-untyped-def]
        return pb.DevicePluginOptions()

    async def ListAndWatch(self, request, context) -> AsyncIterator[pb.ListAndWatchResponse]:  # type: ignore[no-untyped-def]
        yield pb.ListAndWatchResponse(devices=[pb.Device(ID="dev-0", health="Healthy")])
        # ... and then the stream ends, which makes the kubelet drop the resource.

    async def Allocate(self, request, context):  # type: ignore[no-untyped-def]
        return pb.AllocateResponse(container_responses=[pb.ContainerAllocateResponse()
                                                        for _ in request.container_requests])


async def _serve_broken_plugin(socket_dir: Path) -> None:
    server = grpc.aio.server()
    pb_grpc.add_DevicePluginServicer_to_server(_BrokenPlugin(), server)
    server.add_insecure_port(f"unix://{socket_dir}/broken.sock")
    await server.start()
    try:
        while not (socket_dir / "kubelet.sock").exists():
            await asyncio.sleep(0.01)
        async with grpc.aio.insecure_channel(f"unix://{socket_dir}/kubelet.sock") as channel:
            await pb_grpc.RegistrationStub(channel).Register(
                pb.RegisterRequest(version="v1beta1", endpoint="broken.sock", resource_name="example.com/broken",
                                   options=pb.DevicePluginOptions()), timeout=5)
        await asyncio.Event().wait()  # registers once only: never notices a kubelet restart
    finally:
        await server.stop(0)


def test_checker_fails_a_broken_plugin() -> None:
    socket_dir = short_socket_dir()

    async def scenario():  # type: ignore[no-untyped-def]
        plugin = asyncio.create_task(_serve_broken_plugin(socket_dir))
        try:
            return await run_checks(socket_dir, timeout=1.0)
        finally:
            plugin.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await plugin

    report = asyncio.run(scenario())
    verdicts = {s.name: (s.result, s.detail) for s in report.steps}
    assert not report.passed
    assert verdicts["Register"][0] is Result.PASS
    assert verdicts["ListAndWatch: stays open"] == (Result.FAIL, verdicts["ListAndWatch: stays open"][1])
    assert "stream ended" in verdicts["ListAndWatch: stays open"][1]
    # The kubelet never sends an unknown ID: accepting one harms no pod, so it is a warning.
    assert verdicts["Allocate: unknown ID"][0] is Result.WARN
    assert "allocated the unknown device" in verdicts["Allocate: unknown ID"][1]
    assert verdicts["GetPreferredAllocation"][0] is Result.SKIP
    assert verdicts["kubelet restart: re-register"][0] is Result.FAIL
    assert "no re-registration" in verdicts["kubelet restart: re-register"][1]


def test_check_without_any_plugin_fails(capsys: pytest.CaptureFixture[str]) -> None:
    socket_dir = short_socket_dir()
    with pytest.raises(SystemExit) as info:
        main(["plugin", "check", "--socket-dir", str(socket_dir), "--timeout", "0.3"])
    assert info.value.code == 1
    out = capsys.readouterr()
    assert "no plugin registered within 0.3s" in out.out and "FAIL" in out.err
    socket_dir.rmdir()


def test_checker_reports_a_rejected_registration() -> None:
    socket_dir = short_socket_dir()

    async def scenario():  # type: ignore[no-untyped-def]
        async def bad_register() -> None:
            while not (socket_dir / "kubelet.sock").exists():
                await asyncio.sleep(0.01)
            async with grpc.aio.insecure_channel(f"unix://{socket_dir}/kubelet.sock") as channel:
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await pb_grpc.RegistrationStub(channel).Register(
                        pb.RegisterRequest(version="v1alpha", endpoint="x.sock", resource_name="example.com/x"))
                assert info.value.code() is grpc.StatusCode.UNKNOWN  # the kubelet answers a plain Go error

        task = asyncio.create_task(bad_register())
        report = await run_checks(socket_dir, timeout=0.5)
        await task
        return report

    report = asyncio.run(scenario())
    assert [s.result for s in report.steps] == [Result.FAIL]
    assert "unsupported API version 'v1alpha'" in report.steps[0].detail


def test_devices_table(tmp_path: Path) -> None:
    config = write_sim_config(tmp_path / "c.yaml", tmp_path / "state.json", tmp_path / "dev")
    (tmp_path / "state.json").write_text('{"sim-1": "Unhealthy", "sim-3": "Absent"}')
    # The config path from the environment (the DaemonSet's way); an option would override it.
    result = CliRunner().invoke(cli, ["plugin", "devices"], env={"KUBEACCEL_PLUGIN_CONFIG": str(config)})
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines() if "example.com/sim" in line]
    assert len(rows) == 3
    assert "sim-1" in rows[1] and "Unhealthy" in rows[1]
    assert "sim-2" in rows[2] and "Healthy" in rows[2]
    assert "sim-3" not in result.output  # Absent: unplugged


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["plugin", "devices", "--config", "/nonexistent/plugin.yaml"], "does not exist"),
        (["plugin", "run", "--config", "{config}", "--socket-dir", "/nonexistent/dir"], "socket directory"),
        (["plugin", "run", "--config", "{bad}", "--socket-dir", "{dir}"], "resources[0].numaNodes"),
        (["plugin", "devices", "--config", "{bad}"], "resources[0].numaNodes"),
        (["plugin", "check", "--socket-dir", "/nonexistent/dir", "--timeout", "1"], "does not exist"),
    ],
)
def test_bad_input_prints_error_without_traceback(tmp_path: Path, args: list[str], message: str) -> None:
    config = write_sim_config(tmp_path / "c.yaml", tmp_path / "s.json", tmp_path / "dev")
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"resources": [{"name": "example.com/sim", "backend": "simulated", "count": 2,
                                                  "numaNodes": -1}]}))
    values = {"config": str(config), "bad": str(bad), "dir": str(tmp_path)}
    argv = [a.format(**values) for a in args]
    proc = subprocess.run([str(KUBEACCEL), *argv], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "error:" in proc.stderr and message in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unwritable_socket_dir(tmp_path: Path) -> None:
    # Root may write anywhere, so the daemon runs as nobody against a root-owned directory (the
    # socket dir is checked before the config is read, so nobody need not read the config).
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is needed to drop privileges"
    config = write_sim_config(tmp_path / "c.yaml", tmp_path / "s.json", tmp_path / "dev")
    socket_dir = short_socket_dir()
    socket_dir.chmod(0o755)
    argv = [str(KUBEACCEL), "plugin", "run", "--config", str(config), "--socket-dir", str(socket_dir)]
    if os.geteuid() == 0:
        argv = [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *argv]
    else:
        socket_dir.chmod(0o555)
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
    socket_dir.rmdir()
    assert proc.returncode == 2, proc.stderr
    assert "is not writable" in proc.stderr and "hint:" in proc.stderr and "Traceback" not in proc.stderr


def test_run_process_signals(tmp_path: Path) -> None:
    socket_dir = short_socket_dir()
    config = write_sim_config(tmp_path / "c.yaml", tmp_path / "s.json", tmp_path / "dev")
    proc = subprocess.Popen([str(KUBEACCEL), "plugin", "run", "--config", str(config), "--socket-dir",
                             str(socket_dir), "--log-level", "warning"], stderr=subprocess.PIPE, text=True)

    async def scenario() -> None:
        async with KubeletStandIn(socket_dir) as kubelet:
            _, first = await kubelet.next_registration(timeout=20)
            assert first.resource_name == "example.com/sim"
            # SIGHUP: reload a config with a second resource; only the new one registers, the
            # unchanged one keeps serving.
            conf = yaml.safe_load(config.read_text())
            conf["resources"].append({"name": "example.com/other", "backend": "simulated", "count": 1})
            config.write_text(yaml.safe_dump(conf))
            os.kill(proc.pid, signal.SIGHUP)
            assert (await kubelet.next_registration(timeout=10))[1].resource_name == "example.com/other"
            with pytest.raises(TimeoutError):
                await kubelet.next_registration(timeout=0.5)
            # A broken config on SIGHUP is logged and the running config kept.
            config.write_text("resources: [oops")
            os.kill(proc.pid, signal.SIGHUP)
            await asyncio.sleep(0.3)
            assert proc.poll() is None

    try:
        asyncio.run(scenario())
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert "config reload failed" in stderr and "not valid YAML" in stderr, stderr
    assert "Traceback" not in stderr
    assert [p.name for p in socket_dir.iterdir()] == []  # our sockets removed on the way out
    socket_dir.rmdir()


def test_check_picks_the_named_resource(tmp_path: Path) -> None:
    socket_dir = short_socket_dir()
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump({"resources": [
        {"name": "example.com/sim", "backend": "simulated", "count": 2},
        {"name": "example.com/other", "backend": "simulated", "count": 3, "idPrefix": "o"},
    ]}))
    with BackgroundDaemon(Daemon(lambda: load_config(config), socket_dir)):
        report = asyncio.run(run_checks(socket_dir, timeout=5, resource="example.com/other"))
    socket_dir.rmdir()
    assert report.passed, report.steps
    assert report.resource == "example.com/other"
    first_list = next(s for s in report.steps if s.name == "ListAndWatch: first list")
    assert first_list.detail == "3 devices, 3 healthy"
