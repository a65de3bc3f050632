"""scripts/bootstrap.d/20-kubernetes.sh: a no-op once the binaries exist, a clear message without Go."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from kubeaccel.cluster.spec import KUBE_VERSION

ROOT = Path(__file__).resolve().parents[2]
STEP = ROOT / "scripts" / "bootstrap.d" / "20-kubernetes.sh"
BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kwok", "etcd")


def _run(cache: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": str(cache), "KUBEACCEL_K8S_CACHE": str(cache), "ROOT": str(ROOT)}
    return subprocess.run(["bash", str(STEP)], capture_output=True, text=True, env=env, timeout=60, check=False)


def test_second_run_does_nothing(tmp_path: Path) -> None:
    bin_dir = tmp_path / f"v{KUBE_VERSION}" / "bin"
    bin_dir.mkdir(parents=True)
    for name in BINARIES:
        (bin_dir / name).write_text("#!/bin/sh\n")
        (bin_dir / name).chmod(0o755)
    proc = _run(tmp_path, os.environ["PATH"])
    assert proc.returncode == 0, proc.stderr
    assert "binaries present" in proc.stdout
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(BINARIES)


def test_missing_go_is_named_with_the_fix(tmp_path: Path) -> None:
    proc = _run(tmp_path, "/usr/bin:/bin" if not Path("/usr/bin/go").exists() else "/bin")
    assert proc.returncode == 1
    assert "Go is not installed" in proc.stderr and "bootstrap.sh" in proc.stderr
