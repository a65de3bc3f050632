"""Accelerator confs, memory/cpu math and whole-app totals for the quota pre-flight."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kubeaccel.errors import ConfigError
from kubeaccel.spark.resources import accelerators, app_requests, cpu_request, pod_memory_mib

VE = {
    "spark.executor.resource.ve.amount": "2",
    "spark.executor.resource.ve.vendor": "nec.com",
    "spark.executor.resource.ve.discoveryScript": "/opt/kubeaccel-discover",
}


def test_accelerators_parsed() -> None:
    [accel] = accelerators(VE, "executor")
    assert (accel.resource_name, accel.amount, accel.discovery_script) == ("nec.com/ve", 2, "/opt/kubeaccel-discover")
    assert accelerators(VE, "driver") == []


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
