"""The verdicts both conformance checkers share: how a check's outcome becomes a step, when a report
passes, and the report as the CLI prints it (the JSON of ``dra check`` and the FAIL error's exit code)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field

import pytest

from kubeaccel.cliopts import echo_verdict
from kubeaccel.conformance import CheckFailedError, Graded, Result, Step, StepSkippedError, timed_step
from kubeaccel.errors import KubeaccelError


@dataclass
class _Report(Graded):
    name: str = ""
    steps: list[Step] = field(default_factory=list)


async def _answer(text: str) -> str:
    return text


async def _raise(exc: Exception) -> str:
    raise exc


def _grade(check: Coroutine[None, None, str], failure: Callable[[Exception], str | None] = lambda exc: None,
           limit: int | None = None) -> Step:
    return asyncio.run(timed_step("s", check, failure, limit=limit))


def test_each_outcome_is_its_verdict() -> None:
    assert _grade(_answer("fine")).result is Result.PASS
    assert _grade(_answer("fine")).detail == "fine"
    skipped = _grade(_raise(StepSkippedError("not offered")))
    assert (skipped.result, skipped.detail) == (Result.SKIP, "not offered")
    failed = _grade(_raise(CheckFailedError("wrong answer")))
    assert (failed.result, failed.detail) == (Result.FAIL, "wrong answer")
    assert failed.seconds >= 0


def test_other_errors_fail_only_when_described() -> None:
    described = _grade(_raise(OSError("gone")), lambda exc: f"described: {exc}")
    assert (described.result, described.detail) == (Result.FAIL, "described: gone")
    with pytest.raises(ValueError, match="checker bug"):
        _grade(_raise(ValueError("checker bug")))


def test_the_limit_bounds_every_detail() -> None:
    assert _grade(_answer("x" * 10), limit=4).detail == "xxxx"
    assert _grade(_raise(CheckFailedError("y" * 10)), limit=4).detail == "yyyy"


def test_a_report_passes_only_with_steps_and_no_failure() -> None:
    assert not _Report().passed
    report = _Report(steps=[Step("a", Result.PASS, 0.0), Step("b", Result.SKIP, 0.0)])
    assert report.passed and report.failed == []
    report.steps.append(Step("c", Result.FAIL, 0.0))
    assert not report.passed and report.failed == ["c"]


def test_results_are_bare_words_in_json() -> None:
    report = _Report("r", [Step("a", Result.PASS, 0.5, "ok")])
    assert json.loads(json.dumps(asdict(report))) == {
        "name": "r", "steps": [{"name": "a", "result": "PASS", "seconds": 0.5, "detail": "ok"}]}
    assert f"{Result.SKIP}" == "SKIP"


def test_the_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    echo_verdict(_Report(steps=[Step("a", Result.PASS, 0.0123, "ok")]), title="T", subject="the thing")
    out = capsys.readouterr().out
    assert "12.3" in out and out.rstrip().endswith("PASS")
    failing = _Report(steps=[Step("a", Result.FAIL, 0.0), Step("b", Result.FAIL, 0.0)])
    with pytest.raises(KubeaccelError) as info:
        echo_verdict(failing, title="T", subject="the thing", table=False)
    assert info.value.exit_code == 1
    assert info.value.message == "FAIL: the thing does not conform (2 failed: a, b)"
    assert capsys.readouterr().out == ""  # no table, no PASS: the report went out as JSON
