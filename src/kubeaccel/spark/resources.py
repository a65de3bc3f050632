"""What one driver or executor pod asks of the cluster, by Spark's own rules. Pure.

Spark 4.3's BasicDriverFeatureStep / BasicExecutorFeatureStep, as facts:
- container memory = heap + overhead (+ off-heap + `spark.executor.pyspark.memory` for executors);
- overhead = `spark.<role>.memoryOverhead`, else max(factor * heap, `spark.<role>.minMemoryOverhead` = 384 MiB);
- the driver's factor ("overheadFactor") is `spark.driver.memoryOverheadFactor`, else
  `spark.kubernetes.memoryOverheadFactor`, else 0.4 for Python/R apps and 0.1 for JVM apps. The driver
  writes it into its conf as `spark.kubernetes.memoryOverheadFactor`, which is what executors fall back
  to when `spark.executor.memoryOverheadFactor` is not set;
- cpu request = `spark.kubernetes.<role>.request.cores` verbatim, else `spark.<role>.cores`; limit =
  `spark.kubernetes.<role>.limit.cores`; devices from `spark.<role>.resource.<name>.{amount,vendor,...}`.
The typed model (`model.ResolvedApp`) is built from these; the quota pre-flight and the builder read
the model, and the pre-flight reads other running apps' confs through the same functions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from kubeaccel.devices.naming import is_valid_resource_name
from kubeaccel.errors import ConfigError
from kubeaccel.kube.quantity import parse_quantity
from kubeaccel.spark.conf import conf_bool, conf_float, conf_int, size_to_mib

MEMORY_OVERHEAD_MIN_MIB = 384
JVM_OVERHEAD_FACTOR = 0.1
NON_JVM_OVERHEAD_FACTOR = 0.4
FACTOR_KEY = "spark.kubernetes.memoryOverheadFactor"
RESOURCE_TYPE_KEY = "spark.kubernetes.resource.type"
MAX_CORES = 100_000
_RESOURCE_KEY = re.compile(r"^spark\.(driver|executor)\.resource\.([^.]+)\.(.+)$")
_RESOURCE_FIELDS = ("amount", "vendor", "discoveryScript")


@dataclass(frozen=True)
class Accelerator:
    """One `spark.<role>.resource.<name>.*` request, validated."""

    role: str
    name: str
    amount: int
    vendor: str
    discovery_script: str | None

    @property
    def resource_name(self) -> str:
        return f"{self.vendor}/{self.name}"


@dataclass(frozen=True)
class PodResources:
    """What one pod of a role gets: the numbers on its container and what they count against a quota."""

    role: str
    cpu_request: str  # as Spark writes it: `request.cores` verbatim, else the cores
    cpu_limit: str | None
    heap_mib: int
    memory_mib: int  # container request = limit
    accelerators: tuple[Accelerator, ...]

    def quota_requests(self) -> dict[str, Decimal]:
        """What the pod counts against a ResourceQuota, keyed like one (`requests.<vendor>/<name>` for devices)."""
        memory = Decimal(self.memory_mib * 2**20)
        requests = {
            "pods": Decimal(1),
            "requests.cpu": parse_quantity(self.cpu_request),
            "requests.memory": memory,
            "limits.memory": memory,
        }
        if self.cpu_limit:
            requests["limits.cpu"] = parse_quantity(self.cpu_limit)
        for accel in self.accelerators:
            requests[f"requests.{accel.resource_name}"] = Decimal(accel.amount)
        return requests


def accelerators(conf: Mapping[str, str], role: str) -> tuple[Accelerator, ...]:
    """The validated accelerator requests of `role` ("driver" or "executor"), in name order."""
    fields: dict[str, dict[str, str]] = {}
    for key, value in conf.items():
        match = _RESOURCE_KEY.match(key)
        if not match or match.group(1) != role:
            continue
        _, name, attr = match.groups()
        if attr not in _RESOURCE_FIELDS:
            raise ConfigError(
                f"unknown resource setting {key}",
                hint=f"a resource takes spark.{role}.resource.{name}.{{amount,vendor,discoveryScript}}",
            )
        fields.setdefault(name, {})[attr] = value
    has_plugin = bool(conf.get("spark.resources.discoveryPlugin"))
    result = []
    for name, attrs in sorted(fields.items()):
        prefix = f"spark.{role}.resource.{name}"
        raw_amount = attrs.get("amount")
        if raw_amount is None:
            raise ConfigError(f"{prefix} has no amount", hint=f"set {prefix}.amount=1")
        if not re.fullmatch(r"[0-9]{1,6}", raw_amount.strip()) or int(raw_amount) <= 0:
            raise ConfigError(
                f"{prefix}.amount={raw_amount[:100]!r} is not a positive integer",
                hint="a pod gets whole devices: use 1, 2, ...",
            )
        vendor = attrs.get("vendor", "").strip()
        if not vendor:
            # Spark's own wording, so users searching for it find the same fix
            raise ConfigError(
                f"Resource: {name} was requested, but vendor was not specified.",
                hint=f"set {prefix}.vendor to the device plugin's domain, e.g. {prefix}.vendor=nec.com",
            )
        if not is_valid_resource_name(f"{vendor}/{name}"):
            raise ConfigError(
                f"{prefix}.vendor={vendor[:100]!r} with name {name[:100]!r}"
                " is not a valid Kubernetes extended resource",
                hint="the vendor must be a DNS domain (e.g. nvidia.com) and the name a DNS label (e.g. gpu)",
            )
        script = attrs.get("discoveryScript")
        if not script and not has_plugin:
            raise ConfigError(
                f"{prefix} has no discovery script",
                hint=f"Spark needs one to find its devices: set {prefix}.discoveryScript "
                "(kubeaccel ships kubeaccel-discover for this)",
            )
        result.append(Accelerator(role, name, int(raw_amount), vendor, script))
    return tuple(result)


def overhead_factor(conf: Mapping[str, str], non_jvm: bool) -> float:
    """Spark's driver `overheadFactor`, used for the driver and propagated to executors."""
    if "spark.driver.memoryOverheadFactor" in conf:
        return conf_float(conf, "spark.driver.memoryOverheadFactor")
    if FACTOR_KEY in conf:
        return conf_float(conf, FACTOR_KEY)
    return NON_JVM_OVERHEAD_FACTOR if non_jvm else JVM_OVERHEAD_FACTOR


def _memory_mib(conf: Mapping[str, str], role: str, factor: float) -> tuple[int, int]:
    """(heap, container memory) of a role's pod."""
    heap_key = f"spark.{role}.memory"
    heap = size_to_mib(conf.get(heap_key, "1g"), heap_key)
    if heap <= 0:
        raise ConfigError(f"{heap_key}={conf[heap_key][:100]!r} must be at least 1m", hint=f"e.g. {heap_key}=2g")
    overhead_key = f"spark.{role}.memoryOverhead"
    if overhead_key in conf:
        overhead = size_to_mib(conf[overhead_key], overhead_key)
    else:
        minimum_key = f"spark.{role}.minMemoryOverhead"
        minimum = size_to_mib(conf[minimum_key], minimum_key) if minimum_key in conf else MEMORY_OVERHEAD_MIN_MIB
        overhead = max(int(factor * heap), minimum)
    total = heap + overhead
    if role == "executor":
        # off-heap and PySpark worker memory live in the executor container too (Spark's default profile)
        if conf_bool(conf, "spark.memory.offHeap.enabled"):
            total += size_to_mib(
                conf.get("spark.memory.offHeap.size", "0"), "spark.memory.offHeap.size", default_unit="b"
            )
        if "spark.executor.pyspark.memory" in conf:
            total += size_to_mib(conf["spark.executor.pyspark.memory"], "spark.executor.pyspark.memory")
    return heap, total


def _cpu(conf: Mapping[str, str], role: str) -> tuple[str, str | None]:
    explicit = conf.get(f"spark.kubernetes.{role}.request.cores")
    if explicit:
        _positive_quantity(conf, f"spark.kubernetes.{role}.request.cores")
        request = explicit
    else:
        request = str(conf_int(conf, f"spark.{role}.cores", 1, minimum=1, maximum=MAX_CORES))
    limit = conf.get(f"spark.kubernetes.{role}.limit.cores") or None
    if limit:
        _positive_quantity(conf, f"spark.kubernetes.{role}.limit.cores")
    return request, limit


def _positive_quantity(conf: Mapping[str, str], key: str) -> Decimal:
    try:
        value = parse_quantity(conf[key])
    except ConfigError as exc:
        raise ConfigError(f"{key}={conf[key][:100]!r} is not a cpu amount", hint=f"e.g. {key}=500m or 2") from exc
    if not 0 < value <= MAX_CORES:
        raise ConfigError(f"{key}={conf[key][:100]!r} must be above 0 and at most {MAX_CORES}", hint=f"e.g. {key}=2")
    return value


def pod_resources(conf: Mapping[str, str], role: str, factor: float) -> PodResources:
    """One role's pod. `factor`: the driver's overhead factor (for executors, what the driver propagated)."""
    if role == "executor" and "spark.executor.memoryOverheadFactor" in conf:
        factor = conf_float(conf, "spark.executor.memoryOverheadFactor")
    heap, memory = _memory_mib(conf, role, factor)
    request, limit = _cpu(conf, role)
    return PodResources(role, request, limit, heap, memory, accelerators(conf, role))


def executor_resources_of_running_app(conf: Mapping[str, str]) -> PodResources:
    """An admitted app's executor pod, from the conf its driver got (which carries the propagated factor)."""
    factor = conf_float(conf, FACTOR_KEY) if FACTOR_KEY in conf else JVM_OVERHEAD_FACTOR
    return pod_resources(conf, "executor", factor)


def executor_instances(conf: Mapping[str, str]) -> int:
    """The most executors the app holds at once (with dynamic allocation: its maxExecutors when given)."""
    dynamic = conf_bool(conf, "spark.dynamicAllocation.enabled")
    # as spark-submit (and the driver's own argument check): without dynamic allocation,
    # "Number of executors must be a positive number"
    instances = conf_int(conf, "spark.executor.instances", 2, minimum=0 if dynamic else 1)
    if dynamic:
        # Spark's default maxExecutors is unbounded; a quota check can count only a stated maximum
        maximum = conf_int(conf, "spark.dynamicAllocation.maxExecutors", instances)
        return max(instances, maximum)
    return instances


def add_requests(totals: dict[str, Decimal], requests: Mapping[str, Decimal], count: int = 1) -> dict[str, Decimal]:
    for key, value in requests.items():
        totals[key] = totals.get(key, Decimal(0)) + value * count
    return totals
