"""The Helm-installed controller on the real node: kubeflow-shaped Pi YAML applied with kubectl runs to COMPLETED.

All real: the chart (CRDs, RBAC, the Deployment with leader election) installed with the real Helm, the
kubeaccel image and the Spark image imported into the node's containerd, the controller in its pod using its
ServiceAccount token (on the host network: the local API server listens on 127.0.0.1 only), the driver and
executor on the real kubelet. Then `helm uninstall`.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy.chart import HELM, yaml_safe_json
from fixtures.cluster import wait_for
from fixtures.sparkapps import pi_application

pytestmark = [pytest.mark.real_node, pytest.mark.spark, pytest.mark.slow]
CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "kubeaccel-operator"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_helm_installed_controller_runs_pi_to_completed(real_node: Any, operator_image: str, spark_image: str) -> None:
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
        selector = "app.kubernetes.io/instance=ops"

        def describe() -> str:
            pods = cluster.kubectl("describe", "pods", "-n", release_ns, "-l", selector, check=False).stdout
            logs = cluster.kubectl("logs", "-n", release_ns, "-l", selector, "--tail=60", check=False)
            return f"{pods[-3000:]}\n--- logs ---\n{logs.stdout}{logs.stderr}"

        ready = "jsonpath={.items[*].status.containerStatuses[*].ready}"
        try:
            wait_for(
                "the controller ready",
                lambda: cluster.kubectl("get", "pods", "-n", release_ns, "-l", selector, "-o", ready).stdout == "true",
                timeout=180,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{describe()}") from None
        app = pi_application("spark-pi", spark_image, real_node.node_name, cluster.server)
        cluster.apply(yaml.safe_dump(app), apps_ns)
        state, seen, deadline = "", [], time.monotonic() + 480
        while time.monotonic() < deadline:
            state = cluster.kubectl("get", "sparkapplication", "spark-pi", "-n", apps_ns, "-o",
                                    "jsonpath={.status.applicationState.state}", check=False).stdout  # fmt: skip
            if not seen or seen[-1] != state:
                seen.append(state)
            if state in ("COMPLETED", "FAILED", "SUBMISSION_FAILED"):
                break
            time.sleep(2)
        if state != "COMPLETED":
            status = cluster.kubectl("get", "sparkapplication", "spark-pi", "-n", apps_ns, "-o", "yaml").stdout
            pytest.fail(f"states {seen}\n{status[-3000:]}\n{describe()}")
        assert "Pi is roughly 3.1" in cluster.kubectl("logs", "spark-pi-driver", "-n", apps_ns).stdout
    finally:
        subprocess.run([HELM, "uninstall", "ops", *kube_args, "--wait"], capture_output=True, timeout=180, check=False)
        cluster.kubectl("delete", "namespace", apps_ns, "--wait=false", check=False)
