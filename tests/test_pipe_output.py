"""Output into a pipe or a file (a CI log, `> out.txt`, `| grep`) is never wrapped nor cut: every table command
and the demo's progress lines, run with stdout and stderr redirected to real files, keep a long name (a
253-character pod name, the longest Kubernetes allows) and the result line whole on one line; `-o json` stays
the scripting interface.

Matrix: the demo's closing tables and result line (device plugin and DRA), its progress log lines, `plugin
devices` and `dra devices` (local); `spark list`, `spark status`, `tenant show`, `cluster status` against the
tier-1 cluster (marker `cluster`).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

LONG_POD = "kubeaccel-pi-8c7e22a241efd6d4-exec-" + "x" * 218  # 253 characters
LONG_NODE = "node-" + "n" * 120
ELLIPSIS = "\u2026"


def _run_to_files(argv: list[str], tmp_path: Path, env: dict[str, str] | None = None) -> tuple[str, str]:
    out, err = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        done = subprocess.run(argv, stdout=stdout, stderr=stderr, timeout=120, check=False,
                              env={**os.environ, "COLUMNS": "80", **(env or {})})  # fmt: skip
    assert done.returncode == 0, err.read_text()
    return out.read_text(), err.read_text()


def _whole_on_one_line(text: str, *needles: str) -> None:
    assert ELLIPSIS not in text, text
    for needle in needles:
        assert any(needle in line for line in text.splitlines()), f"{needle!r} is not whole on one line in:\n{text}"


RENDER = """
import sys
from pathlib import Path
from kubeaccel.demo.common import NodeRow, PluginPod
from kubeaccel.demo.deviceplugin import DemoResult, render
from kubeaccel.demo.dra import ClaimRow, DraDemoResult, SliceDevice, render_dra

pod, node = sys.argv[2], sys.argv[3]
nodes = [NodeRow(node, "real", True, "4", "4")]
plugin = PluginPod(pod, node, True, 0, "docker.io/kubeaccel/device-plugin:" + "t" * 60)
common = dict(kubeconfig=Path("/k"), submission_id="team-a:" + pod, phase="Succeeded", pi=3.14159265, nodes=nodes,
              allocations={"1": ["0", "1"]}, tasks=[{"executor": "1"}], driver_log_tail="", kept=True,
              cleanup_hint="kubeaccel cluster down --state-dir /a/long/" + "d" * 100, timings={"up": 1.0})
if sys.argv[1] == "plugin":
    render(DemoResult(plugin_pod=plugin, devices=[("ve-" + "0" * 100, "0", "0", "Healthy")], **common))
else:
    render_dra(DraDemoResult(driver_pod=plugin, devices=[SliceDevice("slice-" + "s" * 100, "ve-0", "0", "0", False)],
                             claims=[ClaimRow(pod, "claim-" + "c" * 100, ["ve-0", "ve-1"])], numa=1, **common))
"""


@pytest.mark.parametrize("mode", ["plugin", "dra"])
def test_the_demo_tables_and_result_survive_a_file(mode: str, tmp_path: Path) -> None:
    out, _ = _run_to_files([sys.executable, "-c", RENDER, mode, LONG_POD, LONG_NODE], tmp_path)
    _whole_on_one_line(
        out,
        LONG_POD,
        LONG_NODE,
        f"team-a:{LONG_POD}: Succeeded; Pi is roughly 3.14159",
        "kubeaccel cluster down --state-dir /a/long/" + "d" * 100,
        "docker.io/kubeaccel/device-plugin:" + "t" * 60,
    )
    assert "┃" not in out and "│" not in out  # plain rows, not a box drawn for 80 columns


LOG = """
import sys
from kubeaccel.cliopts import console, log_line
progress = console(stderr=True)
with progress.status("kubeaccel demo") as status:
    status.update(sys.argv[1])
    log_line(progress, sys.argv[1])
"""


def test_the_demo_progress_lines_survive_a_file(tmp_path: Path) -> None:
    message = f"waiting for {LONG_POD} on {LONG_NODE}: Pi is roughly what the executors say"
    _, err = _run_to_files([sys.executable, "-c", LOG, message], tmp_path)
    _whole_on_one_line(err, message)
    assert "\x1b" not in err  # no spinner or cursor control in a log file


@pytest.mark.parametrize("group", ["plugin", "dra"])
def test_the_devices_tables_survive_a_file(group: str, tmp_path: Path) -> None:
    resource = "example.com/" + "r" * 63
    config = tmp_path / "config.yaml"
    config.write_text(f"resources:\n  - name: {resource}\n    backend: simulated\n    count: 2\n    numaNodes: 2\n")
    out, _ = _run_to_files([sys.executable, "-m", "kubeaccel.cli", group, "devices", "--config", str(config)], tmp_path)
    _whole_on_one_line(out, resource if group == "plugin" else "sim-1")
    assert len(out.splitlines()) >= 4  # title, header, two devices


@pytest.mark.cluster
def test_the_cluster_tables_survive_a_file(cluster: object, kubeconfig: Path, spark_namespace: str,
                                           tmp_path: Path) -> None:  # fmt: skip
    from fixtures.spark import ON_KWOK_ARGS

    cli = [sys.executable, "-m", "kubeaccel.cli"]
    name = "pipe-" + "p" * 40
    out, _ = _run_to_files([*cli, "spark", "submit", "--kubeconfig", str(kubeconfig), "--master",
                            f"k8s://{cluster.server}", "--name", name,  # type: ignore[attr-defined]
                            "--conf", f"spark.kubernetes.namespace={spark_namespace}",
                            "--conf", "spark.kubernetes.container.image=spark:test", *ON_KWOK_ARGS,
                            "local:///opt/app.py"], tmp_path)  # fmt: skip
    app_id = next(word for word in out.split() if word.startswith(f"{spark_namespace}:{name}"))
    for command in (["spark", "list", "-n", spark_namespace], ["spark", "status", app_id]):
        listed, _ = _run_to_files([*cli, *command, "--kubeconfig", str(kubeconfig)], tmp_path)
        _whole_on_one_line(listed, app_id)

    tenant = f"pipe-{os.getpid()}"
    _run_to_files([*cli, "tenant", "create", tenant, "--quota", "cpu=16,memory=64Gi,nec.com/ve=8",
                   "--kubeconfig", str(kubeconfig)], tmp_path)  # fmt: skip
    try:
        shown, _ = _run_to_files([*cli, "tenant", "show", tenant, "--kubeconfig", str(kubeconfig)], tmp_path)
        _whole_on_one_line(shown, "nec.com/ve")
        assert len(shown.splitlines()) >= 4, shown  # header + cpu, memory, the VEs
    finally:
        cluster.kubectl("delete", "namespace", tenant, "--wait=false")  # type: ignore[attr-defined]

    status, _ = _run_to_files([*cli, "cluster", "status", "--state-dir", str(cluster.state_dir)], tmp_path)  # type: ignore[attr-defined]
    allocatable = next(line for line in status.splitlines() if line.startswith("kwok-node-0"))
    assert "nec.com/ve=8" in allocatable and "pods=110" in allocatable, status  # the whole cell, on one line
    assert ELLIPSIS not in status
