"""The supervisor on real processes standing in for components (no cluster needed): it restarts what dies
with the recorded command line and counts it, backs off a crash loop, waits for the state lock, never
touches what it does not supervise, and stops cleanly so `up`/`down` can work undisturbed."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.cluster import wait_for

from kubeaccel.cluster import lifecycle, process, supervisor
from kubeaccel.cluster.layout import Layout
from kubeaccel.cluster.lock import locked


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    layout = Layout(tmp_path)
    yield layout
    supervisor.stop(layout)
    process.stop_all(layout, grace=0.5)


def _current(layout: Layout, name: str) -> process.ProcessRecord:
    record = process.read_record(layout, name)
    assert record is not None
    return record


def test_a_killed_process_is_restarted_with_its_command_line_and_counted(layout: Layout) -> None:
    first = process.start(layout, "kube-scheduler", ["sleep", "600"])
    bystander = process.start(layout, "plugin", ["sleep", "600"])  # not supervised
    supervisor.start(layout)
    wait_for("supervisor watching", lambda: "supervising" in process.log_tail(layout, supervisor.NAME), timeout=20)
    os.kill(first.pid, signal.SIGKILL)
    wait_for("restart", lambda: _current(layout, "kube-scheduler").pid != first.pid, timeout=30)
    second = _current(layout, "kube-scheduler")
    assert second.alive() and second.argv == first.argv and second.restarts == 1
    # the record is written before the supervisor logs the restart: on a busy machine the line follows a moment later
    wait_for("the restart logged", lambda: "restarted kube-scheduler" in process.log_tail(layout, supervisor.NAME),
             timeout=10)
    os.kill(second.pid, signal.SIGKILL)
    wait_for("second restart", lambda: _current(layout, "kube-scheduler").restarts == 2, timeout=30)
    os.kill(bystander.pid, signal.SIGKILL)
    time.sleep(1.5)
    assert _current(layout, "plugin").pid == bystander.pid and not bystander.alive()


def test_a_crash_loop_backs_off(layout: Layout) -> None:
    process.start(layout, "kwok", ["sh", "-c", "exit 1"])
    supervisor.start(layout)
    # Timed from the supervisor's start (a loaded machine may take seconds to start Python).
    wait_for("supervisor watching", lambda: "supervising" in process.log_tail(layout, supervisor.NAME, 50),
             timeout=30)
    time.sleep(5)
    # Immediate restarts would be hundreds; backing off 1, 2, 4 s allows at most 3 in 5 s.
    assert 1 <= _current(layout, "kwok").restarts <= 3


def test_restarts_wait_for_the_state_lock(layout: Layout) -> None:
    first = process.start(layout, "kube-controller-manager", ["sleep", "600"])
    supervisor.start(layout)
    wait_for("supervisor watching", lambda: "supervising" in process.log_tail(layout, supervisor.NAME), timeout=20)
    with locked(layout):
        os.kill(first.pid, signal.SIGKILL)
        time.sleep(1.0)
        assert _current(layout, "kube-controller-manager").pid == first.pid, "restarted while `up` held the lock"
    wait_for("restart after the lock", lambda: _current(layout, "kube-controller-manager").alive(), timeout=30)


def test_stop_leaves_dead_processes_dead(layout: Layout) -> None:
    first = process.start(layout, "etcd", ["sleep", "600"])
    sup = supervisor.start(layout)
    wait_for("supervisor watching", lambda: "supervising" in process.log_tail(layout, supervisor.NAME), timeout=20)
    supervisor.stop(layout)
    assert not sup.alive()
    os.kill(first.pid, signal.SIGKILL)
    time.sleep(1.0)
    assert _current(layout, "etcd").pid == first.pid


SLEEPS = "import time; time.sleep(600)"
IGNORES_TERM = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"


def test_a_removed_state_dir_stops_the_cluster_and_the_supervisor(tmp_path: Path) -> None:
    """A temp state dir cleaned up under a running cluster: nobody could `down` it any more."""
    layout = Layout(tmp_path / "state")
    etcd = process.start(layout, "etcd", ["sleep", "600"])
    stubborn = process.start(layout, "kwok", [sys.executable, "-c", IGNORES_TERM])  # needs the SIGKILL
    sup = supervisor.start(layout)
    try:
        wait_for("supervisor watching", lambda: "supervising" in process.log_tail(layout, supervisor.NAME), timeout=20)
        shutil.rmtree(layout.root)
        wait_for("the supervised processes and the supervisor gone",
                 lambda: not (etcd.alive() or stubborn.alive() or sup.alive()), timeout=30)
        assert not layout.root.exists(), "the supervisor recreated the removed state dir"
    finally:
        for record in (etcd, stubborn, sup):
            if record.alive():
                os.kill(record.pid, signal.SIGKILL)


def test_down_stops_what_no_pid_file_records_and_nothing_else(tmp_path: Path) -> None:
    """`up` killed between starting a process and recording it: `down` finds it by its command line."""
    layout = Layout(tmp_path / "state")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "kwok").symlink_to(sys.executable)  # a program named like ours, working on this state dir
    stray = process.start(layout, "kwok", [str(bin_dir / "kwok"), "-c", IGNORES_TERM, f"--config={layout.kwok_config}"])
    # A user's own process reading the kubeconfig is not the cluster's: it stays.
    bystander = process.start(layout, "reader", [sys.executable, "-c", SLEEPS, str(layout.kubeconfig)])
    layout.pid_file("kwok").unlink()
    layout.pid_file("reader").unlink()
    try:
        stopped = lifecycle.down(layout.root)
        for _ in range(100):
            process.reap(stray.pid)
            if not stray.alive():
                break
            time.sleep(0.05)
        assert not stray.alive() and bystander.alive()
        assert any("unrecorded" in name for name in stopped)
    finally:
        for record in (stray, bystander):
            if record.alive():
                os.kill(record.pid, signal.SIGKILL)
                process.reap(record.pid)
