"""The pure core: names the API server accepts, slices, device classes, claims → devices → CDI.

Hypothesis drives the inputs a user or the API server controls: device IDs of any shape, and
ResourceClaim JSON of any shape (a malformed allocation must be a ``ClaimError``, never a crash).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from dra.node import DRIVER, NODE, POOL, SIM, claim_json
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel.devices import cdi
from kubeaccel.devices.backends.simulated import Config, create
from kubeaccel.devices.model import Device, Devices, Health
from kubeaccel.dra.claims import ClaimError, allocated, claim_spec
from kubeaccel.dra.model import (
    HEALTH_TAINT_KEY,
    Pool,
    check_driver_name,
    device_attributes,
    device_class,
    device_class_name,
    device_names,
    dns_label,
    pool_name,
    resource_slice,
    resource_slices,
    slice_name,
)
from kubeaccel.errors import ConfigError

DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
C_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.text(max_size=300))
def test_dns_label_is_always_valid(raw: str) -> None:
    assert DNS_LABEL.fullmatch(dns_label(raw))


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.lists(st.text(min_size=1, max_size=80), min_size=1, max_size=30, unique=True))
def test_device_names_are_unique_labels(ids: list[str]) -> None:
    devices = Devices(Device(id=i, index=str(n)) for n, i in enumerate(ids))
    names = device_names(devices)
    assert len(names) == len(ids)
    assert all(DNS_LABEL.fullmatch(n) for n in names)
    assert device_names(devices) == names  # stable


def test_names_for_real_resources() -> None:
    assert pool_name("worker-1", "nec.com/ve") == "worker-1/nec.com/ve"
    assert device_class_name("nec.com/ve") == "ve.nec.com"
    assert DNS_SUBDOMAIN.fullmatch(slice_name("worker-1", DRIVER, "nec.com/ve"))
    long = slice_name("n" * 60, DRIVER, "nec.com/ve")
    assert len(long) <= 63 and DNS_LABEL.fullmatch(long)
    assert check_driver_name("dra.example.com") == "dra.example.com"
    for bad in ("", "UPPER.example.com", "a_b.example.com", "x" * 64):
        with pytest.raises(ConfigError, match="not a valid DRA driver name"):
            check_driver_name(bad)


def _sim(count: int = 4, numa: int = 2):
    return create(SIM, Config(count=count, numaNodes=numa))


def test_resource_slice_taints_unhealthy_devices_or_leaves_them_out() -> None:
    devices = Devices([Device("sim-0", "0", numa_node=0), Device("sim-1", "1", Health.UNHEALTHY, numa_node=1,
                                                                   attributes=(("model", "VE3"), ("bad key", "x")))])
    pool = Pool.of(NODE, SIM, devices)
    doc = resource_slice(NODE, DRIVER, pool, 7)
    spec = doc["spec"]
    assert spec["pool"] == {"name": POOL, "generation": 7, "resourceSliceCount": 1}
    assert spec["nodeName"] == NODE and spec["driver"] == DRIVER
    by_name = {d["name"]: d for d in spec["devices"]}
    assert "taints" not in by_name["sim-0"]
    assert by_name["sim-1"]["taints"] == [{"key": HEALTH_TAINT_KEY, "value": "Unhealthy", "effect": "NoSchedule"}]
    assert by_name["sim-1"]["attributes"] == {
        "id": {"string": "sim-1"}, "index": {"int": 1}, "model": {"string": "VE3"}, "numaNode": {"int": 1},
        "resource": {"string": SIM}, "resource.kubernetes.io/numaNode": {"int": 1}}
    untainted = resource_slice(NODE, DRIVER, pool, 8, taints=False)
    assert [d["name"] for d in untainted["spec"]["devices"]] == ["sim-0"]


@settings(deadline=None)  # a loaded CI machine must not turn slowness into failures
@given(st.lists(st.tuples(st.text(max_size=40), st.text(max_size=100)), max_size=20))
def test_attributes_are_always_valid(attrs: list[tuple[str, str]]) -> None:
    device = Device("x", "3", attributes=tuple(attrs))
    out = device_attributes(SIM, device)
    for key, value in out.items():
        # The API's rule: an identifier, or a DNS subdomain (at most 63 characters here) / an identifier.
        domain, slash, name = key.rpartition("/")
        assert C_IDENT.fullmatch(name)
        assert not slash or (DNS_SUBDOMAIN.fullmatch(domain) and len(domain) <= 63)
        (kind, v), = value.items()
        assert kind in ("int", "bool", "string")
        if kind == "string":
            assert len(v) <= 64


def test_device_class_selects_one_resource_and_names_the_extended_resource() -> None:
    doc = device_class(DRIVER, "nec.com/ve")
    assert doc["metadata"]["name"] == "ve.nec.com"
    assert doc["spec"]["extendedResourceName"] == "nec.com/ve"
    assert doc["spec"]["selectors"] == [{"cel": {"expression":
        f'device.driver == "{DRIVER}" && device.attributes["{DRIVER}"].resource == "nec.com/ve"'}}]
    assert "extendedResourceName" not in device_class(DRIVER, "nec.com/ve", extended_resource=False)["spec"]


def _pools():
    backend = _sim()
    return {POOL: Pool.of(NODE, SIM, backend.scan())}, {SIM: backend}


def test_claim_spec_groups_variables_per_request() -> None:
    pools, backends = _pools()
    uid = str(uuid.uuid4())
    claim = claim_json("c", ["sim-2", "sim-0"], uid=uid)
    claim["status"]["allocation"]["devices"]["results"].append(
        {"request": "other", "driver": DRIVER, "pool": POOL, "device": "sim-3"})
    claim["status"]["allocation"]["devices"]["results"].append(
        {"request": "gpu", "driver": "gpu.example.com", "pool": "p", "device": "g"})  # not ours: ignored
    devices = allocated(claim, uid, DRIVER, pools)
    assert [(d.request, d.name) for d in devices] == [("req", "sim-2"), ("req", "sim-0"), ("other", "sim-3")]
    document, ids = claim_spec(DRIVER, uid, devices, backends)
    env = {d["name"]: d["containerEdits"].get("env") for d in document["devices"]}
    assert env[f"{uid}-sim-0"] == env[f"{uid}-sim-2"] == ["KUBEACCEL_DEVICES_EXAMPLE_COM_SIM=0,2"]
    assert env[f"{uid}-sim-3"] == ["KUBEACCEL_DEVICES_EXAMPLE_COM_SIM=3"]
    assert ids[(POOL, "sim-3")] == f"{DRIVER}/claim={uid}-sim-3"
    assert document["kind"] == cdi.kind_for(f"{DRIVER}/claim")


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)


def _mutations() -> st.SearchStrategy[Any]:
    result = st.fixed_dictionaries({}, optional={
        "request": json_values | st.just("req"), "driver": json_values | st.just(DRIVER),
        "pool": json_values | st.just(POOL), "device": json_values | st.sampled_from(["sim-0", "sim-1", "sim-9"]),
    })
    return st.one_of(
        json_values,
        st.fixed_dictionaries({"metadata": st.just({"name": "c", "uid": "u"}),
                               "status": st.one_of(json_values, st.fixed_dictionaries({"allocation": st.one_of(
                                   json_values, st.fixed_dictionaries({"devices": st.one_of(
                                       json_values, st.fixed_dictionaries({"results": st.one_of(
                                           json_values,
                                           st.lists(st.one_of(result, json_values), max_size=5))}))}))}))}),
    )


@settings(max_examples=300, deadline=None)
@given(_mutations())
def test_any_claim_json_is_devices_or_a_claim_error(claim: Any) -> None:
    pools, backends = _pools()
    try:
        devices = allocated(claim, "u", DRIVER, pools)
    except ClaimError as exc:
        assert str(exc)
        return
    assert devices
    assert all(d.pool == POOL and d.name in pools[POOL].devices for d in devices)
    document, ids = claim_spec(DRIVER, "u", devices, backends)
    assert len(ids) == len(document["devices"]) == len({(d.pool, d.name) for d in devices})


def test_a_big_pool_is_split_over_slices_of_one_generation() -> None:
    pool = Pool.of(NODE, SIM, create(SIM, Config(count=300)).scan())
    slices = resource_slices(NODE, DRIVER, pool, 3)
    assert [len(s["spec"]["devices"]) for s in slices] == [128, 128, 44]
    assert {s["spec"]["pool"]["resourceSliceCount"] for s in slices} == {3}
    assert len({s["metadata"]["name"] for s in slices}) == 3
    assert resource_slices(NODE, DRIVER, Pool.of(NODE, SIM, Devices()), 1)[0]["spec"]["devices"] == []


# ---- attributes and capacity: typed values, qualified names, quantities, the API's limits --------

from kubeaccel.devices.model import Version, semver  # noqa: E402
from kubeaccel.devices.quantity import MAX_QUANTITY, format_quantity, parse_quantity  # noqa: E402
from kubeaccel.dra.model import MAX_ATTRIBUTES_AND_CAPACITY, slice_device  # noqa: E402
from kubeaccel.errors import ConfigError as _ConfigError  # noqa: E402

_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)")  # semver.org 2.0 core, no pre-release
_QUALIFIED = re.compile(r"((?=.{1,63}/)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                        r"[A-Za-z_][A-Za-z0-9_]{0,31}")


@pytest.mark.parametrize(("raw", "version"), [("580.159.04", "580.159.4"), ("9.0", "9.0.0"), ("12", "12.0.0"),
                                              ("1.2.3", "1.2.3"), ("v1", None), ("1.2.3.4", None), ("", None),
                                              ("1..2", None), ("٣.1", None)])
def test_semver_normalises_driver_versions(raw: str, version: str | None) -> None:
    assert semver(raw) == version


@given(st.text(max_size=80))
def test_semver_is_a_valid_version_or_none(raw: str) -> None:
    out = semver(raw)
    assert out is None or (isinstance(out, Version) and _SEMVER.fullmatch(out) and len(out) <= 64)


@pytest.mark.parametrize(("text", "value"), [("80Gi", 80 * 2**30), ("141G", 141 * 10**9), ("0", 0), ("16", 16),
                                             (" 1Ki ", 1024), ("2E", 2 * 10**18)])
def test_parse_quantity(text: str, value: int) -> None:
    assert parse_quantity(text) == value


@pytest.mark.parametrize("text", ["80 Gi", "-1", "1.5Gi", "80gb", "", "Gi", "9Ei", "1m"])
def test_bad_quantities_say_what_is_allowed(text: str) -> None:
    with pytest.raises(ValueError, match=r"quantity|larger than"):
        parse_quantity(text)


@given(st.integers(min_value=0, max_value=MAX_QUANTITY))
def test_formatted_quantities_parse_back(value: int) -> None:
    assert parse_quantity(format_quantity(value)) == value


def test_format_quantity_picks_the_largest_exact_suffix() -> None:
    assert [format_quantity(v) for v in (150754820096, 48 * 10**9, 80 * 2**30, 8, 0)] == [
        "143771Mi", "48G", "80Gi", "8", "0"]


values = st.one_of(st.text(max_size=100), st.integers(), st.booleans(),
                   st.text(max_size=20).map(lambda t: semver(t) or "x"), st.text(max_size=80).map(Version))
names = st.one_of(st.text(max_size=40), st.from_regex(r"[a-z]{1,10}(\.[a-z]{1,10})?/[A-Za-z_]\w{0,40}", fullmatch=True))


@settings(deadline=None)
@given(st.lists(st.tuples(names, values), max_size=60),
       st.lists(st.tuples(names, st.integers(min_value=-5, max_value=2**64)), max_size=40),
       st.one_of(st.none(), st.integers(min_value=0, max_value=1023)))
def test_any_backend_facts_make_a_slice_entry_the_api_accepts(
    attributes: list[tuple[str, Any]], capacity: list[tuple[str, int]], numa: int | None
) -> None:
    device = Device("d-0", "0", numa_node=numa, attributes=tuple(attributes), capacity=tuple(capacity))
    entry = slice_device(SIM, "d-0", device, taints=True)
    assert entry is not None
    attrs, caps = entry["attributes"], entry.get("capacity", {})
    assert len(attrs) + len(caps) <= MAX_ATTRIBUTES_AND_CAPACITY
    assert {"index", "resource", "id"} <= attrs.keys()  # ours are never dropped
    for name, value in [*attrs.items(), *caps.items()]:
        assert _QUALIFIED.fullmatch(name), name
        assert len(value) == 1
    for value in attrs.values():
        (kind, v), = value.items()
        assert kind in ("int", "bool", "string", "version")
        if kind in ("string", "version"):
            assert len(v) <= 64
        if kind == "version":
            assert _SEMVER.fullmatch(v)
        if kind == "int":
            assert -(2**63) <= v < 2**63
    for value in caps.values():
        assert 0 <= parse_quantity(value["value"]) <= MAX_QUANTITY


def test_simulated_memory_becomes_capacity() -> None:
    backend = create(SIM, Config.model_validate({"count": 2, "memory": "80Gi"}))
    try:
        devices = backend.scan()
    finally:
        backend.close()
    entry = slice_device(SIM, "sim-0", devices["sim-0"], taints=True)
    assert entry is not None and entry["capacity"] == {"memory": {"value": "80Gi"}}


def test_simulated_bad_memory_names_the_key() -> None:
    from kubeaccel.devices.config import parse_config

    with pytest.raises(_ConfigError, match=r"resources\[0\]\.memory: .*is not a quantity"):
        parse_config({"resources": [{"name": SIM, "backend": "simulated", "count": 1, "memory": "80 GB"}]})
