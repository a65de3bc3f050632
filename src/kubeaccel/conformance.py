"""The verdicts both conformance checkers give (``kubeaccel plugin check``, ``kubeaccel dra check``).

Each checker plays the kubelet against a different protocol, but grades the same way: one ``Step``
per check with its timing and a ``Result``. FAIL only where the real kubelet would fail a pod, drop
the plugin or driver, or lose devices; WARN where the answer is legal (the kubelet copes) but weaker
than best practice; SKIP where an optional feature is absent. The whole passes when something ran
and nothing failed: warnings do not fail it. Pure (no gRPC, no click): each
checker says which of its transport's errors fail a step, and the CLI renders the report
(``cliopts.echo_verdict``).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, cast


class Result(StrEnum):
    """A str as well: JSON reports and table cells print it as the bare word."""

    PASS = "PASS"
    WARN = "WARN"
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


class CheckWarnedError(Exception):
    """A step's verdict: the answer is one the kubelet accepts, but weaker than best practice (the
    message says what the kubelet does with it)."""


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
    def warned(self) -> list[str]:
        return [s.name for s in self.steps if s.result is Result.WARN]

    @property
    def passed(self) -> bool:
        return bool(self.steps) and not self.failed

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON data: its own fields, ``passed``, and the names of failed and warned steps."""
        return {**asdict(cast(Any, self)), "passed": self.passed, "failed": self.failed, "warned": self.warned}


async def timed_step(
    name: str, check: Awaitable[str], failure: Callable[[Exception], str | None], *, limit: int | None = None,
) -> Step:
    """Await one check and grade it: its text is the PASS detail, ``StepSkippedError`` a SKIP,
    ``CheckWarnedError`` a WARN, ``CheckFailedError`` a FAIL; any other error is a FAIL when
    ``failure`` describes it (a transport error the component caused) and propagates when it answers
    None (a bug in the checker).
    ``limit`` bounds the detail, which may quote whatever the component sent."""
    start = time.perf_counter()
    try:
        detail, result = await check, Result.PASS
    except StepSkippedError as exc:
        result, detail = Result.SKIP, str(exc)
    except CheckWarnedError as exc:
        result, detail = Result.WARN, str(exc)
    except CheckFailedError as exc:
        result, detail = Result.FAIL, str(exc)
    except Exception as exc:
        described = failure(exc)
        if described is None:
            raise
        result, detail = Result.FAIL, described
    return Step(name, result, time.perf_counter() - start, detail[:limit])
