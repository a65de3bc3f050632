"""The pod-level confs parsed once (kubeaccel.spark.podconf).

Matrix: every key family (labels, annotations, selectors, env, pull secrets, scheduler, Service families and
policy, template containers, Python) by valid values round-trip into `PodConf` and the built objects, and
invalid ones end in one ConfigError naming the key (hypothesis over the input space), never a traceback.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel.errors import ConfigError
from kubeaccel.spark.builder import Generated, build
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.model import resolve
from kubeaccel.spark.podconf import PodConf, qualified_name_problem, resolve_pod_conf, resolve_service

MASTER = "k8s://https://127.0.0.1:6443"
BASE = {"spark.kubernetes.container.image": "spark:4.3", "spark.kubernetes.namespace": "ns"}
GEN = Generated("spark-0123", "abc", "def", "ghi", "uuid", 0, "me")

_LABEL_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
label_names = st.from_regex(r"[a-z0-9]([-a-z0-9_.]{0,20}[a-z0-9])?", fullmatch=True)


def _built(conf: dict[str, str]) -> tuple[dict, dict]:  # type: ignore[type-arg]
    app = resolve(SubmitRequest("local:///opt/app.jar", master=MASTER, main_class="A", conf={**BASE, **conf}))
    manifests = build(app, GEN)
    return manifests.driver_pod, manifests.service


def test_defaults() -> None:
    assert resolve_pod_conf({}) == PodConf()
    pod, svc = _built({})
    assert svc["spec"]["ipFamilies"] == ["IPv4"] and svc["spec"]["ipFamilyPolicy"] == "SingleStack"
    assert "schedulerName" not in pod["spec"] and "imagePullSecrets" not in pod["spec"]


def test_every_family_reaches_the_objects() -> None:
    pod, svc = _built(
        {
            "spark.kubernetes.driver.label.team": "etl",
            "spark.kubernetes.driver.annotation.example.com/run": "{{APP_ID}}",
            "spark.kubernetes.node.selector.zone": "a",
            "spark.kubernetes.driver.node.selector.zone": "b",
            "spark.kubernetes.driverEnv.MODE": "fast",
            "spark.kubernetes.container.image.pullSecrets": "reg1, reg2",
            "spark.kubernetes.scheduler.name": "volcano",
            "spark.kubernetes.driver.service.ipFamilies": "IPv6,IPv4",
            "spark.kubernetes.driver.service.ipFamilyPolicy": "PreferDualStack",
            "spark.kubernetes.driver.service.label.svc": "x",
            "spark.kubernetes.driver.service.annotation.note": "y",
        }
    )
    assert pod["metadata"]["labels"]["team"] == "etl"
    assert pod["metadata"]["annotations"]["example.com/run"] == GEN.app_id
    assert pod["spec"]["nodeSelector"] == {"zone": "b"}  # the driver's own wins, as in Spark
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][-1]["env"]}
    assert env["MODE"] == "fast"
    assert pod["spec"]["imagePullSecrets"] == [{"name": "reg1"}, {"name": "reg2"}]
    assert pod["spec"]["schedulerName"] == "volcano"
    assert svc["spec"]["ipFamilies"] == ["IPv6", "IPv4"] and svc["spec"]["ipFamilyPolicy"] == "PreferDualStack"
    assert svc["metadata"]["labels"]["svc"] == "x" and svc["metadata"]["annotations"] == {"note": "y"}


def test_driver_scheduler_wins_over_the_shared_one() -> None:
    conf = {"spark.kubernetes.scheduler.name": "a", "spark.kubernetes.driver.scheduler.name": "b"}
    assert resolve_pod_conf(conf).scheduler_name == "b"


def test_python_interpreters() -> None:
    assert resolve_pod_conf({"spark.pyspark.python": "p3"}).driver_python == "p3"
    pc = resolve_pod_conf({"spark.pyspark.python": "p3", "spark.pyspark.driver.python": "d3"})
    assert (pc.python, pc.driver_python) == ("p3", "d3")


@pytest.mark.parametrize(
    ("conf", "key"),
    [
        ({"spark.kubernetes.driver.label.bad key": "v"}, "spark.kubernetes.driver.label.bad key"),
        ({"spark.kubernetes.driver.label.team": "no spaces"}, "spark.kubernetes.driver.label.team"),
        ({"spark.kubernetes.driver.label.team": "x" * 64}, "spark.kubernetes.driver.label.team"),
        ({"spark.kubernetes.driver.label.Bad_/x": "v"}, "spark.kubernetes.driver.label.Bad_/x"),
        ({"spark.kubernetes.node.selector.-z": "a"}, "spark.kubernetes.node.selector.-z"),
        ({"spark.kubernetes.driver.annotation.a b": "v"}, "spark.kubernetes.driver.annotation.a b"),
        ({"spark.kubernetes.driver.annotation.big": "x" * 300_000}, "spark.kubernetes.driver.annotation."),
        ({"spark.kubernetes.driverEnv.A=B": "v"}, "spark.kubernetes.driverEnv.'A=B'"),
        ({"spark.kubernetes.container.image.pullSecrets": "ok,Not_OK"}, "spark.kubernetes.container.image.pullSecrets"),
        ({"spark.kubernetes.scheduler.name": "My Scheduler"}, "spark.kubernetes.scheduler.name"),
        ({"spark.kubernetes.driver.service.ipFamilies": "IPv5"}, "spark.kubernetes.driver.service.ipFamilies"),
        ({"spark.kubernetes.driver.service.ipFamilies": "IPv4,IPv4"}, "spark.kubernetes.driver.service.ipFamilies"),
        ({"spark.kubernetes.driver.service.ipFamilies": "IPv4,IPv6"}, "spark.kubernetes.driver.service.ipFamilies"),
        ({"spark.kubernetes.driver.service.ipFamilyPolicy": "Dual"}, "spark.kubernetes.driver.service.ipFamilyPolicy"),
        ({"spark.kubernetes.driver.service.label.a": "b c"}, "spark.kubernetes.driver.service.label.a"),
    ],
)
def test_bad_values_name_their_key(conf: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        resolve_pod_conf(conf)
    assert key in str(err.value)
    assert err.value.hint


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80), st.text(max_size=80))
def test_any_label_is_accepted_iff_kubernetes_would(key: str, value: str) -> None:
    conf = {f"spark.kubernetes.driver.label.{key}": value}
    prefix, slash, name = key.rpartition("/")
    valid_key = bool(key) and qualified_name_problem(key) is None
    valid_value = value == "" or (len(value) <= 63 and _LABEL_NAME.fullmatch(value) is not None)
    if not key:
        assert resolve_pod_conf(conf).driver_labels == {}
        return
    if valid_key and valid_value:
        assert resolve_pod_conf(conf).driver_labels == {key: value}
    else:
        with pytest.raises(ConfigError) as err:
            resolve_pod_conf(conf)
        assert "spark.kubernetes.driver.label." in str(err.value)
    # the oracle for the name part, independent of the implementation's split
    if valid_key:
        assert len(name) <= 63 and _LABEL_NAME.fullmatch(name)
        assert not slash or (0 < len(prefix) <= 253)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(label_names, label_names, max_size=5), st.dictionaries(label_names, label_names, max_size=5))
def test_selectors_merge_with_the_driver_winning(shared: dict[str, str], own: dict[str, str]) -> None:
    conf = {f"spark.kubernetes.node.selector.{k}": v for k, v in shared.items()}
    conf |= {f"spark.kubernetes.driver.node.selector.{k}": v for k, v in own.items()}
    assert dict(resolve_pod_conf(conf).node_selector) == {**shared, **own}


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.sampled_from(["IPv4", "IPv6", "IPv5", "", " IPv4", "ipv4"]), min_size=1, max_size=3),
    st.sampled_from(["SingleStack", "PreferDualStack", "RequireDualStack", "singlestack", ""]),
)
def test_ip_families(families: list[str], policy: str) -> None:
    conf = {
        "spark.kubernetes.driver.service.ipFamilies": ",".join(families),
        "spark.kubernetes.driver.service.ipFamilyPolicy": policy,
    }
    stripped = [f.strip() for f in families]
    ok = (
        len(stripped) == len(set(stripped)) <= 2
        and set(stripped) <= {"IPv4", "IPv6"}
        and policy in ("SingleStack", "PreferDualStack", "RequireDualStack")
        and not (policy == "SingleStack" and len(stripped) == 2)
    )
    if ok:
        svc = resolve_service(conf)
        assert svc.ip_families == tuple(stripped) and svc.ip_family_policy == policy
    else:
        with pytest.raises(ConfigError) as err:
            resolve_service(conf)
        assert "spark.kubernetes.driver.service.ipFamil" in str(err.value)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=30), st.text(max_size=30), max_size=4))
def test_driver_env_never_tracebacks(env: dict[str, str]) -> None:
    conf = {f"spark.kubernetes.driverEnv.{k}": v for k, v in env.items()}
    try:
        got = resolve_pod_conf(conf).driver_env
    except ConfigError as err:
        assert "spark.kubernetes.driverEnv." in str(err)
        assert any("=" in k or any(not " " <= c <= "~" for c in k) for k in env)
    else:
        assert dict(got) == env
