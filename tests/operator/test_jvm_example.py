"""kubeflow's JVM example, ``spark-pi.yaml`` (type Scala, ``org.apache.spark.examples.SparkPi`` from
``local:///opt/spark/examples/jars/spark-examples.jar``), on the local Spark image.

The image carries that jar as Apache's does: our own SparkPi (``deploy/spark/examples/java/``), compiled by
``deploy/spark/build_image.py`` against the image's Spark jars. First the jar as the build makes it, run by the
host's ``spark-submit`` in local mode (the class, its output, its refusal of a bad argument); then kubeflow's YAML
through the in-process controller on the real node, to COMPLETED, with "Pi is roughly" in the driver's log.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml
from fixtures.sparkapps import SPARK_PI

from kubeaccel.kube.client import Kube
from kubeaccel.operator import crds
from kubeaccel.operator.controller import Controller

REPO = Path(__file__).resolve().parents[2]
JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"


def _build_image_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("spark_build_image", REPO / "deploy/spark/build_image.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def examples_jar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import pyspark

    jar = tmp_path_factory.mktemp("jar") / "spark-examples.jar"
    built: Path = _build_image_module().build_examples_jar(Path(pyspark.__file__).parent / "jars", jar)
    return built


def _local_submit(jar: Path, *args: str) -> subprocess.CompletedProcess[str]:
    import pyspark

    home = Path(pyspark.__file__).parent
    env = {**os.environ, "JAVA_HOME": JAVA_HOME, "SPARK_HOME": str(home), "SPARK_LOCAL_IP": "127.0.0.1"}
    argv = [str(home / "bin/spark-submit"), "--master", "local[2]", "--conf", "spark.ui.enabled=false",
            "--class", "org.apache.spark.examples.SparkPi", str(jar), *args]  # fmt: skip
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=180, check=False)


@pytest.mark.spark
@pytest.mark.slow
def test_examples_jar_is_reproducible_and_runs_sparkpi(examples_jar: Path, tmp_path: Path) -> None:
    import pyspark

    again = _build_image_module().build_examples_jar(Path(pyspark.__file__).parent / "jars", tmp_path / "again.jar")
    assert hashlib.sha256(again.read_bytes()).digest() == hashlib.sha256(examples_jar.read_bytes()).digest()
    done = _local_submit(examples_jar, "3")
    assert done.returncode == 0, done.stderr[-3000:]
    (line,) = [line for line in done.stdout.splitlines() if line.startswith("Pi is roughly ")]
    assert abs(float(line.removeprefix("Pi is roughly ")) - 3.14159) < 0.02
    bad = _local_submit(examples_jar, "many")
    assert bad.returncode == 2
    assert "the first argument is the number of slices, a positive integer; got 'many'" in bad.stderr


def _spark_pi(image: str, node: str, server: str) -> dict[str, Any]:
    """kubeflow's spark-pi.yaml, with the image and ServiceAccount ours, fewer slices, a small CPU request (the
    node is shared), and the local control plane's quirks as spec fields (see test_real_node.py)."""
    app: dict[str, Any] = yaml.safe_load(SPARK_PI)
    spec = app["spec"]
    spec.update(image=image, imagePullPolicy="Never", arguments=["20"], nodeSelector={"kubernetes.io/hostname": node})
    spec["restartPolicy"] = {"type": "Never"}
    spec["executor"]["coreRequest"] = "100m"
    spec["driver"].update(
        coreRequest="100m",
        serviceAccount="spark",
        hostNetwork=True,
        kubernetesMaster=server,
        envVars={"KUBEACCEL_DRIVER_HOST": "pod-ip"},
        template={"spec": {"dnsPolicy": "ClusterFirstWithHostNet"}},
    )
    return app


@pytest.mark.real_node
@pytest.mark.spark
@pytest.mark.slow
def test_kubeflow_spark_pi_scala_completes_on_the_real_node(real_node: Any, spark_image: str) -> None:
    cluster = real_node.cluster
    namespace = f"op-jvm-{uuid.uuid4().hex[:6]}"
    code = "import sys; from kubeaccel.cli import main; main(sys.argv[1:])"
    subprocess.run(
        [sys.executable, "-c", code, "tenant", "create", namespace, "--pod-security", "privileged",
         "--kubeconfig", str(real_node.kubeconfig)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    cluster.apply(crds.crds_yaml())
    time.sleep(2)
    controller = Controller(Kube.connect(kubeconfig=real_node.kubeconfig), [namespace], workers=2)
    controller.start()
    try:
        cluster.apply(yaml.safe_dump(_spark_pi(spark_image, real_node.node_name, cluster.server)), namespace)
        state, deadline, seen = "", time.monotonic() + 480, []
        while time.monotonic() < deadline:  # the field Airflow's SparkKubernetesSensor polls
            out = cluster.kubectl("get", "sparkapplication", "spark-pi", "-n", namespace, "-o",
                                  "jsonpath={.status.applicationState.state}", check=False).stdout  # fmt: skip
            if out != state:
                state = out
                seen.append(state)
            if state in ("COMPLETED", "FAILED", "SUBMISSION_FAILED"):
                break
            time.sleep(2)
        logs = cluster.kubectl("logs", "spark-pi-driver", "-n", namespace, check=False).stdout
        if state != "COMPLETED":
            status = cluster.kubectl("get", "sparkapplication", "spark-pi", "-n", namespace, "-o", "json").stdout
            pytest.fail(f"states {seen}; status {status[-3000:]}\n{logs[-6000:]}")
        assert "RUNNING" in seen
        assert "Pi is roughly 3.1" in logs
        args = cluster.kubectl("get", "pod", "spark-pi-driver", "-n", namespace, "-o",
                               "jsonpath={.spec.containers[0].args}", check=False).stdout  # fmt: skip
        assert "org.apache.spark.examples.SparkPi" in args
    finally:
        controller.stop()
        cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
