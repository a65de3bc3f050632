"""Submission IDs and globs: forms spark-submit accepts, full fnmatch, clear errors."""

from __future__ import annotations

import pytest

from kubeaccel.errors import ConfigError
from kubeaccel.spark.ids import SubmissionId, Target, parse_target


@pytest.mark.parametrize(
    ("text", "target"),
    [
        ("team-a:etl-1-driver", Target("team-a", "etl-1-driver")),
        ("etl-1-driver", Target(None, "etl-1-driver")),
        ("team-a:etl-*", Target("team-a", "etl-*")),
        ("*:nightly-?-[ab]*", Target("*", "nightly-?-[ab]*")),
    ],
)
def test_parse(text: str, target: Target) -> None:
    assert parse_target(text) == target


@pytest.mark.parametrize("text", ["", ":", "a:", ":b", "a:b:c", "Team:x", "ns:Pod_Name", "ns:a b"])
def test_malformed(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_target(text)
    assert info.value.hint


def test_globs_are_full_fnmatch_not_only_trailing_star() -> None:
    target = parse_target("ns:etl-*-2026-??-driver")
    assert target.is_glob
    assert target.matches("etl-daily-2026-11-driver")
    assert not target.matches("etl-daily-2026-1-driver")
    assert parse_target("ns:x-[0-9]-driver").matches("x-7-driver")
    assert not parse_target("ns:exact").is_glob


def test_submission_id_text() -> None:
    assert str(SubmissionId("ns", "pod")) == "ns:pod"
