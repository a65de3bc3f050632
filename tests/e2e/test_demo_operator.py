"""``kubeaccel demo --operator``: its pure parts (chart values, the SparkApplication) and one real run.

Pure: the operator values pass the chart's values.schema.json (a real `helm template`) and put the
controller on the real node's host network; the SparkApplication maps, through the controller's own
mapping, to the confs `kubeaccel demo` submits (VEs per executor, discovery, one VE per task).
Real node: the demo on the session's cluster with --keep: the app ends COMPLETED through the
Helm-installed controller, each task held one VE, both releases stay, the printed hint stops them.
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
from deploy.chart import HELM, yaml_safe_json

from kubeaccel.cli import cli
from kubeaccel.demo.common import PLUGIN_NAMESPACE, RELEASE, DemoOptions, app_confs, helm, helm_binary
from kubeaccel.demo.operator import (
    OPERATOR_CHART,
    OPERATOR_RELEASE,
    TENANT,
    operator_values,
    render_operator,
    run_demo_operator,
    spark_application,
)
from kubeaccel.operator.api import SparkApplication
from kubeaccel.operator.mapping import to_submission

REPO = Path(__file__).resolve().parents[2]
SERVER = "https://127.0.0.1:6443"


def test_operator_values_pass_the_chart() -> None:
    values = operator_values("docker.io/kubeaccel/device-plugin:0.1.0-abc", "node-1", SERVER, TENANT, 18080)
    done = subprocess.run(
        [HELM, "template", "ops", str(REPO / OPERATOR_CHART), "--values", "-"],
        input=yaml_safe_json(values), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    (deployment,) = [d for d in yaml.safe_load_all(done.stdout) if d and d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["nodeSelector"] == {"kubernetes.io/hostname": "node-1"}
    (container,) = pod["containers"]
    assert container["image"] == "docker.io/kubeaccel/device-plugin:0.1.0-abc"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1" and env["KUBERNETES_SERVICE_PORT"] == "6443"
    assert values["namespaces"] == [TENANT] and values["replicas"] == 1


def test_the_application_maps_to_the_demo_confs() -> None:
    document = spark_application(name="pi", image="spark:x", node="node-1", server=SERVER, executors=3, partitions=6)
    app = SparkApplication.model_validate({**document, "metadata": {"name": "pi", "namespace": TENANT}})
    mapped = to_submission(app, master=f"k8s://{SERVER}")
    conf = {**mapped.request.conf, **mapped.request.flag_conf}
    want = app_confs(namespace=TENANT, image="spark:x", node="node-1", server=SERVER, template=Path("t"), executors=3)
    # The driver's host network travels in the pod template, and the namespace is the app's own.
    skip = {"spark.kubernetes.driver.podTemplateFile", "spark.kubernetes.namespace"}
    differ = {k: (v, conf.get(k)) for k, v in want.items() if k not in skip and conf.get(k) != v}
    assert differ == {}
    assert mapped.request.app_args == ("6", "ve")
    assert mapped.driver_template is not None and mapped.driver_template["spec"]["hostNetwork"] is True


def test_dra_and_operator_together_are_refused() -> None:
    result = CliRunner().invoke(cli, ["demo", "--operator", "--dra"])
    assert result.exit_code == 2 and "choose one" in result.output


@pytest.mark.real_node
@pytest.mark.spark
@pytest.mark.slow
def test_demo_operator_keep_runs_on_the_session_cluster(real_node: Any, capsys: pytest.CaptureFixture[str]) -> None:
    messages: list[str] = []
    options = DemoOptions(state_dir=real_node.cluster.state_dir, keep=True, devices=4, executors=2, partitions=6)
    result = run_demo_operator(options, messages.append)
    assert result.state == "COMPLETED", (result.states_seen, result.driver_log_tail)
    assert result.phase == "Succeeded" and "RUNNING" in result.states_seen
    assert result.pi is not None and abs(result.pi - 3.14159) < 0.05
    assert sorted(t["partition"] for t in result.tasks) == list(range(6))
    assert all(len(t["resources"]["ve"]) == 1 for t in result.tasks)
    assert len(result.allocations) == 2 and len(result.executors) == 2
    assert {e.state for e in result.executors} <= {"COMPLETED", "FAILED"}  # ended; Spark deleted the pods
    assert result.operator_pod.ready and result.operator_pod.node == real_node.node_name
    assert any("operator chart" in m for m in messages)
    # --keep: both releases stay deployed.
    listed = json.loads(helm(result.kubeconfig, "list", "-n", PLUGIN_NAMESPACE, "-o", "json"))
    assert sorted((r["name"], r["status"]) for r in listed) == [(RELEASE, "deployed"), (OPERATOR_RELEASE, "deployed")]
    render_operator(result)
    out = capsys.readouterr().out
    assert "SparkApplication kubeaccel-demo-operator/spark-pi-ve" in out and "Allocations seen by Spark tasks" in out
    # The printed way to stop it works (its helm parts: the cluster is the session's and stays).
    for part in result.cleanup_hint.split(";")[:2]:
        assert part.strip().startswith("helm uninstall")
        subprocess.run([helm_binary(), *shlex.split(part)[1:], "--wait"], check=True, capture_output=True)
    assert json.loads(helm(result.kubeconfig, "list", "-n", PLUGIN_NAMESPACE, "-o", "json")) == []
    real_node.cluster.kubectl("delete", "namespace", TENANT, "--wait=false", check=False)


@pytest.mark.cluster
def test_the_watch_follows_the_state_to_its_end(cluster: Any) -> None:
    """`wait_for_state` on the real API server: each state once, in order, until COMPLETED; a bounded wait."""
    import threading
    import time

    from fixtures.cluster import wait_for

    from kubeaccel.demo.operator import wait_for_state
    from kubeaccel.errors import UnavailableError
    from kubeaccel.kube.client import Kube
    from kubeaccel.operator import crds
    from kubeaccel.operator.kinds import apps

    cluster.apply(crds.crds_yaml())
    established = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
    for crd in crds.all_crds():
        name = crd["metadata"]["name"]
        wait_for(name, lambda n=name: cluster.kubectl("get", "crd", n, "-o", established).stdout == "True")
    namespace = cluster.create_namespace("opdemo")
    kube = Kube.connect(kubeconfig=cluster.kubeconfig)
    apps()  # registers the kind with lightkube's codecs, as the demo does before its create
    document = spark_application(name="pi", image="spark:x", node="n", server=SERVER, executors=1, partitions=2)
    kube.create(document, namespace)

    def advance() -> None:
        for state in ("SUBMITTED", "RUNNING", "COMPLETED"):
            time.sleep(0.3)
            kube.merge_patch(apps().Status, "pi", {"status": {"applicationState": {"state": state}}}, namespace)

    threading.Thread(target=advance, daemon=True).start()
    app, states = wait_for_state(kube, namespace, "pi", lambda _: None, timeout=60)
    assert states == ["SUBMITTED", "RUNNING", "COMPLETED"]
    assert app["metadata"]["name"] == "pi"
    kube.create({**document, "metadata": {"name": "stuck"}}, namespace)
    with pytest.raises(UnavailableError, match="did not end within 1s") as raised:
        wait_for_state(kube, namespace, "stuck", lambda _: None, timeout=1)
    assert raised.value.exit_code == 4
