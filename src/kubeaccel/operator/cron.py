"""Cron schedules as kubeflow's operator reads them (robfig/cron's standard parser). Pure.

Five fields (minute hour day-of-month month day-of-week) of `*`, `?`, numbers, ranges `a-b`, steps `*/n`,
`a-b/n`, `a/n`, lists, month names JAN-DEC and day names SUN-SAT (0 and 7 are Sunday); when both day
fields are restricted a day matching either runs (cron's rule). Descriptors @yearly, @annually,
@monthly, @weekly, @daily, @midnight, @hourly, and `@every <duration>` (Go's units: h, m, s, ms, us, ns).

    schedule = parse("*/10 * * * *")
    schedule.next_after(datetime.now(UTC))
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from kubeaccel.errors import ConfigError

_DESCRIPTORS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = {
    m: i + 1 for i, m in enumerate(["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"])
}
_DAYS = {d: i for i, d in enumerate(["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"])}
_BOUNDS = ((0, 59), (0, 23), (1, 31), (1, 12), (0, 7))
_NAMES: tuple[dict[str, int], ...] = ({}, {}, {}, _MONTHS, _DAYS)
_FIELD_NAMES = ("minute", "hour", "day of month", "month", "day of week")
_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
SEARCH_YEARS = 5  # a schedule that never fires within this (Feb 30) is refused


def _error(schedule: str, problem: str) -> ConfigError:
    return ConfigError(
        f"schedule {schedule[:100]!r}: {problem}",
        hint="use 5 cron fields (e.g. '*/10 * * * *'), @hourly/@daily/..., or '@every 10m'",
    )


@dataclass(frozen=True)
class Schedule:
    minutes: frozenset[int] = frozenset()
    hours: frozenset[int] = frozenset()
    days: frozenset[int] = frozenset()
    months: frozenset[int] = frozenset()
    weekdays: frozenset[int] = frozenset()  # 0 = Sunday
    days_restricted: bool = False
    weekdays_restricted: bool = False
    every: timedelta | None = None
    zone: ZoneInfo | None = None

    def _day_matches(self, moment: datetime) -> bool:
        in_days = moment.day in self.days
        in_weekdays = (moment.isoweekday() % 7) in self.weekdays
        if self.days_restricted and self.weekdays_restricted:
            return in_days or in_weekdays
        return in_days and in_weekdays

    def next_after(self, moment: datetime) -> datetime:
        """The first run strictly after `moment` (an aware datetime), in `moment`'s time zone."""
        if self.every is not None:
            return moment + self.every
        zone = self.zone or moment.tzinfo
        local = moment.astimezone(zone).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = local.replace(hour=0, minute=0)
        for _ in range(366 * SEARCH_YEARS + 1):
            if day.month in self.months and self._day_matches(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        candidate = day.replace(hour=hour, minute=minute)
                        if candidate >= local:
                            return candidate.astimezone(moment.tzinfo)
            day = (day + timedelta(days=1)).replace(hour=0, minute=0)
        raise _error("", f"never runs within {SEARCH_YEARS} years")


def _value(text: str, index: int, schedule: str) -> int:
    names = _NAMES[index]
    if text.upper() in names:
        return names[text.upper()]
    if not text.isdigit():
        raise _error(schedule, f"{text!r} is not a {_FIELD_NAMES[index]}")
    return int(text)


def _field(text: str, index: int, schedule: str) -> tuple[frozenset[int], bool]:
    low, high = _BOUNDS[index]
    values: set[int] = set()
    restricted = text not in ("*", "?")
    for part in text.split(","):
        base, slash, step_text = part.partition("/")
        step = 1
        if slash:
            if not step_text.isdigit() or int(step_text) == 0:
                raise _error(schedule, f"{part!r} has no positive step")
            step = int(step_text)
        if base in ("*", "?"):
            start, end = low, high
        elif "-" in base:
            first, _, last = base.partition("-")
            start, end = _value(first, index, schedule), _value(last, index, schedule)
        else:
            start = _value(base, index, schedule)
            end = high if slash else start
        if not (low <= start <= high and low <= end <= high) or start > end:
            raise _error(schedule, f"{part!r} is outside {low}-{high} for the {_FIELD_NAMES[index]}")
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:
        values.discard(7)
        values.add(0)
    return frozenset(values), restricted


def _duration(text: str, schedule: str) -> timedelta:
    parts = re.findall(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h)", text)
    if not parts or "".join(n + u for n, u in parts) != text:
        raise _error(schedule, f"{text!r} is not a duration")
    seconds = sum(float(n) * _UNITS[u] for n, u in parts)
    if seconds < 1:
        raise _error(schedule, "@every needs at least one second")
    return timedelta(seconds=seconds)


def parse(schedule: str, time_zone: str | None = None) -> Schedule:
    text = schedule.strip()
    zone = None
    if time_zone:
        try:
            zone = ZoneInfo(time_zone)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ConfigError(f"time zone {time_zone[:100]!r} is unknown", hint="e.g. Europe/Berlin or UTC") from exc
    if text.startswith("@every "):
        return Schedule(every=_duration(text.removeprefix("@every ").strip(), schedule), zone=zone)
    text = _DESCRIPTORS.get(text, text)
    fields = text.split()
    if len(fields) != 5:
        raise _error(schedule, f"has {len(fields)} fields, not 5")
    parsed = [_field(f, i, schedule) for i, f in enumerate(fields)]
    result = Schedule(
        minutes=parsed[0][0],
        hours=parsed[1][0],
        days=parsed[2][0],
        months=parsed[3][0],
        weekdays=parsed[4][0],
        days_restricted=parsed[2][1],
        weekdays_restricted=parsed[4][1],
        zone=zone,
    )
    return result
