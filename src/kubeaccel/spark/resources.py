"""What an application asks of the cluster: cores, memory with overhead, accelerators, pod count.

Spark's rules for the driver and executor pods (memory overhead factor 0.1 for JVM apps and 0.4 for
Python/R, never below 384 MiB; `request.cores` over `cores`), plus the accelerator confs
`spark.{driver,executor}.resource.{name}.{amount,vendor,discoveryScript}`, validated up front so a
typo fails the submit instead of leaving executors Pending.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal

from kubeaccel.devices.naming import is_valid_resource_name
from kubeaccel.errors import ConfigError
from kubeaccel.kube.quantity import parse_quantity
from kubeaccel.spark.conf import size_to_mib

MEMORY_OVERHEAD_MIN_MIB = 384
JVM_OVERHEAD_FACTOR = 0.1
NON_JVM_OVERHEAD_FACTOR = 0.4
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


def accelerators(conf: Mapping[str, str], role: str) -> list[Accelerator]:
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
        if not re.fullmatch(r"[0-9]+", raw_amount.strip()) or int(raw_amount) <= 0:
            raise ConfigError(
                f"{prefix}.amount={raw_amount!r} is not a positive integer",
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
                f"{prefix}.vendor={vendor!r} with name {name!r} is not a valid Kubernetes extended resource",
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
    return result


def is_non_jvm(conf: Mapping[str, str]) -> bool:
    return conf.get("spark.kubernetes.resource.type", "java") in ("python", "r")


def default_overhead_factor(conf: Mapping[str, str]) -> float:
    """Spark's `spark.kubernetes.memoryOverheadFactor` default, also propagated to executors."""
    if "spark.kubernetes.memoryOverheadFactor" in conf:
        return _factor(conf, "spark.kubernetes.memoryOverheadFactor")
    return NON_JVM_OVERHEAD_FACTOR if is_non_jvm(conf) else JVM_OVERHEAD_FACTOR


def _factor(conf: Mapping[str, str], key: str) -> float:
    try:
        value = float(conf[key])
    except ValueError as exc:
        raise ConfigError(f"{key}={conf[key]!r} is not a number", hint=f"e.g. {key}=0.1") from exc
    if value <= 0:
        raise ConfigError(f"{key}={conf[key]!r} must be positive", hint=f"e.g. {key}=0.1")
    return value


def pod_memory_mib(conf: Mapping[str, str], role: str) -> int:
    """Container memory for the role's pod: heap + overhead (explicit, or factor * heap, at least 384 MiB)."""
    memory = size_to_mib(conf.get(f"spark.{role}.memory", "1g"), f"spark.{role}.memory")
    overhead_key = f"spark.{role}.memoryOverhead"
    if overhead_key in conf:
        overhead = size_to_mib(conf[overhead_key], overhead_key)
    else:
        factor_key = f"spark.{role}.memoryOverheadFactor"
        factor = _factor(conf, factor_key) if factor_key in conf else default_overhead_factor(conf)
        minimum_key = f"spark.{role}.minMemoryOverhead"
        minimum = size_to_mib(conf[minimum_key], minimum_key) if minimum_key in conf else MEMORY_OVERHEAD_MIN_MIB
        overhead = max(int(factor * memory), minimum)
    total = memory + overhead
    if role == "executor":
        # off-heap and PySpark worker memory live in the executor container too
        if conf.get("spark.memory.offHeap.enabled", "false").lower() == "true":
            total += size_to_mib(conf.get("spark.memory.offHeap.size", "0"), "spark.memory.offHeap.size")
        if "spark.executor.pyspark.memory" in conf:
            total += size_to_mib(conf["spark.executor.pyspark.memory"], "spark.executor.pyspark.memory")
    return total


def cpu_request(conf: Mapping[str, str], role: str) -> str:
    """The cpu request as Spark writes it: `request.cores` verbatim, else `spark.<role>.cores`."""
    explicit = conf.get(f"spark.kubernetes.{role}.request.cores")
    if explicit:
        parse_quantity(explicit)
        return explicit
    cores = conf.get(f"spark.{role}.cores", "1")
    if not re.fullmatch(r"[0-9]+", cores.strip()) or int(cores) <= 0:
        raise ConfigError(f"spark.{role}.cores={cores!r} is not a positive integer", hint=f"e.g. spark.{role}.cores=2")
    return str(int(cores))


def executor_instances(conf: Mapping[str, str]) -> int:
    raw = conf.get("spark.executor.instances", "2")
    if not re.fullmatch(r"[0-9]+", raw.strip()):
        raise ConfigError(f"spark.executor.instances={raw!r} is not a whole number", hint="e.g. 4")
    if conf.get("spark.dynamicAllocation.enabled", "false").lower() == "true":
        # with dynamic allocation the most the app can hold is maxExecutors (Spark's default: unbounded)
        max_raw = conf.get("spark.dynamicAllocation.maxExecutors")
        if max_raw and re.fullmatch(r"[0-9]+", max_raw.strip()):
            return max(int(raw), int(max_raw))
    return int(raw)


def pod_requests(conf: Mapping[str, str], role: str) -> dict[str, Decimal]:
    """What one pod of `role` asks for, keyed like a ResourceQuota (`requests.<vendor>/<name>` for devices)."""
    memory = Decimal(pod_memory_mib(conf, role) * 2**20)
    requests = {
        "pods": Decimal(1),
        "requests.cpu": parse_quantity(cpu_request(conf, role)),
        "requests.memory": memory,
        "limits.memory": memory,
    }
    limit_cores = conf.get(f"spark.kubernetes.{role}.limit.cores")
    if limit_cores:
        requests["limits.cpu"] = parse_quantity(limit_cores)
    for accel in accelerators(conf, role):
        requests[f"requests.{accel.resource_name}"] = Decimal(accel.amount)
    return requests


def add_requests(totals: dict[str, Decimal], requests: Mapping[str, Decimal], count: int = 1) -> dict[str, Decimal]:
    for key, value in requests.items():
        totals[key] = totals.get(key, Decimal(0)) + value * count
    return totals


def app_requests(conf: Mapping[str, str]) -> dict[str, Decimal]:
    """Total requests of the whole application (driver + all executors), keyed like a ResourceQuota.

    Extended resources appear as `requests.<vendor>/<name>`, the only form a quota allows them in.
    """
    totals = add_requests({}, pod_requests(conf, "driver"))
    return add_requests(totals, pod_requests(conf, "executor"), executor_instances(conf))
