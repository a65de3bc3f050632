"""The verdicts both conformance checkers share: how a check's outcome becomes a step, when a report
passes, and the report as the CLI prints it (the JSON of ``dra check`` and the FAIL error's exit code)."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Callable, Coroutine
from dataclasses import asdict, dataclass, field

import pytest

from kubeaccel.cliopts import echo_verdict
from kubeaccel.conformance import (
    CheckFailedError,
    CheckWarnedError,
    Graded,
    Result,
    Step,
    StepSkippedError,
    timed_step,
)
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


def test_a_warning_is_its_own_verdict_and_does_not_fail() -> None:
    warned = _grade(_raise(CheckWarnedError("legal but weaker")))
    assert (warned.result, warned.detail) == (Result.WARN, "legal but weaker")
    report = _Report(steps=[Step("a", Result.PASS, 0.0), warned])
    assert report.passed and report.failed == [] and report.warned == ["s"]
    data = report.as_dict()
    assert (data["passed"], data["failed"], data["warned"]) == (True, [], ["s"])
    assert data["steps"][1]["result"] == "WARN"


def test_warnings_are_named_after_the_table_and_exit_zero(capsys: pytest.CaptureFixture[str]) -> None:
    echo_verdict(_Report(steps=[Step("a", Result.PASS, 0.0), Step("b", Result.WARN, 0.0, "weaker")]),
                 title="T", subject="the thing")
    out = capsys.readouterr().out
    assert "WARN" in out and "weaker" in out
    assert out.rstrip().splitlines()[-1].startswith("PASS with 1 warning: b")


LONG = "word " * 60 + "x" * 300 + " end-of-detail"


def test_without_a_terminal_every_detail_is_one_full_line(capsys: pytest.CaptureFixture[str]) -> None:
    echo_verdict(_Report(steps=[Step("a step", Result.WARN, 0.0, LONG), Step("b", Result.PASS, 0.0, "\x1b[2Jok")]),
                 title="T", subject="the thing")
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "T" and lines[1].split() == ["step", "result", "ms", "detail"]
    assert lines[2].endswith(LONG.rstrip()) and lines[2].startswith("a step")
    assert lines[3].endswith("?[2Jok")  # no terminal escapes from a component's text


def test_on_a_terminal_the_detail_wraps_and_is_never_cut(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdout.isatty", lambda: True)
    monkeypatch.setenv("COLUMNS", "70")
    echo_verdict(_Report(steps=[Step("a", Result.WARN, 0.0, LONG + " [red]not markup[/]")]), title="T",
                 subject="the thing")
    out = re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().out)  # colours
    assert max(len(line) for line in out.splitlines() if not line.startswith("PASS")) <= 70
    cells = "".join(line.split("│")[-2] for line in out.splitlines() if line.count("│") >= 5)
    assert "".join(cells.split()) == "".join((LONG + " [red]not markup[/]").split())
