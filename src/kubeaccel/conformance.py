"""The verdicts both conformance checkers give (``kubeaccel plugin check``, ``kubeaccel dra check``).

Each checker plays the kubelet against a different protocol, but grades the same way: one ``Step``
per check with its timing and a ``Result``, a step that does not apply skipped rather than failed,
and the whole passed only when something ran and nothing failed. Pure (no gRPC, no click): each
checker says which of its transport's errors fail a step, and the CLI renders the report
(``cliopts.echo_verdict``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum


class Result(StrEnum):
    """A str as well: JSON reports and table cells print it as the bare word."""

    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass
class Step:
    name: str
    result: Result
    seconds: float
    detail: str = ""


class CheckFailedError(Exception):
    """A step's verdict: the component under test misbehaved (the message says how)."""


class StepSkippedError(Exception):
    """A step that does not apply (an option the component did not take, or an earlier step failed)."""


class Graded:
    """What a checker's report answers from its steps (a mixin: the report dataclass owns ``steps``,
    so its fields, and the JSON made from them, stay the report's own)."""

    steps: list[Step]

    @property
    def failed(self) -> list[str]:
        return [s.name for s in self.steps if s.result is Result.FAIL]

    @property
    def passed(self) -> bool:
        return bool(self.steps) and not self.failed


async def timed_step(
    name: str, check: Awaitable[str], failure: Callable[[Exception], str | None], *, limit: int | None = None,
) -> Step:
    """Await one check and grade it: its text is the PASS detail, ``StepSkippedError`` a SKIP,
    ``CheckFailedError`` a FAIL; any other error is a FAIL when ``failure`` describes it (a transport
    error the component caused) and propagates when it answers None (a bug in the checker).
    ``limit`` bounds the detail, which may quote whatever the component sent."""
    start = time.perf_counter()
    try:
        detail, result = await check, Result.PASS
    except StepSkippedError as exc:
        result, detail = Result.SKIP, str(exc)
    except CheckFailedError as exc:
        result, detail = Result.FAIL, str(exc)
    except Exception as exc:
        described = failure(exc)
        if described is None:
            raise
        result, detail = Result.FAIL, described
    return Step(name, result, time.perf_counter() - start, detail[:limit])
