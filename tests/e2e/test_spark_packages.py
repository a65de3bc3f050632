"""`--packages` on the real node: the driver resolves a Maven package with Ivy inside its pod and loads it.

All real: the session's control plane and real node, the locally built kubeaccel Spark image, and a
`file://` Maven repository generated here (a class compiled with javac, its jar and POM in the Maven
layout). The repository and the app are on the host and reach the driver pod through hostPath mounts
at the same paths, so the client-side lookup (kubeaccel, no JVM) and Ivy in the driver read the same
files. This proves the image's Ivy home is usable by the Spark user (UID 185): Ivy writes its cache to
~/.ivy2.5.2 there. A coordinate the repository lacks fails the submit before anything is created.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from e2e.apps import REPO
from fixtures.spark import maven_repo

pytestmark = [pytest.mark.real_node, pytest.mark.spark, pytest.mark.slow]

KUBEACCEL = str(Path(sys.executable).with_name("kubeaccel"))
APP = """\
from pyspark.sql import SparkSession

spark = SparkSession.builder.getOrCreate()
jvm = spark.sparkContext._jvm
jars = spark.sparkContext._jsc.sc().listJars().mkString(",")  # a Scala Seq: py4j cannot iterate it
print("PACKAGE-JARS=" + ",".join(j for j in jars.split(",") if "hello" in j))
hello = jvm.org.apache.spark.util.Utils.classForName("dev.kubeaccel.test.Hello", True, False)
print("PACKAGE-CLASS=" + hello.getName())
spark.stop()
"""


def kubeaccel(*args: str, kubeconfig: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
    return subprocess.run([KUBEACCEL, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def spark_image(real_node: Any) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO / "deploy/spark/build_image.py"), "--json"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    built = json.loads(done.stdout)
    real_node.import_image(Path(built["archive"]))
    return str(built["image"])


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A host dir the driver pod mounts at the same path, readable by the Spark user (pytest's are 0700)."""
    import shutil

    path = Path(tempfile.mkdtemp(prefix="kubeaccel-packages-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _world_readable(root: Path) -> None:
    for path in [root, *root.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)


def test_the_driver_resolves_packages_from_a_maven_repository(
    real_node: Any, spark_image: str, shared_dir: Path
) -> None:
    kubeconfig = real_node.kubeconfig
    repo = maven_repo(shared_dir / "maven")
    app = shared_dir / "packages_app.py"
    app.write_text(APP)
    _world_readable(shared_dir)
    template = shared_dir / "driver-template.yaml"
    template.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "spec": {
                    "hostNetwork": True,
                    "dnsPolicy": "ClusterFirstWithHostNet",
                    "volumes": [{"name": "shared", "hostPath": {"path": str(shared_dir), "type": "Directory"}}],
                    "containers": [
                        {"name": "spark", "volumeMounts": [{"name": "shared", "mountPath": str(shared_dir)}]}
                    ],
                },
            }
        )
    )
    namespace = f"e2e-pkg-{uuid.uuid4().hex[:6]}"
    tenant = kubeaccel("tenant", "create", namespace, "--pod-security", "privileged", kubeconfig=kubeconfig)
    assert tenant.returncode == 0
    common = [
        "spark", "submit", "--master", f"k8s://{real_node.cluster.server}", "--name", "packages",
        "--conf", f"spark.kubernetes.namespace={namespace}",
        "--conf", "spark.kubernetes.authenticate.driver.serviceAccountName=spark",
        "--conf", f"spark.kubernetes.container.image={spark_image}",
        "--conf", "spark.kubernetes.container.image.pullPolicy=Never",
        "--conf", f"spark.kubernetes.node.selector.kubernetes.io/hostname={real_node.node_name}",
        "--conf", f"spark.kubernetes.driver.master={real_node.cluster.server}",
        "--conf", f"spark.kubernetes.driver.podTemplateFile={template}",
        "--conf", "spark.kubernetes.driverEnv.KUBEACCEL_DRIVER_HOST=pod-ip",
        "--conf", "spark.kubernetes.driver.request.cores=100m",
        "--conf", "spark.driver.memory=512m",
        # no executors: the driver alone resolves and loads the package (0 needs dynamic allocation, as in Spark)
        "--conf", "spark.executor.instances=0",
        "--conf", "spark.dynamicAllocation.enabled=true",
        "--conf", "spark.dynamicAllocation.shuffleTracking.enabled=true",
        "--repositories", repo,
    ]  # fmt: skip
    try:
        # a version the repository does not have: refused before anything is created (exit 3)
        missing = kubeaccel(
            *common, "--packages", "dev.kubeaccel.test:hello:9.9", f"local://{app}", kubeconfig=kubeconfig
        )
        assert missing.returncode == 3, missing.stderr
        assert "dev.kubeaccel.test:hello:9.9 is in none of the repositories" in missing.stderr
        listed = kubeaccel("spark", "list", "-n", namespace, "-o", "json", kubeconfig=kubeconfig)
        assert json.loads(listed.stdout)["apps"] == []

        done = kubeaccel(
            *common, "--packages", "dev.kubeaccel.test:hello:1.0", "-o", "json", "--wait", f"local://{app}",
            kubeconfig=kubeconfig, timeout=480,
        )  # fmt: skip
        sid = json.JSONDecoder().raw_decode(done.stdout.lstrip() or "{}")[0].get("id")
        logs = kubeaccel("spark", "logs", sid, kubeconfig=kubeconfig).stdout if sid else ""
        assert done.returncode == 0, f"app failed ({done.returncode}):\n{done.stderr}\n{logs[-6000:]}"
        assert "PACKAGE-CLASS=dev.kubeaccel.test.Hello" in logs, logs[-6000:]
        jars = next(line for line in logs.splitlines() if line.startswith("PACKAGE-JARS="))
        assert "dev.kubeaccel.test_hello-1.0.jar" in jars, jars
        # Ivy resolved into its cache in the Spark user's home, written by UID 185 inside the pod
        assert "/opt/spark/work-dir/.ivy2.5.2/jars" in logs, logs[-6000:]
    finally:
        real_node.cluster.kubectl("delete", "namespace", namespace, "--wait=false", check=False)
