"""The daemon's hardening (issue 12): never blocked, owns its socket safely, bounded everywhere.

Matrix, each against the real ``kubeaccel plugin run`` process or the in-process daemon:
a kubelet that accepts Register but never answers stalls neither supervision nor SIGTERM;
SIGHUP right after start does not kill; SIGTERM exits within a second in every state (no
kubelet, registered with streams open, hung registration, socket dir gone); a second daemon
with the same config refuses the live socket instead of taking it over; the socket mode is 0600
under any umask; bad paths and addresses are exit 2 with a hint; the metrics server holds
hundreds of idle connections without a thread each and drops them after its timeout; error
texts stay bounded for 10,000 IDs and a 1 MB ID; the socket dir vanishing is one log line and
the daemon serves again when it is back; SIGHUP keeps unchanged resources' streams open; an
optional resource skipped next to others works in run, devices and reload; a failing reset is
one log line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import yaml
from fixtures.plugin import SIM_RESOURCE, PluginDaemon, short_socket_dir, write_sim_config

from kubeaccel.devices.config import load_config
from kubeaccel.plugin import metrics as metrics_module
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.daemon import BackgroundDaemon, Daemon
from kubeaccel.plugin.kubelet import KubeletStandIn
from kubeaccel.plugin.server import socket_name

KUBEACCEL = Path(sys.executable).parent / "kubeaccel"
SOCKET = socket_name(SIM_RESOURCE)
# SIGTERM must end the daemon within 1 s; the margin is for a loaded 2-core CI machine.
EXIT_WITHIN_S = 1.5


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    d = short_socket_dir()
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _start(config: Path, socket_dir: Path, *extra: str, umask: int | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(KUBEACCEL), "plugin", "run", "--config", str(config), "--socket-dir", str(socket_dir), *extra],
        stderr=subprocess.PIPE, text=True, umask=-1 if umask is None else umask,
    )


def _wait_for(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _catches(pid: int, sig: int) -> bool:
    """Whether the process has a handler for ``sig`` (SigCgt in /proc/PID/status)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = int(next(line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), 16)
    return bool(mask & (1 << (sig - 1)))


def _terminate(proc: subprocess.Popen[str]) -> float:
    """SIGTERM → exit: seconds taken; the exit must be clean."""
    start = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    took = time.monotonic() - start
    stderr = proc.stderr.read() if proc.stderr else ""
    assert code == 0, stderr[-2000:]
    assert "Traceback" not in stderr, stderr
    return took


class _HungRegistration(pb_grpc.RegistrationServicer):
    """A kubelet that accepts the Register call and never answers it."""

    def __init__(self) -> None:
        self.calls = 0

    async def Register(self, request, context):  # type: ignore[no-untyped-def]
        self.calls += 1
        await asyncio.Event().wait()


class _HungKubelet:
    def __init__(self, socket_dir: Path) -> None:
        self.path = socket_dir / "kubelet.sock"
        self.servicer = _HungRegistration()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: grpc.aio.Server | None = None

    def __enter__(self) -> _HungKubelet:
        self._thread.start()

        async def start() -> None:
            self._server = grpc.aio.server()
            pb_grpc.add_RegistrationServicer_to_server(self.servicer, self._server)
            self._server.add_insecure_port(f"unix://{self.path}")
            await self._server.start()

        asyncio.run_coroutine_threadsafe(start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        async def stop() -> None:
            assert self._server is not None
            await self._server.stop(0)

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)


def test_hung_registration_blocks_neither_supervision_nor_sigterm(tmp_path: Path, socket_dir: Path) -> None:
    config = write_sim_config(tmp_path / "c.yaml", tmp_path / "s.json", tmp_path / "dev")
    with _HungKubelet(socket_dir) as kubelet:
        proc = _start(config, socket_dir)
        try:
            ours = socket_dir / SOCKET
            _wait_for(lambda: kubelet.servicer.calls >= 1 and ours.exists())
            # Supervision goes on while Register hangs: a deleted socket is served again at once.
            ours.unlink()
            start = time.monotonic()
            _wait_for(ours.exists, timeout=5)
            assert time.monotonic() - start < 1.0
            assert _terminate(proc) < EXIT_WITHIN_S
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_early_sighup_does_not_kill_and_sigterm_is_prompt_in_every_state(tmp_path: Path, socket_dir: Path) -> None:
    config = write_sim_config(tmp_path / "c.yaml", tmp_path / "s.json", tmp_path / "dev")
    proc = _start(config, socket_dir)
    try:
        # The handler is in place as soon as `plugin run` runs (only the interpreter's own start-up
        # and the CLI's dispatch precede it), then SIGHUPs through imports, config and backends.
        _wait_for(lambda: _catches(proc.pid, signal.SIGHUP), timeout=20)
        assert not (socket_dir / SOCKET).exists()  # caught before the daemon started serving
        for _ in range(10):
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.03)
        ours = socket_dir / SOCKET
        _wait_for(ours.exists)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr and proc.poll() is not None else ''
        # State: no kubelet, registration backing off.
        assert _terminate(proc) < EXIT_WITHIN_S
        assert not ours.exists()  # our socket removed on the way out

        # State: registered, a ListAndWatch stream open.
        proc = _start(config, socket_dir)

        async def registered_and_streaming() -> float:
            async with KubeletStandIn(socket_dir) as kubelet:
                _, request = await kubelet.next_registration(timeout=20)
                async with kubelet.plugin_channel(request.endpoint) as channel:
                    stream = pb_grpc.DevicePluginStub(channel).ListAndWatch(pb.Empty())
                    await stream.read()
                    return await asyncio.to_thread(_terminate, proc)

        assert asyncio.run(registered_and_streaming()) < EXIT_WITHIN_S

        # State: the socket directory is gone.
        proc = _start(config, socket_dir)
        _wait_for(ours.exists)
        shutil.rmtree(socket_dir)
        time.sleep(0.3)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr and proc.poll() is not None else ''
        assert _terminate(proc) < EXIT_WITHIN_S
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_second_daemon_refuses_the_live_socket(tmp_path: Path, socket_dir: Path) -> None:
    config = write_sim_config(tmp_path / "c.yaml", tmp_path / "s.json", tmp_path / "dev")

    async def main() -> None:
        async with KubeletStandIn(socket_dir) as kubelet:
            first = _start(config, socket_dir)
            try:
                await kubelet.next_registration(timeout=20)
                before = os.stat(socket_dir / SOCKET).st_ino
                second = await asyncio.to_thread(
                    subprocess.run,
                    [str(KUBEACCEL), "plugin", "run", "--config", str(config), "--socket-dir", str(socket_dir)],
                    capture_output=True, text=True, timeout=60, check=False,
                )
                assert second.returncode == 2, second.stderr
                assert f"another process is serving on {socket_dir / SOCKET}" in second.stderr
                assert "hint:" in second.stderr and "Traceback" not in second.stderr
                # The first daemon's socket is untouched, and no Register storm followed.
                assert os.stat(socket_dir / SOCKET).st_ino == before
                await asyncio.sleep(0.3)
                assert kubelet.received.empty()
            finally:
                await asyncio.to_thread(_terminate, first)

    asyncio.run(main())


def test_socket_mode_is_explicit_whatever_the_umask(tmp_path: Path, socket_dir: Path) -> None:
    config = write_sim_config(tmp_path / "c.yaml", tmp_path / "s.json", tmp_path / "dev")
    proc = _start(config, socket_dir, umask=0)
    try:
        ours = socket_dir / SOCKET
        _wait_for(ours.exists)
        mode = os.stat(ours).st_mode
        assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    finally:
        _terminate(proc)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("relative", "is a relative path"),
        ("long", "over the 107-byte limit"),
        ("directory", "it exists and is a directory"),
        ("port-in-use", "already in use"),
        ("bad-addr", "cannot serve metrics on"),
        ("cdi-unwritable", "CDI spec directory"),
    ],
)
def test_bad_paths_and_addresses_exit_2_with_a_hint(tmp_path: Path, socket_dir: Path, case: str,
                                                    message: str) -> None:
    config = write_sim_config(tmp_path / "c.yaml", tmp_path / "s.json", tmp_path / "dev")
    args = ["--socket-dir", str(socket_dir)]
    cwd = None
    busy = None
    if case == "relative":
        cwd, args = str(socket_dir.parent), ["--socket-dir", socket_dir.name]
    elif case == "long":
        long_dir = socket_dir / ("d" * 90)
        long_dir.mkdir()
        args = ["--socket-dir", str(long_dir)]
    elif case == "directory":
        (socket_dir / SOCKET).mkdir()
    elif case == "port-in-use":
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        args += ["--metrics-port", str(busy.getsockname()[1])]
    elif case == "bad-addr":
        args += ["--metrics-port", "0", "--metrics-addr", "not an address"]
    elif case == "cdi-unwritable":
        blocker = tmp_path / "file"
        blocker.write_text("")
        config = write_sim_config(tmp_path / "c.yaml", tmp_path / "s.json", tmp_path / "dev", cdi=True)
        args += ["--cdi-dir", str(blocker / "cdi")]
    try:
        proc = subprocess.run([str(KUBEACCEL), "plugin", "run", "--config", str(config), *args], cwd=cwd,
                              capture_output=True, text=True, timeout=60, check=False)
    finally:
        if busy is not None:
            busy.close()
    assert proc.returncode == 2, proc.stderr
    assert message in proc.stderr and "hint:" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr) < 2000


def test_metrics_server_is_bounded(tmp_path: Path, socket_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(metrics_module, "REQUEST_TIMEOUT_S", 1.0)
    config = write_sim_config(tmp_path / "c.yaml", tmp_path / "s.json", tmp_path / "dev")
    daemon = Daemon(lambda: load_config(config), socket_dir, metrics_port=0)
    with BackgroundDaemon(daemon):
        port = daemon.metrics_port
        assert port
        threads = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(300)]
        try:
            time.sleep(0.3)
            assert threading.active_count() <= threads + 2  # no thread per connection
            # Idle connections are dropped after the request timeout; then scrapes work again.
            time.sleep(1.5)
            idle[0].settimeout(2)
            assert idle[0].recv(1) == b""
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            assert "kubeaccel_plugin_devices" in text
        finally:
            for s in idle:
                s.close()
    with pytest.raises(OSError):  # loopback by default: not reachable on another address
        s = socket.create_connection((_non_loopback_ip(), port), timeout=1)
        s.close()


def _non_loopback_ip() -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe, contextlib.suppress(OSError):
        probe.connect(("10.255.255.255", 1))
        ip = str(probe.getsockname()[0])
        if not ip.startswith("127."):
            return ip
    return "192.0.2.1"  # TEST-NET: nothing answers there either


def test_error_texts_are_bounded(plugin_daemon: PluginDaemon) -> None:
    async def main() -> None:
        async with KubeletStandIn(plugin_daemon.socket_dir) as kubelet:
            _, request = await kubelet.next_registration(timeout=10)
            async with kubelet.plugin_channel(request.endpoint) as channel:
                stub = pb_grpc.DevicePluginStub(channel)
                for ids in ([f"nope-{i}" for i in range(10_000)], ["x" * 1_000_000]):
                    with pytest.raises(grpc.aio.AioRpcError) as info:
                        await stub.Allocate(pb.AllocateRequest(container_requests=[
                            pb.ContainerAllocateRequest(devices_ids=ids)]), timeout=10)
                    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
                    assert len(info.value.details() or "") < 2000

    asyncio.run(main())


def test_socket_dir_vanishing_is_one_log_line_and_recovers(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    socket_dir = short_socket_dir()
    config = write_sim_config(tmp_path / "c.yaml", tmp_path / "s.json", tmp_path / "dev")
    caplog.set_level(logging.INFO, logger="kubeaccel")
    try:
        with BackgroundDaemon(Daemon(lambda: load_config(config), socket_dir)):
            shutil.rmtree(socket_dir)
            time.sleep(1.5)
            gone = [r for r in caplog.records if "disappeared" in r.getMessage()]
            assert len(gone) == 1
            assert len(caplog.records) <= 3  # no line per retry
            socket_dir.mkdir()

            async def back() -> None:
                async with KubeletStandIn(socket_dir) as kubelet:
                    await kubelet.next_registration(timeout=15)

            asyncio.run(back())
            assert any("is back" in r.getMessage() for r in caplog.records)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_sighup_keeps_unchanged_resources_streaming(plugin_daemon: PluginDaemon) -> None:
    async def main() -> None:
        async with KubeletStandIn(plugin_daemon.socket_dir) as kubelet:
            _, first = await kubelet.next_registration(timeout=10)
            async with kubelet.plugin_channel(first.endpoint) as channel:
                stream = pb_grpc.DevicePluginStub(channel).ListAndWatch(pb.Empty())
                assert len((await stream.read()).devices) == 4
                conf = yaml.safe_load(plugin_daemon.config_path.read_text())
                conf["resources"].append({"name": "example.com/other", "backend": "simulated", "count": 1})
                plugin_daemon.config_path.write_text(yaml.safe_dump(conf))
                plugin_daemon.runner.call(plugin_daemon.daemon.reload_requested.set)
                _, added = await kubelet.next_registration(timeout=10)
                assert added.resource_name == "example.com/other"
                # The unchanged resource's stream is the same one, still live.
                plugin_daemon.set_states({"sim-1": "Unhealthy"})
                response = await asyncio.wait_for(stream.read(), 5)
                assert {d.ID: d.health for d in response.devices}["sim-1"] == "Unhealthy"
                # A changed resource restarts: its old stream ends, it registers again.
                conf["resources"][0]["count"] = 2
                plugin_daemon.config_path.write_text(yaml.safe_dump(conf))
                plugin_daemon.runner.call(plugin_daemon.daemon.reload_requested.set)
                _, again = await kubelet.next_registration(timeout=10)
                assert again.resource_name == SIM_RESOURCE
                with contextlib.suppress(grpc.aio.AioRpcError):  # ended: EOF or the server's goaway
                    assert await asyncio.wait_for(stream.read(), 5) is grpc.aio.EOF
                assert stream.done()
                await asyncio.sleep(0.3)
                assert kubelet.received.empty()  # "other" was left alone

    asyncio.run(main())


def test_optional_resource_skipped_next_to_others(tmp_path: Path, socket_dir: Path) -> None:
    """issue 8 item 8: the skipped entry no longer shifts the others (the old zip() crash)."""
    config = tmp_path / "mixed.yaml"
    config.write_text(yaml.safe_dump({"resources": [
        {"name": "nvidia.com/gpu", "backend": "nvidia", "optional": True},
        {"name": "example.com/a", "backend": "simulated", "count": 1},
        {"name": "example.com/b", "backend": "simulated", "count": 2, "idPrefix": "b"},
    ]}))
    listing = subprocess.run([str(KUBEACCEL), "plugin", "devices", "--config", str(config)], capture_output=True,
                             text=True, timeout=60, check=False)
    assert listing.returncode == 0, listing.stderr
    assert "example.com/a" in listing.stdout and "b-1" in listing.stdout and "Traceback" not in listing.stderr
    daemon = Daemon(lambda: load_config(config), socket_dir)

    async def main() -> None:
        async with KubeletStandIn(socket_dir) as kubelet:
            names = {(await kubelet.next_registration(timeout=10))[1].resource_name for _ in range(2)}
            assert {"example.com/a", "example.com/b"} <= names
            runner.call(daemon.reload_requested.set)  # same config: nothing restarts, nothing crashes
            await asyncio.sleep(0.5)
            assert daemon.reloads == 1

    with BackgroundDaemon(daemon) as runner:
        asyncio.run(main())
