"""view.metrics over real plugin output, junk and huge bodies.

Matrix: the real daemon's exposition (Metrics.set_devices + the allocation gauge) -> devices and
allocations; hypothesis: arbitrary bytes and arbitrary label values never escape as anything but
MetricsError; bodies over the bound, non-UTF-8, foreign metrics, oversized labels -> MetricsError.
"""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel.devices.model import Device, Devices, Health
from kubeaccel.plugin.metrics import Metrics
from kubeaccel.view import metrics
from kubeaccel.view.model import Allocation, PluginDevice


def _exposition(m: Metrics) -> bytes:
    from prometheus_client import generate_latest

    return generate_latest(m.registry)


def test_the_plugins_own_exposition_parses_to_its_devices_and_holders() -> None:
    m = Metrics()
    m.set_devices("nec.com/ve", Devices([Device("ve0", "0", numa_node=0),
                                         Device("ve1", "1", Health.UNHEALTHY, numa_node=1)]))
    m.allocated.labels("nec.com/ve", "ve0", "team-a", "exec-1", "spark-kubernetes-executor").set(1)
    devices, allocations = metrics.parse(_exposition(m))
    assert devices == (PluginDevice("nec.com/ve", "ve0", "0", "0", "Healthy"),
                       PluginDevice("nec.com/ve", "ve1", "1", "1", "Unhealthy"))
    assert allocations == (Allocation("nec.com/ve", "ve0", "team-a", "exec-1", "spark-kubernetes-executor"),)


def test_a_rescan_replaces_a_devices_health_series_and_forget_drops_them() -> None:
    m = Metrics()
    m.set_devices("r/x", Devices([Device("a", "0")]))
    m.set_devices("r/x", Devices([Device("a", "0", Health.UNHEALTHY)]))
    assert metrics.parse(_exposition(m))[0] == (PluginDevice("r/x", "a", "0", "", "Unhealthy"),)
    m.forget("r/x")
    m.devices.labels("r/y", "Healthy").set(0)  # still a kubeaccel plugin, with no devices
    assert metrics.parse(_exposition(m)) == ((), ())


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\xff\xfe junk", "not UTF-8"),
        (b"<html><body>502 Bad Gateway</body></html>", "not Prometheus text"),
        (b"go_goroutines 12\n", "no kubeaccel metrics"),
        (b"x" * (metrics.MAX_METRICS_BYTES + 1), "larger than"),
        (b'kubeaccel_device_health{device="' + b"d" * 300 + b'"} 1\n', "longer than"),
    ],
)
def test_bodies_that_are_not_a_plugins_metrics_are_refused_saying_why(body: bytes, why: str) -> None:
    with pytest.raises(metrics.MetricsError, match=why):
        metrics.parse(body)


def test_series_beyond_the_bound_are_refused() -> None:
    lines = "".join(f'kubeaccel_device_health{{device="d{i}"}} 1\n' for i in range(metrics.MAX_SERIES + 1))
    with pytest.raises(metrics.MetricsError, match="more than"):
        metrics.parse(lines.encode())


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2048))
def test_any_bytes_parse_or_are_refused_as_metrics_errors(body: bytes) -> None:
    with contextlib.suppress(metrics.MetricsError):
        metrics.parse(body)


_PROM_TEXT = st.lists(
    st.one_of(
        st.sampled_from(["kubeaccel_device_health", "kubeaccel_device_allocated",
                         "# TYPE kubeaccel_device_health gauge", "# HELP x y", "{", "}", "=", '"', ",", " 1",
                         " NaN", "\\", "\n"]),
        st.text(max_size=20),
    ),
    max_size=40,
).map("".join)


@settings(max_examples=300, deadline=None)
@given(_PROM_TEXT)
def test_near_prometheus_text_parses_or_is_refused(text: str) -> None:
    try:
        devices, _allocations = metrics.parse(text.encode("utf-8", "surrogatepass"))
    except (metrics.MetricsError, UnicodeEncodeError):
        return
    assert all(len(v) <= metrics.MAX_LABEL for d in devices for v in (d.device, d.resource))


def test_the_dra_driver_exports_the_same_per_device_family() -> None:
    from prometheus_client import generate_latest

    from kubeaccel.dra.metrics import Metrics as DraMetrics
    from kubeaccel.dra.model import Pool

    m = DraMetrics()
    pool = Pool.of("n1", "nec.com/ve", Devices([Device("0", "0", numa_node=1), Device("1", "1", Health.UNHEALTHY)]))
    m.set_pools({"nec.com/ve": pool})
    devices, _ = metrics.parse(generate_latest(m.registry))
    assert sorted((d.index, d.numa, d.health) for d in devices) == [("0", "1", "Healthy"), ("1", "", "Unhealthy")]
    assert {d.device for d in devices} == set(pool.devices)  # the names its ResourceSlice publishes
    m.set_pools({})
    assert metrics.parse(generate_latest(m.registry))[0] == ()
