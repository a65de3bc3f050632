"""``kubeaccel demo``: its pure parts (report parsing, confs, plugin config) and one real run.

The real run reuses the session's cluster and real node (so the demo takes nothing down that it
did not start) and checks what a user would look at: the app succeeded, every task held one VE,
the tables have the real node and the simulated devices.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from kubeaccel.cli import cli
from kubeaccel.demo import (
    DemoOptions,
    allocations,
    app_confs,
    pi_value,
    plugin_config,
    render,
    run_demo,
    task_reports,
)
from kubeaccel.devices.config import parse_config
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.submit import prepare

REPORT = [{"executor": "a:1", "partition": 0, "resources": {"ve": ["2"]}, "env": {}}]
LOG = f"INFO something\nPi is roughly 3.141280\nkubeaccel-task-resources {json.dumps(REPORT)}\n{{\"not\": 1}}\n"


def test_reports_and_pi_from_a_driver_log() -> None:
    assert task_reports(LOG) == REPORT
    assert pi_value(LOG) == pytest.approx(3.14128)
    assert task_reports("no report here") == [] and pi_value("nothing") is None


def test_allocations_group_addresses_by_executor() -> None:
    reports = [
        {"executor": "b:2", "resources": {"ve": ["3"]}},
        {"executor": "a:1", "resources": {"ve": ["1"]}},
        {"executor": "a:1", "resources": {"ve": ["1"]}},
        {"executor": "c:3", "resources": {}},
    ]
    assert allocations(reports) == {"a:1": ["1"], "b:2": ["3"], "c:3": []}


def test_plugin_config_is_valid_for_the_daemon(tmp_path: Path) -> None:
    config = parse_config(plugin_config(4, tmp_path / "state.json"))
    (resource,) = config.resources
    assert resource.name == "nec.com/ve"


def test_app_confs_pass_the_submit_validation(tmp_path: Path) -> None:
    template = tmp_path / "driver.yaml"
    template.write_text("apiVersion: v1\nkind: Pod\nspec:\n  hostNetwork: true\n")
    confs = app_confs(
        namespace="kubeaccel-demo", image="docker.io/kubeaccel/spark:0.1.0-x", node="vm",
        server="https://127.0.0.1:6443", template=template, executors=2,
    )  # fmt: skip
    request = SubmitRequest(
        app_resource="local:///opt/kubeaccel/examples/accel_pi.py",
        master="k8s://https://127.0.0.1:6443",
        app_args=("8", "ve"),
        name="accel-pi",
        conf=confs,
    )
    prepared = prepare(request)
    assert prepared.namespace == "kubeaccel-demo"
    assert "hostNetwork" in json.dumps(prepared.manifests, default=str)


def test_cli_rejects_more_executors_than_devices() -> None:
    result = CliRunner().invoke(cli, ["demo", "--devices", "1", "--executors", "2"])
    assert result.exit_code == 2
    assert "need at least as many devices" in result.output


@pytest.mark.real_node
@pytest.mark.spark
@pytest.mark.slow
def test_demo_runs_on_the_session_cluster(real_node: Any, capsys: pytest.CaptureFixture[str]) -> None:
    messages: list[str] = []
    options = DemoOptions(state_dir=real_node.cluster.state_dir, devices=4, executors=2, partitions=6)
    result = run_demo(options, messages.append)
    assert result.phase == "Succeeded", result.driver_log_tail
    assert result.pi is not None and abs(result.pi - 3.14159) < 0.05
    assert sorted(t["partition"] for t in result.tasks) == list(range(6))
    assert all(len(t["resources"]["ve"]) == 1 for t in result.tasks)
    assert len(result.allocations) == 2
    assert {row.kind for row in result.nodes} >= {"real"}
    assert [d[0] for d in result.devices] == [f"sim-{i}" for i in range(4)]
    assert any("device plugin" in m for m in messages)
    # Without --keep the demo stops the plugin it started, but the cluster was the session's: it stays.
    assert not (real_node.cluster.state_dir / "demo" / "run" / "device-plugin.pid").exists()
    real_node.cluster.kubectl("get", "nodes")
    render(result)
    assert "Allocations seen by Spark tasks" in capsys.readouterr().out
