"""Cron schedules: a table of expressions and their next runs, bad ones refused by name, and hypothesis against
a brute-force oracle (every minute checked by the definition of a match)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel.errors import ConfigError
from kubeaccel.operator.cron import parse

START = datetime(2026, 12, 5, 8, 3, 20, tzinfo=UTC)  # a Saturday


@pytest.mark.parametrize(
    "expression, expected",
    [
        ("*/10 * * * *", datetime(2026, 12, 5, 8, 10, tzinfo=UTC)),
        ("@hourly", datetime(2026, 12, 5, 9, 0, tzinfo=UTC)),
        ("@daily", datetime(2026, 12, 6, 0, 0, tzinfo=UTC)),
        ("@weekly", datetime(2026, 12, 6, 0, 0, tzinfo=UTC)),
        ("0 12 * * MON-FRI", datetime(2026, 12, 7, 12, 0, tzinfo=UTC)),
        ("30 2 1 JAN ?", datetime(2027, 1, 1, 2, 30, tzinfo=UTC)),
        ("0 0 13 * 5", datetime(2026, 12, 11, 0, 0, tzinfo=UTC)),  # the 13th OR a Friday
        ("0 0 * * 7", datetime(2026, 12, 6, 0, 0, tzinfo=UTC)),
        ("5-7/2 8 * * *", datetime(2026, 12, 5, 8, 5, tzinfo=UTC)),
        ("@every 3m", START + timedelta(minutes=3)),
        ("@every 1h30m", START + timedelta(hours=1, minutes=30)),
    ],
)
def test_next_run(expression: str, expected: datetime) -> None:
    assert parse(expression).next_after(START) == expected


def test_time_zone() -> None:
    berlin = parse("0 9 * * *", "Europe/Berlin").next_after(START)
    assert berlin == datetime(2026, 12, 6, 8, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "expression, problem",
    [("* * * *", "4 fields"), ("61 * * * *", "outside"), ("*/0 * * * *", "step"), ("@every 5x", "duration"),
     ("@every 10ms", "second"), ("0 0 30 2 *", "never"), ("x * * * *", "minute")],
)  # fmt: skip
def test_bad_schedule_is_named(expression: str, problem: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse(expression).next_after(START)
    assert problem in info.value.message


def _matches(schedule: str, moment: datetime) -> bool:
    s = parse(schedule)
    day_ok = (moment.day in s.days, (moment.isoweekday() % 7) in s.weekdays)
    days = any(day_ok) if s.days_restricted and s.weekdays_restricted else all(day_ok)
    return moment.minute in s.minutes and moment.hour in s.hours and moment.month in s.months and days


_field = st.one_of(
    st.just("*"),
    st.integers(0, 5).map(str),
    st.tuples(st.integers(0, 3), st.integers(3, 6)).map(lambda t: f"{t[0]}-{t[1]}"),
    st.integers(1, 4).map(lambda n: f"*/{n}"),
)


@settings(max_examples=150, deadline=None)
@given(
    minute=st.one_of(_field, st.just("*/7")),
    hour=_field,
    dom=st.one_of(st.just("*"), st.integers(1, 28).map(str)),
    dow=st.one_of(st.just("*"), st.integers(0, 6).map(str)),
    offset=st.integers(0, 60 * 24 * 3),
)
@pytest.mark.slow  # a long property run: in `make test`, not `make unit`
def test_against_brute_force(minute: str, hour: str, dom: str, dow: str, offset: int) -> None:
    expression = f"{minute} {hour} {dom} * {dow}"
    start = START + timedelta(minutes=offset)
    found = parse(expression).next_after(start)
    moment = start.replace(second=0, microsecond=0) + timedelta(minutes=1)
    while moment < found:
        assert not _matches(expression, moment), moment
        moment += timedelta(minutes=1)
    assert _matches(expression, found)
