"""Kubernetes quantities: parsing is exact, and bad text is a ConfigError with a hint."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeaccel.errors import ConfigError
from kubeaccel.kube.quantity import format_quantity, parse_quantity


@pytest.mark.parametrize(
    ("text", "value"),
    [("2", 2), ("500m", Decimal("0.5")), ("64Gi", 64 * 2**30), ("1.5G", Decimal("1.5e9")),
     ("2e3", 2000), ("1408Mi", 1408 * 2**20), ("100k", 100_000), (8, 8)],
)
def test_parse(text: str, value: Decimal) -> None:
    assert parse_quantity(text) == Decimal(value)


@pytest.mark.parametrize("text", ["", "abc", "1Xi", "1.2.3", "--1"])
def test_parse_rejects_garbage(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_quantity(text)
    assert info.value.hint


def test_sums_are_exact() -> None:
    assert parse_quantity("100m") + parse_quantity("200m") == parse_quantity("300m")


@given(st.integers(min_value=1, max_value=10**6))
def test_format_memory_round_trips(mib: int) -> None:
    value = Decimal(mib * 2**20)
    assert parse_quantity(format_quantity(value, "requests.memory")) == value


@given(st.integers(min_value=1, max_value=10**6))
def test_format_cpu_round_trips(millis: int) -> None:
    value = Decimal(millis) / 1000
    assert parse_quantity(format_quantity(value, "requests.cpu")) == value
