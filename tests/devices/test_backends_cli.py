"""The backends behind the real CLI, run as a subprocess of the installed console script:
`kubeaccel plugin devices --config FILE --root TREE` on a fake VE + generic tree, and the error
paths users hit (no NVIDIA driver here, a bad VE key)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from fixtures.ve import FakeVETree

KUBEACCEL = str(Path(sys.executable).parent / "kubeaccel")


def ve_tree(root: Path) -> None:
    tree = FakeVETree(root)
    for node, slot, state in ((0, 1, 0), (1, 0, 1)):
        tree.add(node, slot, os_state=state, ve_state=None)
    (root / "dev/ttyUSB3").touch()


def run(tmp_path: Path, config: str) -> tuple[int, str]:
    path = tmp_path / "plugin.yaml"
    path.write_text(config)
    done = subprocess.run(
        [KUBEACCEL, "plugin", "devices", "--config", str(path), "--root", str(tmp_path)],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
        timeout=60,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def test_devices_shows_ve_and_generic_devices(tmp_path: Path) -> None:
    ve_tree(tmp_path)
    code, output = run(
        tmp_path,
        "resources:\n"
        "  - {name: nec.com/ve, backend: ve, replicas: 2}\n"
        "  - {name: example.com/serial, backend: generic, paths: [/dev/ttyUSB*]}\n",
    )
    assert code == 0, output
    for text in ("veslot0::0", "veslot0::1", "veslot1::1", "Unhealthy", "Healthy", "ttyUSB3"):
        assert text in output


def test_devices_without_nvidia_driver_says_what_to_install(tmp_path: Path) -> None:
    code, output = run(tmp_path, "resources:\n  - {name: nvidia.com/gpu, backend: nvidia}\n")
    assert code == 4
    assert "NVIDIA driver / NVML not found" in output
    assert "Traceback" not in output


def test_bad_ve_key_names_the_key(tmp_path: Path) -> None:
    code, output = run(tmp_path, "resources:\n  - {name: nec.com/ve, backend: ve, resetCommand: [reset, '{card}']}\n")
    assert code == 2
    assert "resources[0].resetCommand" in output
    assert "Traceback" not in output
