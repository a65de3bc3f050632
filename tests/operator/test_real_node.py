"""A SparkApplication through the controller on the real node (kubelet + containerd), to COMPLETED.

The app is the image's Pi (`accel_pi.py`, PySpark) as kubeflow-shaped YAML: the image and ServiceAccount
are ours, and the local control plane's two quirks (no cluster DNS, the API server on 127.0.0.1) are
spec fields: the driver on the host network (`driver.hostNetwork`, `dnsPolicy` in `driver.template`),
`driver.kubernetesMaster`, and the image's `KUBEACCEL_DRIVER_HOST=pod-ip` in `driver.envVars`.
A poll of status.applicationState.state, the way Airflow's sensor does it, sees COMPLETED.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from typing import Any

import pytest
import yaml
from fixtures.sparkapps import pi_application

from kubeaccel.kube.client import Kube
from kubeaccel.operator import crds
from kubeaccel.operator.controller import Controller

pytestmark = [pytest.mark.real_node, pytest.mark.spark, pytest.mark.slow]


def test_spark_pi_application_completes_on_the_real_node(real_node: Any, spark_image: str) -> None:
    cluster = real_node.cluster
    namespace = f"op-real-{uuid.uuid4().hex[:6]}"
    code = "import sys; from kubeaccel.cli import main; main(sys.argv[1:])"
    subprocess.run(
        [sys.executable, "-c", code, "tenant", "create", namespace, "--pod-security", "privileged",
         "--kubeconfig", str(real_node.kubeconfig)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    cluster.apply(crds.crds_yaml())
    time.sleep(2)
    kube = Kube.connect(kubeconfig=real_node.kubeconfig)
    controller = Controller(kube, [namespace], workers=2)
    controller.start()
    try:
        app = pi_application("spark-pi", spark_image, real_node.node_name, cluster.server)
        cluster.apply(yaml.safe_dump(app), namespace)
        state, deadline, seen = "", time.monotonic() + 480, []
        while time.monotonic() < deadline:  # Airflow's SparkKubernetesSensor polls exactly this field
            out = cluster.kubectl("get", "sparkapplication", "spark-pi", "-n", namespace, "-o",
                                  "jsonpath={.status.applicationState.state}", check=False).stdout  # fmt: skip
            if out != state:
                state = out
                seen.append(state)
            if state in ("COMPLETED", "FAILED", "SUBMISSION_FAILED"):
                break
            time.sleep(2)
        if state != "COMPLETED":
            status = cluster.kubectl("get", "sparkapplication", "spark-pi", "-n", namespace, "-o", "json").stdout
            logs = cluster.kubectl("logs", "spark-pi-driver", "-n", namespace, "--tail=80", check=False).stdout
            pytest.fail(f"states {seen}; status {status[-3000:]}\n{logs}")
        assert "RUNNING" in seen
        logs = cluster.kubectl("logs", "spark-pi-driver", "-n", namespace).stdout
        assert "Pi is roughly 3.1" in logs
    finally:
        controller.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
