"""The invariant the quota pre-flight rests on, over generated confs (hypothesis), JVM and non-JVM apps:

    what the pre-flight counts per pod == the requests on the built driver pod
                                       == what Spark gives its executor pods.

The pre-flight reads `ResolvedApp.driver` / `.executor`. The driver side is read back from the pod the
builder made. The executor side is computed by an oracle written here from Spark 4.3's
BasicExecutorFeatureStep, fed only with the driver's conf as the builder wrote it into the conf
ConfigMap (what the driver, and so its executor pod builder, will read); the driver oracle follows
BasicDriverFeatureStep from the user's conf. The oracles share no code with kubeaccel's resources.py.
"""

from __future__ import annotations

import re
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel.kube.quantity import parse_quantity
from kubeaccel.spark.builder import Generated, build
from kubeaccel.spark.conf import SubmitRequest, parse_properties
from kubeaccel.spark.model import resolve

GEN = Generated("spark-0", "abc", "svc", "cm", "dir", 1_700_000_000_000, "alice")
_UNITS = {"": None, "b": 1, "k": 2**10, "kb": 2**10, "m": 2**20, "mb": 2**20, "g": 2**30, "gb": 2**30}


def _mb(text: str, bare_unit: int = 2**20) -> int:
    """Spark's JavaUtils.byteStringAs(text, MiB): lower-cased, `<digits><unit>`, truncating division."""
    number, unit = re.fullmatch(r"([0-9]+)([a-z]*)", text.strip().lower()).groups()  # type: ignore[union-attr]
    scale = _UNITS[unit] or bare_unit
    return int(number) * scale // 2**20


def _spark_pod(conf: dict[str, str], role: str, factor: float) -> dict[str, Decimal]:
    """One pod's quota-keyed requests, by the rules of Spark's Basic{Driver,Executor}FeatureStep."""
    heap = _mb(conf.get(f"spark.{role}.memory", "1g"))
    if f"spark.{role}.memoryOverhead" in conf:
        overhead = _mb(conf[f"spark.{role}.memoryOverhead"])
    else:
        overhead = max(int(factor * heap), _mb(conf.get(f"spark.{role}.minMemoryOverhead", "384m")))
    memory = heap + overhead
    if role == "executor":
        if conf.get("spark.memory.offHeap.enabled", "false").lower() == "true":
            memory += _mb(conf.get("spark.memory.offHeap.size", "0"), bare_unit=1)
        if "spark.executor.pyspark.memory" in conf:
            memory += _mb(conf["spark.executor.pyspark.memory"])
    cores = conf.get(f"spark.kubernetes.{role}.request.cores") or conf.get(f"spark.{role}.cores", "1")
    result = {
        "pods": Decimal(1),
        "requests.cpu": parse_quantity(cores),
        "requests.memory": Decimal(memory * 2**20),
        "limits.memory": Decimal(memory * 2**20),
    }
    if conf.get(f"spark.kubernetes.{role}.limit.cores"):
        result["limits.cpu"] = parse_quantity(conf[f"spark.kubernetes.{role}.limit.cores"])
    prefix = f"spark.{role}.resource."
    for key, amount in conf.items():
        if key.startswith(prefix) and key.endswith(".amount"):
            name = key[len(prefix) : -len(".amount")]
            result[f"requests.{conf[f'{prefix}{name}.vendor']}/{name}"] = Decimal(int(amount))
    return result


def _spark_driver(user_conf: dict[str, str], non_jvm: bool) -> dict[str, Decimal]:
    # BasicDriverFeatureStep: memoryOverheadFactor = driver factor, else the k8s factor (default 0.1);
    # overheadFactor = 0.4 for a non-JVM resource unless the user set either factor
    driver_key, k8s_key = "spark.driver.memoryOverheadFactor", "spark.kubernetes.memoryOverheadFactor"
    set_by_user = driver_key in user_conf or k8s_key in user_conf
    factor = float(user_conf.get(driver_key) or user_conf.get(k8s_key, "0.1"))
    if non_jvm and not set_by_user:
        factor = 0.4
    return _spark_pod(user_conf, "driver", factor)


def _spark_executor(driver_conf: dict[str, str]) -> dict[str, Decimal]:
    # BasicExecutorFeatureStep: the executor factor, else spark.kubernetes.memoryOverheadFactor (0.1 default)
    factor = float(
        driver_conf.get("spark.executor.memoryOverheadFactor")
        or driver_conf.get("spark.kubernetes.memoryOverheadFactor", "0.1")
    )
    return _spark_pod(driver_conf, "executor", factor)


def _pod_requests(pod: dict) -> dict[str, Decimal]:  # type: ignore[type-arg]
    container = pod["spec"]["containers"][-1]
    requests, limits = container["resources"]["requests"], container["resources"]["limits"]
    result = {
        "pods": Decimal(1),
        "requests.cpu": parse_quantity(requests["cpu"]),
        "requests.memory": parse_quantity(requests["memory"]),
        "limits.memory": parse_quantity(limits["memory"]),
    }
    for key, value in limits.items():
        if key == "cpu":
            result["limits.cpu"] = parse_quantity(value)
        elif "/" in key:
            result[f"requests.{key}"] = Decimal(int(value))
    return result


_sizes = st.builds(
    lambda n, unit: f"{n}{unit}",
    st.integers(min_value=1, max_value=4096),
    st.sampled_from(["", "m", "M", "mb", "g", "G", "gb", "k"]),
).filter(lambda s: _mb(s) >= 1)
_factors = st.floats(min_value=0.01, max_value=3.0, allow_nan=False, allow_infinity=False).map(repr)
_cores = st.integers(min_value=1, max_value=64).map(str)
_quantities = st.sampled_from(["100m", "250m", "500m", "1", "1.5", "2", "2500m", "4"])


@st.composite
def _confs(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    conf = {"spark.kubernetes.container.image": "img"}
    optional = {
        "spark.driver.memory": _sizes,
        "spark.executor.memory": _sizes,
        "spark.driver.memoryOverhead": _sizes,
        "spark.executor.memoryOverhead": _sizes,
        "spark.driver.minMemoryOverhead": _sizes,
        "spark.executor.minMemoryOverhead": _sizes,
        "spark.kubernetes.memoryOverheadFactor": _factors,
        "spark.driver.memoryOverheadFactor": _factors,
        "spark.executor.memoryOverheadFactor": _factors,
        "spark.driver.cores": _cores,
        "spark.executor.cores": _cores,
        "spark.kubernetes.driver.request.cores": _quantities,
        "spark.kubernetes.executor.request.cores": _quantities,
        "spark.kubernetes.driver.limit.cores": _quantities,
        "spark.kubernetes.executor.limit.cores": _quantities,
        "spark.executor.pyspark.memory": _sizes,
        "spark.executor.instances": st.integers(min_value=1, max_value=50).map(str),
    }
    for key, values in optional.items():
        if draw(st.booleans()):
            conf[key] = draw(values)
    if draw(st.booleans()):
        conf["spark.memory.offHeap.enabled"] = draw(st.sampled_from(["true", "false", "TRUE"]))
        conf["spark.memory.offHeap.size"] = draw(st.one_of(_sizes, st.integers(min_value=0, max_value=2**33).map(str)))
    for role in ("driver", "executor"):
        if draw(st.booleans()):
            conf[f"spark.{role}.resource.ve.amount"] = str(draw(st.integers(min_value=1, max_value=8)))
            conf[f"spark.{role}.resource.ve.vendor"] = "nec.com"
            conf[f"spark.{role}.resource.ve.discoveryScript"] = "/opt/discover"
    resource = draw(st.sampled_from(["local:///opt/app.jar", "local:///opt/job.py", "local:///opt/job.R"]))
    return resource, conf


@settings(max_examples=300, deadline=None)
@given(_confs())
def test_preflight_counts_what_the_pods_get(case: tuple[str, dict[str, str]]) -> None:
    resource, user_conf = case
    app = resolve(
        SubmitRequest(resource, master="k8s://https://127.0.0.1:6443", main_class="a.Main", conf=user_conf)
    ).placed("team-a")
    manifests = build(app, GEN)
    # what the driver reads: the properties in its conf ConfigMap
    driver_conf = parse_properties(manifests.config_map["data"]["spark.properties"])

    counted_driver = app.driver.quota_requests()
    assert counted_driver == _pod_requests(manifests.driver_pod)
    assert counted_driver == _spark_driver(user_conf, non_jvm=not resource.endswith(".jar"))

    assert app.executor.quota_requests() == _spark_executor(driver_conf)
    totals = app.app_requests()
    instances = int(user_conf.get("spark.executor.instances", "2"))
    assert totals["pods"] == 1 + instances
