"""`cluster down` is complete, idempotent and honest, after crashes too (tier 1, a cluster of each test's own).

Matrix: `cluster up` killed (SIGKILL) mid-flight at three points (etcd started, API server started, supervisor
started) and the supervisor killed too → one `down` exits 0 and leaves no process naming the state dir, no mount
under it, no state dir; a second `down` is a no-op; a leftover `down` cannot remove (an immutable file) → exit 1
naming it, never 0, and a `down` after it is fixed finishes the job. (The real node's soak: test_teardown_soak.py.)
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.cluster import processes_of, wait_for

from kubeaccel.cluster import hostclean, lifecycle, process
from kubeaccel.cluster.layout import Layout

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
KUBEACCEL = str(Path(sys.executable).with_name("kubeaccel"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBEACCEL, "cluster", *args], capture_output=True, text=True, timeout=180, check=False)


def _mounts_under(state: Path) -> list[str]:
    return hostclean.mounts_under(Path("/proc/self/mountinfo").read_text(), [state])


def _assert_clean(state: Path) -> None:
    assert processes_of(state) == [], "processes of the cluster survived `down`"
    assert _mounts_under(state) == []
    assert not state.exists(), sorted(str(p) for p in state.rglob("*"))[:20]


@pytest.mark.parametrize("point", ["etcd", "kube-apiserver", "supervisor"])
def test_down_finishes_after_up_and_the_supervisor_were_killed_mid_flight(point: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    layout = Layout(state)
    up = subprocess.Popen([KUBEACCEL, "cluster", "up", "--state-dir", str(state), "--nodes", "1"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for(f"`up` to start {point}", lambda: layout.pid_file(point).exists() or up.poll() is not None, 120, 0.01)
        assert up.poll() is None, "`up` finished before it could be killed; the test needs a slower point"
        up.kill()  # kill -9 of `cluster up`: what it started runs on, some of it unrecorded
        up.wait()
        record = process.read_record(layout, "supervisor")
        if record is not None:
            os.kill(record.pid, signal.SIGKILL)
        assert processes_of(state), "nothing of the cluster was left running: the crash did not happen mid-flight"

        down = _cli("down", "--state-dir", str(state))
        assert down.returncode == 0, down.stderr
        _assert_clean(state)
        again = _cli("down", "--state-dir", str(state))
        assert again.returncode == 0 and "nothing running" in again.stdout, again.stderr
    finally:
        with contextlib.suppress(Exception):
            lifecycle.down(state)
        up.kill()
    _assert_clean(state)


def test_down_names_what_it_could_not_remove_and_a_later_down_finishes(tmp_path: Path) -> None:
    state = tmp_path / "state"
    stuck = state / "pki" / "stuck"
    try:
        assert _cli("up", "--state-dir", str(state), "--nodes", "1").returncode == 0
        stuck.write_text("")
        subprocess.run(["chattr", "+i", str(stuck)], check=True)  # root cannot delete it either

        down = _cli("down", "--state-dir", str(state))
        assert down.returncode == 1, (down.stdout, down.stderr)
        assert f"file {state / 'pki'}" in down.stderr and "Traceback" not in down.stderr
        assert processes_of(state) == []  # everything else was done

        subprocess.run(["chattr", "-i", str(stuck)], check=True)
        assert _cli("down", "--state-dir", str(state)).returncode == 0
    finally:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            subprocess.run(["chattr", "-i", str(stuck)], check=False, capture_output=True)
        with contextlib.suppress(Exception):
            lifecycle.down(state)
    _assert_clean(state)
