"""spark/dra.py: confs → the claim template and pod fragments (pure), and the API server accepts them.

Hypothesis drives the conf space: any mapping of DRA keys gives requests or a ConfigError naming
a key, never another exception.
"""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel.errors import ConfigError
from kubeaccel.spark import dra

BASE = {"spark.executor.resource.ve.amount": "2", "spark.executor.resource.ve.vendor": "nec.com"}


def test_disabled_by_default() -> None:
    assert dra.requests(BASE, "executor") == []
    with pytest.raises(ConfigError, match="is not true"):
        dra.requests({**BASE, "spark.kubeaccel.dra.executor.ve.numaNode": "1"}, "executor")


def test_requests_with_selectors() -> None:
    conf = {**BASE, dra.ENABLED: "true", "spark.kubeaccel.dra.executor.ve.numaNode": "1",
            "spark.kubeaccel.dra.executor.ve.model": 'VE "3"', "spark.kubeaccel.dra.executor.ve.selector":
            'device.attributes["dra.kubeaccel.io"].index < 4'}
    (req,) = dra.requests(conf, "executor")
    assert (req.name, req.device_class, req.count) == ("ve", "ve.nec.com", 2)
    assert req.selectors == (
        'device.attributes["dra.kubeaccel.io"].numaNode == 1',
        '"model" in device.attributes["dra.kubeaccel.io"] && '
        'string(device.attributes["dra.kubeaccel.io"].model) == "VE \\"3\\""',
        'device.attributes["dra.kubeaccel.io"].index < 4',
    )
    assert dra.requests(conf, "driver") == []
    template = dra.claim_template("app-1", "ns", "executor", [req],
                                  owner={"metadata": {"name": "app-1-driver", "uid": "u-1"}})
    request = template["spec"]["spec"]["devices"]["requests"][0]
    assert request["exactly"]["deviceClassName"] == "ve.nec.com" and request["exactly"]["count"] == 2
    assert len(request["exactly"]["selectors"]) == 3
    assert template["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    fragment = dra.pod_fragment("app-1", "executor")
    assert fragment["spec"]["resourceClaims"] == [
        {"name": "accelerators", "resourceClaimTemplateName": "app-1-executor-accel"}]
    assert dra.quota([req], pods=3) == {"ve.nec.com.deviceclass.resource.k8s.io/devices": 6}


@pytest.mark.parametrize(
    ("extra", "key"),
    [
        ({"spark.kubeaccel.dra.executor.ve.numaNode": "one"}, "numaNode"),
        ({"spark.kubeaccel.dra.executor.ve.colour": "red"}, "unknown DRA setting"),
        ({"spark.kubeaccel.dra.executor.gpu.numaNode": "0"}, "names no Spark resource"),
        ({"spark.kubeaccel.dra.executor.ve.deviceClass": "Bad_Class"}, "deviceClass"),
        ({"spark.kubeaccel.dra.executor.ve.selector": " "}, "selector"),
        ({dra.DRIVER_NAME: "NOPE"}, "driverName"),
        ({"spark.executor.resource.ve.amount": "0"}, "amount"),
        ({dra.ENABLED: "yes"}, "is not true or false"),
        ({"spark.kubeaccel.dra.executor.ve.minMemory": "80 GB"}, r"executor\.ve\.minMemory"),
        ({"spark.kubeaccel.dra.executor.ve.minMemory": "-1Gi"}, "minMemory"),
    ],
)
def test_bad_confs_name_the_key(extra: dict[str, str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        dra.requests({**BASE, dra.ENABLED: "true", **extra}, "executor")


keys = st.sampled_from([
    "spark.kubeaccel.dra.executor.ve.numaNode", "spark.kubeaccel.dra.executor.ve.model",
    "spark.kubeaccel.dra.executor.ve.selector", "spark.kubeaccel.dra.executor.ve.deviceClass",
    "spark.kubeaccel.dra.executor.ve.minMemory",
    "spark.kubeaccel.dra.executor.x.numaNode", "spark.kubeaccel.dra.driver.ve.model", dra.ENABLED, dra.DRIVER_NAME,
    "spark.executor.resource.ve.amount", "spark.executor.resource.ve.vendor", "spark.kubeaccel.dra.what",
])


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.dictionaries(keys, st.text(max_size=30), max_size=8))
def test_any_conf_is_requests_or_a_config_error(conf: dict[str, str]) -> None:
    for role in ("driver", "executor"):
        try:
            found = dra.requests(conf, role)
        except ConfigError as exc:
            assert exc.message and exc.hint
            continue
        for req in found:
            json.dumps(dra.claim_template("a", "ns", role, [req]))
            assert 0 < req.count <= dra.MAX_COUNT



def test_min_memory_selects_on_the_memory_capacity() -> None:
    conf = {**BASE, dra.ENABLED: "true", "spark.kubeaccel.dra.executor.ve.minMemory": " 80Gi ",
            "spark.kubeaccel.dra.executor.ve.selector": 'device.attributes["resource.kubernetes.io"].numaNode == 0'}
    (req,) = dra.requests(conf, "executor")
    assert req.selected == (
        ("spark.kubeaccel.dra.executor.ve.minMemory",
         'device.capacity["dra.kubeaccel.io"].memory.compareTo(quantity("80Gi")) >= 0'),
        ("spark.kubeaccel.dra.executor.ve.selector", 'device.attributes["resource.kubernetes.io"].numaNode == 0'),
    )
    template = dra.claim_template("app", "ns", "executor", [req])
    assert json.loads(template["metadata"]["annotations"][dra.SELECTOR_CONFS]) == [
        ["spark.kubeaccel.dra.executor.ve.minMemory", "spark.kubeaccel.dra.executor.ve.selector"]]


def test_a_refused_selector_is_reported_by_its_conf() -> None:
    from kubeaccel.errors import InvalidError

    conf = {**BASE, dra.ENABLED: "true", "spark.kubeaccel.dra.executor.ve.numaNode": "1",
            "spark.kubeaccel.dra.executor.ve.selector": "device.attributes[["}
    template = dra.claim_template("app", "ns", "executor", dra.requests(conf, "executor"))
    # The shape of the API server's 422 (kube.status turns each cause into "field: message").
    cause = ("spec.spec.devices.requests[0].exactly.selectors[1].cel.expression: Invalid value: "
             "\"device.attributes[[\": compilation failed: ERROR: <input>:1:20: Syntax error")
    refused = InvalidError("the API server rejected resourceclaimtemplate app-executor-accel: " + cause,
                           causes=[cause])
    named = dra.invalid_selector(template, refused)
    assert named is not None
    assert named.message.startswith("spark.kubeaccel.dra.executor.ve.selector: the API server could not compile")
    assert "Syntax error" in named.message and named.hint
    other = InvalidError("the API server rejected it: metadata.name: Invalid value", causes=["metadata.name: bad"])
    assert dra.invalid_selector(template, other) is None
