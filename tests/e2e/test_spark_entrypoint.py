"""The image entrypoint's commands (pure), checked against what Spark's Kubernetes backend sends."""

from __future__ import annotations

import importlib.util
from types import ModuleType

import pytest
from e2e.apps import REPO


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("kubeaccel_entrypoint", REPO / "deploy" / "spark" / "entrypoint.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ep = _load()

EXECUTOR_ENV = {
    "SPARK_HOME": "/opt/spark",
    "JAVA_HOME": "/jdk",
    "SPARK_DRIVER_URL": "spark://CoarseGrainedScheduler@driver-svc.ns.svc:7078",
    "SPARK_EXECUTOR_ID": "3",
    "SPARK_EXECUTOR_CORES": "2",
    "SPARK_EXECUTOR_MEMORY": "1024m",
    "SPARK_APPLICATION_ID": "spark-abc",
    "SPARK_EXECUTOR_POD_IP": "10.0.0.7",
    "SPARK_EXECUTOR_POD_NAME": "pi-exec-3",
    "SPARK_RESOURCE_PROFILE_ID": "0",
    "SPARK_JAVA_OPT_10": "-Dk=ten",
    "SPARK_JAVA_OPT_0": "-Dspark.driver.port=7078",
    "SPARK_JAVA_OPT_2": "-Dk=two",
    "SPARK_CONF_DIR": "/opt/spark/conf",
}


def test_driver_mode_is_client_mode_spark_submit_bound_to_the_pod_ip() -> None:
    argv = [
        "driver",
        "--properties-file",
        "/opt/spark/conf/spark.properties",
        "--class",
        "org.apache.spark.deploy.PythonRunner",
        "local:///app.py",
        "7",
    ]
    cmd = ep.build_command(argv, {"SPARK_HOME": "/opt/spark", "SPARK_DRIVER_BIND_ADDRESS": "10.0.0.5"})
    assert cmd == [
        "/opt/spark/bin/spark-submit", "--conf", "spark.driver.bindAddress=10.0.0.5", "--deploy-mode", "client",
        "--properties-file", "/opt/spark/conf/spark.properties", "--class", "org.apache.spark.deploy.PythonRunner",
        "local:///app.py", "7",
    ]  # fmt: skip


@pytest.mark.parametrize(("value", "host"), [("pod-ip", "10.0.0.5"), ("driver.example", "driver.example")])
def test_driver_host_can_be_the_pod_ip(value: str, host: str) -> None:
    env = {"SPARK_HOME": "/s", "SPARK_DRIVER_BIND_ADDRESS": "10.0.0.5", "KUBEACCEL_DRIVER_HOST": value}
    cmd = ep.build_command(["driver", "app.py"], env)
    assert cmd == [
        "/s/bin/spark-submit", "--conf", "spark.driver.bindAddress=10.0.0.5", "--conf", f"spark.driver.host={host}",
        "--deploy-mode", "client", "app.py",
    ]  # fmt: skip


def test_executor_mode_builds_the_kubernetes_executor_backend_command() -> None:
    cmd = ep.build_command(["executor"], EXECUTOR_ENV)
    assert cmd[0] == "/jdk/bin/java"
    # SPARK_JAVA_OPT_<n> in numeric order, then the heap from SPARK_EXECUTOR_MEMORY.
    assert cmd[1:6] == ["-Dspark.driver.port=7078", "-Dk=two", "-Dk=ten", "-Xms1024m", "-Xmx1024m"]
    assert cmd[6:8] == ["-cp", "/opt/spark/conf:/opt/spark/jars/*"]
    assert cmd[8] == "org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend"
    args = dict(zip(cmd[9::2], cmd[10::2], strict=True))
    assert args == {
        "--driver-url": EXECUTOR_ENV["SPARK_DRIVER_URL"],
        "--executor-id": "3",
        "--cores": "2",
        "--app-id": "spark-abc",
        "--hostname": "10.0.0.7",
        "--resourceProfileId": "0",
        "--podName": "pi-exec-3",
    }


def test_classpath_order_and_extras() -> None:
    env = {"SPARK_HOME": "/s", "HADOOP_CONF_DIR": "/h", "SPARK_CLASSPATH": "/c", "SPARK_EXTRA_CLASSPATH": "/x"}
    assert ep.classpath(env) == "/s/conf:/h:/c:/s/jars/*:/x"


@pytest.mark.parametrize("missing", ["SPARK_DRIVER_URL", "SPARK_EXECUTOR_MEMORY", "SPARK_EXECUTOR_POD_IP"])
def test_executor_mode_names_the_missing_variable(missing: str) -> None:
    env = {k: v for k, v in EXECUTOR_ENV.items() if k != missing}
    with pytest.raises(ep.EntrypointError, match=missing):
        ep.build_command(["executor"], env)


def test_driver_needs_bind_address_and_other_commands_pass_through() -> None:
    with pytest.raises(ep.EntrypointError, match="SPARK_DRIVER_BIND_ADDRESS"):
        ep.build_command(["driver", "app.py"], {})
    assert ep.build_command(["/bin/sh", "-c", "echo hi"], {}) == ["/bin/sh", "-c", "echo hi"]
    with pytest.raises(ep.EntrypointError, match="no command"):
        ep.build_command([], {})


def test_empty_python_interpreter_variables_are_dropped() -> None:
    """spark-submit's driver pod carries PYSPARK_PYTHON / PYSPARK_DRIVER_PYTHON with no value when no conf
    names an interpreter; left set, Spark's PythonRunner would try to run "" (the real-node tests caught it)."""
    env = {"PYSPARK_PYTHON": "", "PYSPARK_DRIVER_PYTHON": " ", "OTHER": ""}
    ep.drop_empty_python_variables(env)
    assert env == {"OTHER": ""}
    env = {"PYSPARK_PYTHON": "/usr/bin/python3"}
    ep.drop_empty_python_variables(env)
    assert env == {"PYSPARK_PYTHON": "/usr/bin/python3"}
