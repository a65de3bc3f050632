"""The bootstrap build steps: versions in one place, a no-op once the binaries exist, a clear message without Go."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from kubeaccel.cluster import binaries, versions
from kubeaccel.cluster.versions import KUBE_VERSION

ROOT = Path(__file__).resolve().parents[2]
K8S_STEP = ROOT / "scripts" / "bootstrap.d" / "20-kubernetes.sh"
CONTAINERD_STEP = ROOT / "scripts" / "bootstrap.d" / "25-containerd.sh"
SCRIPTS = (ROOT / "scripts" / "k8s" / "build.sh", ROOT / "scripts" / "containerd" / "build.sh")
K8S_BINARIES = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kubectl", "kwok", "etcd")


def _run(step: Path, cache: Path, path: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": path, "HOME": str(cache), "KUBEACCEL_CACHE": str(cache), "ROOT": str(ROOT)}
    return subprocess.run(["bash", str(step)], capture_output=True, text=True, env=env, timeout=60, check=False)


def _fake_binaries(directory: Path, names: tuple[str, ...]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name in names:
        (directory / name).write_text("#!/bin/sh\n")
        (directory / name).chmod(0o755)


def test_bash_and_python_read_the_same_versions() -> None:
    script = f"set -eu; source {versions.VERSIONS_FILE}; " + "; ".join(f'echo "{k}=${k}"' for k in versions.VERSIONS)
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert dict(line.split("=", 1) for line in out.split()) == versions.VERSIONS
    assert set(versions.VERSIONS) >= {"KUBE_VERSION", "KWOK_VERSION", "ETCD_VERSION", "CONTAINERD_VERSION",
                                      "RUNC_VERSION", "CNI_PLUGINS_VERSION"}


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.parent.name)
def test_build_scripts_set_no_version_of_their_own(script: Path) -> None:
    text = script.read_text()
    assert "cluster/versions.env" in text
    assert not re.findall(r"^\s*[A-Z_]*VERSION=", text, re.M), "versions belong in versions.env only"


def test_python_looks_where_the_scripts_build(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBEACCEL_CACHE", str(tmp_path))
    monkeypatch.delenv("KUBEACCEL_K8S_CACHE", raising=False)
    monkeypatch.delenv("KUBEACCEL_K8S_BIN", raising=False)
    assert binaries.cache_bin_dir() == tmp_path / "k8s" / f"v{KUBE_VERSION}" / "bin"
    assert binaries.containerd_bin_dir() == tmp_path / "containerd" / f"v{versions.CONTAINERD_VERSION}" / "bin"
    assert binaries.runc_bin_dir() == tmp_path / "runc" / f"v{versions.RUNC_VERSION}" / "bin"
    assert binaries.cni_bin_dir() == tmp_path / "cni" / f"v{versions.CNI_PLUGINS_VERSION}" / "bin"


@pytest.mark.parametrize("bad", ["KUBE_VERSION = 1.2", "export KUBE_VERSION=1", "KUBE_VERSION=$(rm -rf /)", "x"])
def test_a_malformed_versions_line_is_an_error(bad: str) -> None:
    with pytest.raises(ValueError, match="expected KEY=VERSION"):
        versions.parse(f"# comment\n\n{bad}\n")


def test_kubernetes_step_second_run_does_nothing(tmp_path: Path) -> None:
    bin_dir = tmp_path / "k8s" / f"v{KUBE_VERSION}" / "bin"
    _fake_binaries(bin_dir, K8S_BINARIES)
    proc = _run(K8S_STEP, tmp_path, os.environ["PATH"])
    assert proc.returncode == 0, proc.stderr
    assert "binaries present" in proc.stdout
    assert sorted(p.name for p in bin_dir.iterdir()) == sorted(K8S_BINARIES)


def test_containerd_step_second_run_does_nothing(tmp_path: Path) -> None:
    _fake_binaries(tmp_path / "containerd" / f"v{versions.CONTAINERD_VERSION}" / "bin",
                   ("containerd", "containerd-shim-runc-v2", "ctr"))
    _fake_binaries(tmp_path / "runc" / f"v{versions.RUNC_VERSION}" / "bin", ("runc",))
    _fake_binaries(tmp_path / "cni" / f"v{versions.CNI_PLUGINS_VERSION}" / "bin", binaries.CNI_PLUGINS)
    proc = _run(CONTAINERD_STEP, tmp_path, os.environ["PATH"])
    assert proc.returncode == 0, proc.stderr
    assert f"containerd v{versions.CONTAINERD_VERSION}" in proc.stdout and "binaries present" in proc.stdout


@pytest.mark.parametrize("step", [K8S_STEP, CONTAINERD_STEP], ids=["kubernetes", "containerd"])
def test_missing_go_is_named_with_the_fix(step: Path, tmp_path: Path) -> None:
    proc = _run(step, tmp_path, "/usr/bin:/bin" if not Path("/usr/bin/go").exists() else "/bin")
    assert proc.returncode == 1
    assert "Go is not installed" in proc.stderr and "bootstrap.sh" in proc.stderr
