"""kubeflow's JVM example, ``spark-pi.yaml`` (type Scala, ``org.apache.spark.examples.SparkPi`` from
``local:///opt/spark/examples/jars/spark-examples.jar``), on the local Spark image.

The image carries that jar as Apache's does: our own SparkPi (``deploy/spark/examples/java/``), compiled by
``deploy/spark/build_image.py`` against the image's Spark jars. First the jar as the build makes it, run by the
host's ``spark-submit`` in local mode (the class, its output, its refusal of a bad argument). kubeflow's YAML that
runs it on the real node, through the Helm-installed controller, is in ``test_helm_real_node.py``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
from pathlib import Path
from types import ModuleType

import pytest

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
