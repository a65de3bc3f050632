"""``kubeaccel dra``: the commands a user runs, through the real entry point (messages and exit codes)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from kubeaccel.dra.model import device_class


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "kubeaccel.cli", "dra", *args], capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "dra.yaml"
    path.write_text(yaml.safe_dump({"resources": [
        {"name": "example.com/sim", "backend": "simulated", "count": 3, "numaNodes": 2}]}))
    return path


def test_devices_yaml_is_what_the_daemon_publishes(config: Path) -> None:
    out = _run("devices", "--config", str(config), "--node-name", "n1", "-o", "yaml")
    assert out.returncode == 0, out.stderr
    (doc,) = yaml.safe_load_all(out.stdout)
    assert doc["kind"] == "ResourceSlice" and doc["spec"]["nodeName"] == "n1"
    assert [d["name"] for d in doc["spec"]["devices"]] == ["sim-0", "sim-1", "sim-2"]


def test_devices_keep_entries_and_backends_paired_when_an_optional_one_is_skipped(tmp_path: Path) -> None:
    # No NVIDIA driver here: the optional GPU entry is skipped; the VE-like entry after it must not be
    # paired with the wrong name (it raised on a strict zip before).
    path = tmp_path / "mixed.yaml"
    path.write_text(yaml.safe_dump({"resources": [
        {"name": "nvidia.com/gpu", "backend": "nvidia", "optional": True},
        {"name": "example.com/sim", "backend": "simulated", "count": 2}]}))
    out = _run("devices", "--config", str(path), "--node-name", "n1", "-o", "yaml")
    assert out.returncode == 0, out.stderr
    (doc,) = yaml.safe_load_all(out.stdout)
    assert {d["attributes"]["resource"]["string"] for d in doc["spec"]["devices"]} == {"example.com/sim"}


def test_device_classes(config: Path) -> None:
    out = _run("device-classes", "--config", str(config), "--driver", "dra.example.com")
    assert out.returncode == 0, out.stderr
    assert list(yaml.safe_load_all(out.stdout)) == [device_class("dra.example.com", "example.com/sim")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--config", "/nonexistent.yaml", "--registry-dir", "/tmp", "--plugins-dir", "/tmp"],
         "config file '/nonexistent.yaml' does not exist"),
        (["run", "--config", "CONFIG", "--driver", "Not_A_Name"], "is not a valid DRA driver name"),
        (["run", "--config", "CONFIG", "--registry-dir", "/nonexistent"], "pass --registry-dir"),
        (["check", "--registry-dir", "/nonexistent"], "plugin registry directory /nonexistent does not exist"),
        (["devices", "--config", "CONFIG", "--driver", "-bad-"], "is not a valid DRA driver name"),
        (["run", "--config", "CONFIG", "--registry-dir", "/tmp", "--plugins-dir", "/tmp", "--kubeconfig",
          "/nonexistent/kubeconfig"], "kubeconfig '/nonexistent/kubeconfig' does not exist"),
    ],
)
def test_mistakes_are_one_message_and_exit_2(config: Path, args: list[str], message: str) -> None:
    out = _run(*[str(config) if a == "CONFIG" else a for a in args])
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr


def test_run_serves_until_sigterm_and_cleans_its_sockets(config: Path) -> None:
    import signal
    import tempfile
    import time

    import grpc

    from kubeaccel.dra._generated import pluginregistration_pb2 as reg_pb
    from kubeaccel.dra._generated import pluginregistration_pb2_grpc as reg_grpc

    base = Path(tempfile.mkdtemp(prefix="kdcli-"))
    for sub in ("reg", "plugins", "state", "cdi"):
        (base / sub).mkdir()
    kubeconfig = base / "kubeconfig"  # a server nobody listens on: the driver starts without the API server
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "kubeaccel.cli", "dra", "run", "--config", str(config), "--no-publish",
         "--node-name", "n1", "--registry-dir", str(base / "reg"), "--plugins-dir", str(base / "plugins"),
         "--state-dir", str(base / "state"), "--cdi-dir", str(base / "cdi"), "--kubeconfig", str(kubeconfig)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    sock = base / "reg" / "dra.kubeaccel.io-reg.sock"
    try:
        deadline = time.monotonic() + 30
        while not sock.exists():
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            assert time.monotonic() < deadline, "no registration socket"
            time.sleep(0.05)
        with grpc.insecure_channel(f"unix://{sock}") as channel:
            info = reg_grpc.RegistrationStub(channel).GetInfo(reg_pb.InfoRequest(), timeout=10)
        assert info.endpoint == str(base / "plugins" / "dra.kubeaccel.io" / "dra.sock")
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    try:
        assert proc.returncode == 0, out
        assert not sock.exists() and not Path(info.endpoint).exists()
    finally:
        shutil.rmtree(base, ignore_errors=True)
