"""Process supervision with real processes: PID records, SIGTERM then SIGKILL, reused PIDs left alone."""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import time
from pathlib import Path

import pytest

from kubeaccel.cluster import process
from kubeaccel.cluster.layout import Layout
from kubeaccel.cluster.lock import locked
from kubeaccel.cluster.ports import pick_free, require_free
from kubeaccel.errors import ConfigError, KubeaccelError

IGNORES_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); " \
    "time.sleep(600)"


def test_stop_escalates_to_sigkill_and_removes_records(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    stubborn = process.start(layout, "stubborn", [sys.executable, "-c", IGNORES_TERM])
    polite = process.start(layout, "polite", ["sleep", "600"])
    assert stubborn.alive() and polite.alive()
    assert {r.name for r in process.records(layout)} == {"stubborn", "polite"}
    stopped = process.stop_all(layout, grace=0.5)
    assert sorted(stopped) == ["polite", "stubborn"]
    assert not stubborn.alive() and not polite.alive()
    assert process.records(layout) == []


def test_record_of_a_reused_pid_is_not_alive(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    layout.run.mkdir()
    # Our own PID with a wrong start time: what a PID file looks like after the PID was reused.
    layout.pid_file("ghost").write_text(json.dumps({"pid": os.getpid(), "start_ticks": 1, "argv": ["x"]}))
    record = process.read_record(layout, "ghost")
    assert record is not None and not record.alive()
    assert process.stop_all(layout) == []  # and we were not signalled
    assert not layout.pid_file("ghost").exists()


def test_output_goes_to_the_log(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    process.start(layout, "echo", ["sh", "-c", "echo hello-from-child"])
    deadline = time.monotonic() + 10
    while "hello-from-child" not in process.log_tail(layout, "echo") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "hello-from-child" in process.log_tail(layout, "echo")


def test_missing_binary_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(KubeaccelError, match="cannot start etcd") as err:
        process.start(Layout(tmp_path), "etcd", [str(tmp_path / "no-such-etcd")])
    assert "bootstrap" in (err.value.hint or "")


def test_port_in_use_is_a_config_error() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} .* in use") as err:
            require_free(port, "--apiserver-port")
        assert "--apiserver-port" in (err.value.hint or "")
    picked = pick_free(3)
    assert len(set(picked)) == 3


def test_second_command_on_the_same_state_dir_is_refused(tmp_path: Path) -> None:
    layout = Layout(tmp_path)
    with locked(layout), pytest.raises(KubeaccelError, match="another kubeaccel cluster command"), locked(layout):
        pass


def test_stop_all_handles_processes_started_elsewhere(tmp_path: Path) -> None:
    # A cluster started by another `kubeaccel` process: not our child, found only by its record.
    layout = Layout(tmp_path)
    rec = process.start(layout, "sleeper", ["sleep", "600"])
    os.kill(rec.pid, signal.SIGSTOP)  # a stopped process still dies from SIGKILL
    assert process.stop_all(layout, grace=0.2) == ["sleeper"]
    assert not rec.alive()
