"""`kubeaccel cluster up/status/down` on a cluster of its own: up twice is safe, a crashed cluster is detected
and repaired in place, a first `up` that never finished is cleaned up, down stops every process and leaves
nothing behind. (Supervision and repair in depth: test_supervision.py.)"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.cluster import KUBECTL, processes_of, wait_for

from kubeaccel.cluster import lifecycle, process
from kubeaccel.cluster.layout import Layout

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
KUBEACCEL = str(Path(sys.executable).with_name("kubeaccel"))


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([KUBEACCEL, "cluster", *args], capture_output=True, text=True, timeout=180, check=False)


def test_up_twice_crash_recovery_and_clean_down(tmp_path: Path) -> None:
    state = tmp_path / "state"
    layout = Layout(state)
    try:
        first = _cli("up", "--state-dir", str(state), "--nodes", "1", "--node-resource", "nec.com/ve=4")
        assert first.returncode == 0, first.stderr
        assert first.stdout.strip() == str(state / "kubeconfig")
        before = process.records(layout)
        pids = {r.name: r.pid for r in before}
        assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok",
                             "supervisor"}

        nodes = subprocess.run([KUBECTL, f"--kubeconfig={state / 'kubeconfig'}", "get", "nodes", "-o", "json"],
                               capture_output=True, text=True, timeout=60, check=True)
        (node,) = json.loads(nodes.stdout)["items"]
        assert node["status"]["allocatable"]["nec.com/ve"] == "4"

        again = _cli("up", "--state-dir", str(state), "--nodes", "1")
        assert again.returncode == 0 and "already running" in again.stderr
        assert {r.name: r.pid for r in process.records(layout)} == pids

        status = _cli("status", "--state-dir", str(state), "--json")
        assert status.returncode == 0, status.stderr
        report = json.loads(status.stdout)
        assert report["healthy"] and [n["name"] for n in report["nodes"]] == ["kwok-node-0"]

        # A crash: the supervisor and the API server die. status says so (exit 4), up repairs in place.
        for name in ("supervisor", "kube-apiserver"):
            record = process.read_record(layout, name)
            assert record is not None
            os.kill(record.pid, signal.SIGKILL)
            wait_for(f"{name} gone", lambda r=record: not r.alive(), timeout=10)  # type: ignore[misc]
        broken = _cli("status", "--state-dir", str(state))
        assert broken.returncode == 4 and "not healthy" in broken.stderr and "kube-apiserver:DEAD" in broken.stdout
        recovered = _cli("up", "--state-dir", str(state), "--nodes", "1")
        assert recovered.returncode == 0, recovered.stderr
        assert "cluster repaired" in recovered.stderr and "restarted: kube-apiserver" in recovered.stderr
        survivors = process.records(layout)
        assert all(r.alive() for r in survivors) and len(survivors) == 6
        # Live parts keep running (the controller-manager and scheduler may have exited on their own meanwhile:
        # their leader leases lapse while the API server is gone; the repair restarts them then).
        kept = ("etcd", "kwok")
        assert {r.name: r.pid for r in survivors if r.name in kept} == {n: pids[n] for n in kept}
        assert json.loads(_cli("status", "--state-dir", str(state), "--json").stdout)["restarts"]["kube-apiserver"] == 1

        down = _cli("down", "--state-dir", str(state))
        assert down.returncode == 0, down.stderr
        assert "unrecorded" not in down.stdout + down.stderr  # the recorded supervisor is not reported as a stray
        assert not any(r.alive() for r in survivors)
        assert not state.exists()
        assert _cli("down", "--state-dir", str(state)).returncode == 0
    finally:
        lifecycle.down(state)  # a failed assertion above must not leave the cluster running
    assert processes_of(state) == [], "processes of the cluster survived `down`"


def test_an_unfinished_first_up_is_cleaned_and_an_unreadable_state_is_not_wiped(tmp_path: Path) -> None:
    state = tmp_path / "state"
    layout = Layout(state)
    try:
        # Killed during its first `up`: a process and etcd data, but no state.json. Nothing to keep.
        leftover = process.start(layout, "etcd", ["sleep", "600"])
        layout.etcd_data.mkdir()
        first = _cli("up", "--state-dir", str(state), "--nodes", "0")
        assert first.returncode == 0, first.stderr
        assert "cleaning up an unfinished cluster" in first.stderr and not leftover.alive()
        # state.json unreadable: an error naming --fresh, and the data stays.
        layout.state_file.write_text("{not json")
        refused = _cli("up", "--state-dir", str(state), "--nodes", "0")
        assert refused.returncode == 2 and "cannot be read" in refused.stderr and "--fresh" in refused.stderr
        assert layout.etcd_data.is_dir() and all(r.alive() for r in process.records(layout))
        assert _cli("down", "--state-dir", str(state)).returncode == 0
        assert not state.exists()
    finally:
        lifecycle.down(state)
    assert processes_of(state) == []


def test_port_taken_between_pick_and_bind_is_retried_on_new_ports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubeaccel.cluster.spec import ClusterSpec

    real_pick = lifecycle.pick_free
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        taken = squatter.getsockname()[1]
        calls: list[list[int]] = []

        def pick(count: int, exclude: set[int] | None = None) -> list[int]:
            # First pick: etcd's client port is one another process grabs right after the check.
            ports = [taken, *real_pick(count - 1, exclude)] if not calls else real_pick(count, exclude)
            calls.append(ports)
            return ports

        monkeypatch.setattr(lifecycle, "pick_free", pick)
        state = tmp_path / "state"
        said: list[str] = []
        info = lifecycle.up(ClusterSpec(state_dir=state, nodes=0), progress=said.append)
        try:
            assert len(calls) == 2
            assert str(calls[1][2]) in info.server and taken not in calls[1]
            assert any("retrying on new ports" in line for line in said)
        finally:
            lifecycle.down(state)
        assert processes_of(state) == []
