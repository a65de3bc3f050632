"""Accelerator confs, memory/cpu math and whole-app totals for the quota pre-flight."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kubeaccel.errors import ConfigError
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.model import resolve
from kubeaccel.spark.resources import (
    JVM_OVERHEAD_FACTOR,
    NON_JVM_OVERHEAD_FACTOR,
    accelerators,
    overhead_factor,
    pod_resources,
)


def pod_memory_mib(conf: dict[str, str], role: str) -> int:
    non_jvm = conf.get("spark.kubernetes.resource.type") in ("python", "r")
    return pod_resources(conf, role, overhead_factor(conf, non_jvm)).memory_mib


def cpu_request(conf: dict[str, str], role: str) -> str:
    return pod_resources(conf, role, JVM_OVERHEAD_FACTOR).cpu_request


def app_requests(conf: dict[str, str], app_resource: str = "local:///app.jar"):  # type: ignore[no-untyped-def]
    request = SubmitRequest(
        app_resource,
        master="k8s://https://127.0.0.1:6443",
        main_class="a.B",
        conf={"spark.kubernetes.container.image": "img", **conf},
    )
    return resolve(request).app_requests()


VE = {
    "spark.executor.resource.ve.amount": "2",
    "spark.executor.resource.ve.vendor": "nec.com",
    "spark.executor.resource.ve.discoveryScript": "/opt/kubeaccel-discover",
}


def test_accelerators_parsed() -> None:
    [accel] = accelerators(VE, "executor")
    assert (accel.resource_name, accel.amount, accel.discovery_script) == ("nec.com/ve", 2, "/opt/kubeaccel-discover")
    assert accelerators(VE, "driver") == ()


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"spark.executor.resource.ve.vendor": ""}, "Resource: ve was requested, but vendor was not specified."),
        ({"spark.executor.resource.ve.amount": "0"}, "not a positive integer"),
        ({"spark.executor.resource.ve.amount": "1.5"}, "not a positive integer"),
        ({"spark.executor.resource.ve.vendor": "nec_com!"}, "not a valid Kubernetes extended resource"),
        ({"spark.executor.resource.ve.discoveryScript": ""}, "no discovery script"),
        ({"spark.executor.resource.ve.amout": "1"}, "unknown resource setting spark.executor.resource.ve.amout"),
    ],
)
def test_bad_accelerator_confs(change: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError) as info:
        accelerators({**VE, **change}, "executor")
    assert words in info.value.message
    assert info.value.hint


def test_missing_amount() -> None:
    conf = {k: v for k, v in VE.items() if not k.endswith("amount")}
    with pytest.raises(ConfigError, match="has no amount"):
        accelerators(conf, "executor")


def test_discovery_plugin_replaces_script() -> None:
    conf = {k: v for k, v in VE.items() if not k.endswith("discoveryScript")}
    conf["spark.resources.discoveryPlugin"] = "com.example.Plugin"
    assert accelerators(conf, "executor")[0].discovery_script is None


@pytest.mark.parametrize(
    ("conf", "mib"),
    [
        ({}, 1024 + 384),
        ({"spark.driver.memory": "8g"}, 8192 + 819),
        ({"spark.driver.memory": "2g", "spark.kubernetes.resource.type": "python"}, 2048 + 819),
        ({"spark.driver.memoryOverhead": "512m"}, 1536),
        ({"spark.driver.memory": "10g", "spark.driver.memoryOverheadFactor": "0.2"}, 10240 + 2048),
        ({"spark.driver.memory": "10g", "spark.kubernetes.memoryOverheadFactor": "0.3"}, 10240 + 3072),
        ({"spark.driver.minMemoryOverhead": "500m"}, 1024 + 500),
    ],
)
def test_driver_memory(conf: dict[str, str], mib: int) -> None:
    assert pod_memory_mib(conf, "driver") == mib


def test_executor_memory_includes_off_heap_and_pyspark() -> None:
    conf = {
        "spark.memory.offHeap.enabled": "true",
        "spark.memory.offHeap.size": "1g",
        "spark.executor.pyspark.memory": "512m",
    }
    assert pod_memory_mib(conf, "executor") == 1024 + 384 + 1024 + 512


def test_cpu_request() -> None:
    assert cpu_request({}, "driver") == "1"
    assert cpu_request({"spark.executor.cores": "4"}, "executor") == "4"
    assert (
        cpu_request({"spark.kubernetes.executor.request.cores": "250m", "spark.executor.cores": "4"}, "executor")
        == "250m"
    )
    with pytest.raises(ConfigError):
        cpu_request({"spark.driver.cores": "zero"}, "driver")


def test_app_requests_adds_driver_and_all_executors() -> None:
    conf = {
        **VE,
        "spark.executor.instances": "3",
        "spark.executor.cores": "2",
        "spark.executor.memory": "4g",
        "spark.kubernetes.executor.limit.cores": "2",
    }
    totals = app_requests(conf)
    assert totals["pods"] == 4
    assert totals["requests.cpu"] == 1 + 3 * 2
    assert totals["requests.memory"] == Decimal((1408 + 3 * (4096 + 409)) * 2**20)
    assert totals["limits.cpu"] == 6
    assert totals["requests.nec.com/ve"] == 6


def test_pyspark_preflight_counts_the_non_jvm_overhead() -> None:
    """The bug this model fixes: PySpark executors need 0.4 overhead, not 0.1, in the quota's arithmetic."""
    conf = {"spark.executor.instances": "3", "spark.executor.memory": "4g"}
    python = app_requests(conf, "local:///job.py")
    jvm = app_requests(conf)
    executor_python = 4096 + int(NON_JVM_OVERHEAD_FACTOR * 4096)
    executor_jvm = 4096 + int(JVM_OVERHEAD_FACTOR * 4096)
    assert python["requests.memory"] == Decimal((1024 + 409 + 3 * executor_python) * 2**20)
    assert jvm["requests.memory"] == Decimal((1024 + 384 + 3 * executor_jvm) * 2**20)
    assert python["requests.memory"] > 18 * 2**30  # 3 x 4g PySpark executors do not fit in 16Gi


def test_driver_factor_is_propagated_to_executors() -> None:
    """Spark writes the driver's overheadFactor as spark.kubernetes.memoryOverheadFactor for executors."""
    conf = {"spark.driver.memoryOverheadFactor": "0.5", "spark.executor.memory": "10g", "spark.executor.instances": "1"}
    totals = app_requests(conf)
    assert totals["requests.memory"] == Decimal(((1024 + 512) + (10240 + 5120)) * 2**20)


def test_off_heap_size_without_unit_is_bytes() -> None:
    conf = {"spark.memory.offHeap.enabled": "true", "spark.memory.offHeap.size": str(512 * 2**20)}
    assert pod_memory_mib(conf, "executor") == 1024 + 384 + 512


@pytest.mark.parametrize(
    ("conf", "words"),
    [
        ({"spark.executor.memory": "0"}, "must be at least 1m"),
        ({"spark.kubernetes.memoryOverheadFactor": "nan"}, "must be a number above 0"),
        ({"spark.kubernetes.memoryOverheadFactor": "inf"}, "must be a number above 0"),
        ({"spark.executor.memoryOverheadFactor": "-1"}, "must be a number above 0"),
        ({"spark.executor.instances": "-1"}, "not a whole number"),
        ({"spark.executor.instances": "0"}, "not a whole number from 1"),
        ({"spark.executor.memory": "99999999999t"}, "more than 1 PiB"),
        ({"spark.executor.cores": "0"}, "not a whole number from 1"),
        ({"spark.kubernetes.executor.request.cores": "-1"}, "must be above 0"),
        ({"spark.memory.offHeap.enabled": "yes"}, "not true or false"),
    ],
)
def test_bad_numbers_are_refused(conf: dict[str, str], words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        app_requests(conf)
