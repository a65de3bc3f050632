"""``kubeaccel dra``: the commands a user runs, through the real entry point (messages and exit codes)."""

from __future__ import annotations

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


def test_device_classes(config: Path) -> None:
    out = _run("device-classes", "--config", str(config), "--driver", "dra.example.com")
    assert out.returncode == 0, out.stderr
    assert list(yaml.safe_load_all(out.stdout)) == [device_class("dra.example.com", "example.com/sim")]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--config", "/nonexistent.yaml", "--registry-dir", "/tmp", "--plugins-dir", "/tmp"],
         "config file /nonexistent.yaml does not exist"),
        (["run", "--config", "CONFIG", "--driver", "Not_A_Name"], "is not a valid DRA driver name"),
        (["run", "--config", "CONFIG", "--registry-dir", "/nonexistent"], "pass --registry-dir"),
        (["check", "--registry-dir", "/nonexistent"], "plugin registry directory /nonexistent does not exist"),
        (["devices", "--config", "CONFIG", "--driver", "-bad-"], "is not a valid DRA driver name"),
    ],
)
def test_mistakes_are_one_message_and_exit_2(config: Path, args: list[str], message: str) -> None:
    out = _run(*[str(config) if a == "CONFIG" else a for a in args])
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
