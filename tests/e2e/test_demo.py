"""``kubeaccel demo``: its pure parts (report parsing, confs, chart values) and real runs.

The real run reuses the session's cluster and real node (so the demo takes nothing down that it
did not start) and checks what a user would look at: the plugin is a ready DaemonSet pod of the
Helm release, the app succeeded, every task held one VE, the tables have the real node, the plugin
pod and the simulated devices; ``--keep`` leaves the release running. A plugin image missing on
the node is reported by name with how to build it.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner
from deploy.chart import CHART, find, rendered
from lightkube.models.core_v1 import (
    ContainerState,
    ContainerStateWaiting,
    ContainerStatus,
    PodSpec,
    PodStatus,
)
from lightkube.models.meta_v1 import ObjectMeta
from lightkube.resources.core_v1 import Pod

from kubeaccel.cli import cli
from kubeaccel.demo.common import (
    PLUGIN_NAMESPACE,
    RELEASE,
    DemoOptions,
    allocations,
    app_confs,
    helm,
    helm_binary,
    pi_value,
    plugin_pod_problem,
    task_reports,
)
from kubeaccel.demo.deviceplugin import plugin_values, render, run_demo, wait_for_plugin
from kubeaccel.devices.config import parse_config
from kubeaccel.errors import UnavailableError
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.submit import prepare

REPORT = [{"executor": "a:1", "partition": 0, "resources": {"ve": ["2"]}, "env": {}}]
LOG = f'INFO something\nPi is roughly 3.141280\nkubeaccel-task-resources {json.dumps(REPORT)}\n{{"not": 1}}\n'


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


def test_plugin_values_pass_the_chart_and_the_daemon() -> None:
    values = plugin_values(4, "docker.io/kubeaccel/device-plugin:0.1.0-abcd1234", "vm")
    docs = rendered(values)
    container = find(docs, "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "docker.io/kubeaccel/device-plugin:0.1.0-abcd1234"
    assert container["imagePullPolicy"] == "Never"
    assert find(docs, "DaemonSet")["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "vm"}
    config = parse_config(yaml.safe_load(find(docs, "ConfigMap")["data"]["plugin.yaml"]))
    assert [(r.name, r.optional) for r in config.resources] == [("nec.com/ve", False), ("nvidia.com/gpu", True)]


def _pod(reason: str | None, message: str | None = None) -> Pod:
    waiting = ContainerState(waiting=ContainerStateWaiting(reason=reason, message=message)) if reason else None
    status = ContainerStatus(name="device-plugin", image="i", imageID="", ready=False, restartCount=2,
                             state=waiting or ContainerState())  # fmt: skip
    return Pod(metadata=ObjectMeta(name="kubeaccel-device-plugin-x"), spec=PodSpec(containers=[], nodeName="vm"),
               status=PodStatus(containerStatuses=[status]))  # fmt: skip


@pytest.mark.parametrize("reason", ["ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "InvalidImageName"])
def test_a_missing_plugin_image_is_named_with_how_to_build_it(reason: str) -> None:
    problem = plugin_pod_problem(_pod(reason), "docker.io/kubeaccel/device-plugin:0.1.0-abcd1234")
    assert isinstance(problem, UnavailableError)
    assert "docker.io/kubeaccel/device-plugin:0.1.0-abcd1234 is not on node vm" in problem.message
    assert "deploy/plugin/build_image.py" in (problem.hint or "") and "ctr -n k8s.io images import" in (
        problem.hint or ""
    )


def test_a_crash_looping_plugin_points_at_its_logs() -> None:
    problem = plugin_pod_problem(_pod("CrashLoopBackOff", "back-off 10s"), "img")
    assert problem is not None and "keeps crashing" in problem.message and "--previous" in (problem.hint or "")
    assert plugin_pod_problem(_pod(None), "img") is None
    assert plugin_pod_problem(_pod("ContainerCreating"), "img") is None


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
@pytest.mark.cluster
@pytest.mark.slow
def test_an_image_missing_on_the_node_is_named(real_node: Any) -> None:
    from kubeaccel.cluster.api import client

    image = "docker.io/kubeaccel/device-plugin:0.0.0-notbuilt"
    values = plugin_values(1, image, real_node.node_name)
    helm(real_node.kubeconfig, "install", "kubeaccel-missing", str(CHART), "-n", PLUGIN_NAMESPACE, "--values", "-",
         stdin=yaml.safe_dump(values))  # fmt: skip
    try:
        with pytest.raises(UnavailableError) as caught:
            api = client(real_node.kubeconfig)
            wait_for_plugin(api, real_node.node_name, 1, image, release="kubeaccel-missing", timeout=120)
        assert f"the device-plugin image {image} is not on node {real_node.node_name}" in caught.value.message
        assert "deploy/plugin/build_image.py" in (caught.value.hint or "")
    finally:
        helm(real_node.kubeconfig, "uninstall", "kubeaccel-missing", "-n", PLUGIN_NAMESPACE, "--wait")


@pytest.mark.real_node
@pytest.mark.spark
@pytest.mark.slow
def test_demo_keep_runs_on_the_session_cluster(real_node: Any, capsys: pytest.CaptureFixture[str]) -> None:
    messages: list[str] = []
    options = DemoOptions(state_dir=real_node.cluster.state_dir, keep=True, devices=4, executors=2, partitions=6)
    result = run_demo(options, messages.append)
    assert result.phase == "Succeeded", result.driver_log_tail
    assert result.pi is not None and abs(result.pi - 3.14159) < 0.05
    assert sorted(t["partition"] for t in result.tasks) == list(range(6))
    assert all(len(t["resources"]["ve"]) == 1 for t in result.tasks)
    assert len(result.allocations) == 2
    assert {row.kind for row in result.nodes} >= {"real"}
    assert [d[0] for d in result.devices] == [f"sim-{i}" for i in range(4)]
    # The plugin is the Helm release's DaemonSet pod on the real node, running the locally built image.
    pod = result.plugin_pod
    assert pod.ready and pod.node == real_node.node_name and pod.image.startswith("docker.io/kubeaccel/device-plugin:")
    assert any("device-plugin chart" in m for m in messages)
    # --keep: the release stays, its pod still serves the node's devices.
    listed = json.loads(helm(result.kubeconfig, "list", "-n", PLUGIN_NAMESPACE, "-o", "json"))
    assert [(r["name"], r["status"]) for r in listed] == [(RELEASE, "deployed")]
    ds = real_node.cluster.kubectl("get", "daemonset", "-n", PLUGIN_NAMESPACE, "-l",
                                   f"app.kubernetes.io/instance={RELEASE}", "-o", "json").stdout  # fmt: skip
    (daemonset,) = json.loads(ds)["items"]
    assert daemonset["status"]["numberReady"] == 1
    render(result)
    out = capsys.readouterr().out
    assert "Allocations seen by Spark tasks" in out and "Device plugin: DaemonSet pod in kube-system" in out
    # The printed way to stop it works (its helm half: the cluster is the session's and stays).
    helm_part = result.cleanup_hint.split(";")[0]
    assert helm_part.startswith(f"helm uninstall {RELEASE}")
    subprocess.run([helm_binary(), *shlex.split(helm_part)[1:], "--wait"], check=True, capture_output=True)
    assert json.loads(helm(result.kubeconfig, "list", "-n", PLUGIN_NAMESPACE, "-o", "json")) == []
    real_node.cluster.kubectl("get", "nodes")
