"""`kubeaccel cluster` bad input: a message and a hint, no traceback, nothing started, nothing lost."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from kubeaccel.cli import cli, main

KUBEACCEL = str(Path(sys.executable).with_name("kubeaccel"))


def test_bad_node_resource(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["cluster", "up", "--state-dir", str(tmp_path), "--node-resource", "ve=8"], standalone_mode=False
    )
    assert result.exception is not None
    assert "not a valid extended resource name" in str(result.exception)
    assert list(tmp_path.iterdir()) == []


def test_negative_nodes_named_by_its_option(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["cluster", "up", "--state-dir", str(tmp_path), "--nodes", "-1"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "--nodes" in err and "hint:" in err and "Traceback" not in err


def test_status_without_cluster_exits_3_with_hint(tmp_path: Path) -> None:
    proc = subprocess.run([KUBEACCEL, "cluster", "status", "--state-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 3
    assert "no local cluster" in proc.stderr and "kubeaccel cluster up" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_down_without_cluster_is_a_no_op(tmp_path: Path) -> None:
    (tmp_path / "mine.txt").write_text("keep me")
    result = CliRunner().invoke(cli, ["cluster", "down", "--state-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "nothing running" in result.output
    assert (tmp_path / "mine.txt").read_text() == "keep me"


def test_port_in_use_refused_before_anything_starts(tmp_path: Path) -> None:
    state = tmp_path / "state"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = subprocess.run(
            [KUBEACCEL, "cluster", "up", "--state-dir", str(state), "--apiserver-port", str(port)],
            capture_output=True, text=True, timeout=60, check=False,
        )
    assert proc.returncode == 2
    assert f"port {port}" in proc.stderr and "hint:" in proc.stderr
    assert not (state / "run").exists()


def test_missing_binaries_named_with_fix(tmp_path: Path) -> None:
    proc = subprocess.run(
        [KUBEACCEL, "cluster", "up", "--state-dir", str(tmp_path / "s")],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/nonexistent", "KUBEACCEL_K8S_BIN": str(tmp_path / "empty"), "HOME": str(tmp_path)},
    )
    assert proc.returncode == 3
    assert "kube-apiserver" in proc.stderr and "scripts/bootstrap.sh" in proc.stderr
    assert "etcd" in proc.stderr and "apt-get install etcd-server" in proc.stderr
