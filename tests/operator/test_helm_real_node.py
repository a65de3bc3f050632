"""The Helm-installed controller on the real node: kubeflow-shaped YAML applied with kubectl runs to COMPLETED.

All real: the chart (CRDs, RBAC, the Deployment with leader election) installed with the real Helm, the
kubeaccel image and the Spark image imported into the node's containerd, the controller in its pod using its
ServiceAccount token (on the host network: the local API server listens on 127.0.0.1 only), drivers and
executors on the real kubelet. The apps, polled as Airflow's sensor polls status.applicationState.state:
spark-pi and spark-pi-ttl (COMPLETED, then deleted by its TTL) at once, then spark-pi-scheduled (two runs,
each COMPLETED). Then `helm uninstall`.
"""

from __future__ import annotations

import copy
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy.chart import HELM, yaml_safe_json
from fixtures.cluster import wait_for
from fixtures.sparkapps import pi_application

pytestmark = [pytest.mark.real_node, pytest.mark.spark, pytest.mark.slow]
CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "kubeaccel-operator"
SELECTOR = "app.kubernetes.io/instance=ops"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def installed(real_node: Any, operator_image: str) -> Iterator[tuple[str, str]]:
    """(the release's namespace, the apps' tenant namespace) with the chart installed and its controller ready."""
    cluster = real_node.cluster
    release_ns = cluster.create_namespace("opsys")
    apps_ns = f"op-helm-{uuid.uuid4().hex[:6]}"
    code = "import sys; from kubeaccel.cli import main; main(sys.argv[1:])"
    subprocess.run(
        [sys.executable, "-c", code, "tenant", "create", apps_ns, "--pod-security", "privileged",
         "--kubeconfig", str(real_node.kubeconfig)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    repository, _, tag = operator_image.rpartition(":")
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "replicas": 1,  # one node, host network: a second replica would want the same port
        "namespaces": [apps_ns],
        "apiServer": cluster.server,
        "metrics": {"port": _free_port(), "service": False},
        "nodeSelector": {"kubernetes.io/hostname": real_node.node_name},
        "logLevel": "debug",
    }
    kube_args = [f"--kubeconfig={real_node.kubeconfig}", "-n", release_ns]
    done = subprocess.run(
        [HELM, "install", "ops", str(CHART), *kube_args, "--values", "-"],
        input=yaml_safe_json(values), capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    try:
        ready = "jsonpath={.items[*].status.containerStatuses[*].ready}"
        try:
            wait_for(
                "the controller ready",
                lambda: cluster.kubectl("get", "pods", "-n", release_ns, "-l", SELECTOR, "-o", ready).stdout == "true",
                timeout=180,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_describe(cluster, release_ns)}") from None
        yield release_ns, apps_ns
    finally:
        subprocess.run([HELM, "uninstall", "ops", *kube_args, "--wait"], capture_output=True, timeout=180, check=False)
        cluster.kubectl("delete", "namespace", apps_ns, "--wait=false", check=False)


def _describe(cluster: Any, release_ns: str) -> str:
    pods = cluster.kubectl("describe", "pods", "-n", release_ns, "-l", SELECTOR, check=False).stdout
    logs = cluster.kubectl("logs", "-n", release_ns, "-l", SELECTOR, "--tail=60", check=False)
    return f"{pods[-3000:]}\n--- logs ---\n{logs.stdout}{logs.stderr}"


def _poll_states(cluster: Any, namespace: str, names: list[str], timeout: float = 480) -> dict[str, list[str]]:
    """Each app's states as a poller sees them, until every one has ended."""
    seen: dict[str, list[str]] = {name: [] for name in names}
    deadline = time.monotonic() + timeout
    ended = ("COMPLETED", "FAILED", "SUBMISSION_FAILED")
    while time.monotonic() < deadline:
        for name in names:
            if seen[name] and seen[name][-1] in ended:
                continue  # ended: a TTL may delete it now
            state = cluster.kubectl("get", "sparkapplication", name, "-n", namespace, "-o",
                                    "jsonpath={.status.applicationState.state}", check=False).stdout  # fmt: skip
            if not seen[name] or seen[name][-1] != state:
                seen[name].append(state)
        if all(s and s[-1] in ended for s in seen.values()):
            break
        time.sleep(2)
    return seen


def test_pi_and_pi_ttl_complete(real_node: Any, installed: tuple[str, str], spark_image: str) -> None:
    cluster = real_node.cluster
    release_ns, apps_ns = installed
    pi = pi_application("spark-pi", spark_image, real_node.node_name, cluster.server)
    ttl = pi_application("spark-pi-ttl", spark_image, real_node.node_name, cluster.server)
    ttl["spec"]["timeToLiveSeconds"] = 20
    cluster.apply(yaml.safe_dump_all([pi, ttl]), apps_ns)
    seen = _poll_states(cluster, apps_ns, ["spark-pi", "spark-pi-ttl"])
    if any(s[-1] != "COMPLETED" for s in seen.values()):
        status = cluster.kubectl("get", "sparkapplications", "-n", apps_ns, "-o", "yaml").stdout
        pytest.fail(f"states {seen}\n{status[-4000:]}\n{_describe(cluster, release_ns)}")
    assert "RUNNING" in seen["spark-pi"]
    assert "Pi is roughly 3.1" in cluster.kubectl("logs", "spark-pi-driver", "-n", apps_ns).stdout
    wait_for("the TTL", lambda: cluster.kubectl("get", "sparkapplication", "spark-pi-ttl", "-n", apps_ns,
                                                check=False).returncode != 0, timeout=60)  # fmt: skip


def test_scheduled_runs_twice(real_node: Any, installed: tuple[str, str], spark_image: str) -> None:
    cluster = real_node.cluster
    release_ns, apps_ns = installed
    template = pi_application("template", spark_image, real_node.node_name, cluster.server)["spec"]
    scheduled = {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "ScheduledSparkApplication",
        "metadata": {"name": "spark-pi-scheduled"},
        "spec": {"schedule": "@every 45s", "concurrencyPolicy": "Allow", "successfulRunHistoryLimit": 2,
                 "template": copy.deepcopy(template)},
    }  # fmt: skip
    cluster.apply(yaml.safe_dump(scheduled), apps_ns)

    def runs() -> list[str]:
        out = cluster.kubectl("get", "sparkapplications", "-n", apps_ns, "-l",
                              "sparkoperator.k8s.io/scheduled-app-name=spark-pi-scheduled", "-o",
                              "jsonpath={.items[*].metadata.name}").stdout  # fmt: skip
        return sorted(out.split())

    wait_for("two runs", lambda: len(runs()) >= 2, timeout=150, interval=2)
    first_two = runs()[:2]
    seen = _poll_states(cluster, apps_ns, first_two)
    cluster.kubectl("patch", "scheduledsparkapplication", "spark-pi-scheduled", "-n", apps_ns, "--type=merge",
                    "-p", '{"spec": {"suspend": true}}')  # fmt: skip
    if any(s[-1] != "COMPLETED" for s in seen.values()):
        status = cluster.kubectl("get", "sparkapplications", "-n", apps_ns, "-o", "yaml").stdout
        pytest.fail(f"states {seen}\n{status[-4000:]}\n{_describe(cluster, release_ns)}")
    last = cluster.kubectl("get", "scheduledsparkapplication", "spark-pi-scheduled", "-n", apps_ns, "-o",
                           "jsonpath={.status.scheduleState}").stdout  # fmt: skip
    assert last == "Scheduled"
