"""CLI pieces shared by the command groups: --kubeconfig/--context/--output, JSON output, tables and log
lines that survive a pipe whole, checked number options, the log setup (source locations only at
--log-level debug), and the verdict of a conformance check."""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import click

from kubeaccel.errors import ConfigError, KubeaccelError
from kubeaccel.paths import check_path

if TYPE_CHECKING:
    from kubeaccel.conformance import Graded

F = TypeVar("F", bound=Callable[..., Any])


def connection_options(func: F) -> F:
    func = click.option("--context", default=None, help="kubeconfig context (default: its current context).")(func)
    func = click.option(
        "--kubeconfig",
        default=None,
        type=PathParam(dir_okay=False),
        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).",
    )(func)
    return func


def output_option(func: F) -> F:
    return click.option(
        "--output",
        "-o",
        "output",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="table for people, json for scripts.",
    )(func)


CELL_LIMIT = 1024  # a cell comes from the server (a pod's status reason): bounded, whatever it holds; a
# Kubernetes name (at most 253 characters) always fits whole


def _cell(value: object) -> str:
    text = "".join(ch if ch.isprintable() else "?" for ch in str(value))  # no terminal escapes from the server
    return text if len(text) <= CELL_LIMIT else text[: CELL_LIMIT - 3] + "..."


def echo_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """Plain aligned columns, as kubectl prints them: the hot read commands print with this rather than
    rich, whose import alone is slower than the whole `kubectl get pods` they are measured against."""
    cells = [[_cell(h) for h in headers], *([_cell(v) for v in row] for row in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    click.echo("\n".join("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells))


def is_terminal(*, stderr: bool = False) -> bool:
    """Whether the command's output goes to a person (a terminal) rather than a pipe, a file or a CI log."""
    stream = sys.stderr if stderr else sys.stdout
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # a replaced or closed stream
        return False


def print_table(table: Any, *, stderr: bool = False) -> None:
    """A rich Table on a terminal; into a pipe or a file, its title and plain aligned rows, never wrapped
    nor cut (rich would size it to 80 columns and elide long cells), so names survive ``| grep`` whole."""
    if is_terminal(stderr=stderr):
        from rich.console import Console

        Console(stderr=stderr).print(table)
        return
    if table.title:
        click.echo(_plain(table.title), err=stderr)
    columns = [[_plain(cell) for cell in column.cells] for column in table.columns]
    rows = [[_plain(column.header) for column in table.columns], *(list(row) for row in zip(*columns, strict=True))]
    widths = [max(len(row[i]) for row in rows) for i in range(len(columns))]
    click.echo(
        "\n".join("   ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows),
        err=stderr,
    )


def _plain(value: object) -> str:
    """A cell's text without rich markup or styles, one line, no terminal escapes."""
    from rich.errors import MarkupError
    from rich.text import Text

    if isinstance(value, Text):
        text = value.plain
    elif isinstance(value, str):
        try:
            text = Text.from_markup(value).plain
        except MarkupError:  # text that only looks like markup (a name with brackets): shown as it is
            text = value
    else:
        text = str(value)
    return "".join(ch if ch.isprintable() else " " for ch in text)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


class PathParam(click.Path):
    """``click.Path`` that refuses a name no file system can hold (a NUL byte, too long) with a usage error.

    click's own type hands such a value to ``os.stat``, whose ``ValueError`` would escape as a
    traceback; every path option and argument of the CLI uses this type instead.
    """

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        text = os.fsdecode(value) if isinstance(value, bytes | os.PathLike) else str(value)
        try:
            check_path(text, "path")
        except ConfigError as exc:
            self.fail(f"{exc.message}; {exc.hint}", param, ctx)
        return super().convert(value, param, ctx)


class BoundedFloat(click.ParamType):  # type: ignore[type-arg]
    """A finite number of seconds in [minimum, maximum]: `nan`, `inf` and out-of-range values are refused."""

    name = "seconds"

    def __init__(self, minimum: float = 0.0, maximum: float = 7 * 24 * 3600.0) -> None:
        self.minimum = minimum
        self.maximum = maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, float):
            number = value
        else:
            try:
                number = float(str(value))
            except ValueError:
                self.fail(f"{str(value)[:50]!r} is not a number", param, ctx)
        if not math.isfinite(number) or not self.minimum <= number <= self.maximum:
            self.fail(f"{str(value)[:50]!r} is not a number from {self.minimum:g} to {self.maximum:g}", param, ctx)
        return number


LOG_LEVELS = ("debug", "info", "warning", "error")
_state = {"debug": False}


def setup_logging(level: str) -> None:
    """User-facing log lines carry no source locations; --log-level debug adds them for developers."""
    debug = level == "debug"
    _state["debug"] = debug
    fmt = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    if debug:
        fmt = "%(asctime)s %(levelname)s %(name)s %(filename)s:%(lineno)d: %(message)s"
    import logging  # here: the logging package is 5 ms of every command's start-up

    logging.basicConfig(level=level.upper(), format=fmt, force=True)


def console(*, stderr: bool = False, width: int | None = None) -> Any:
    """A rich Console whose `log()` shows `file.py:line` only at --log-level debug; into a pipe or a file
    its printed lines are never wrapped (``soft_wrap``), and ``log_line`` writes plain lines instead of
    ``log()``'s 80-column layout."""
    from rich.console import Console

    return Console(stderr=stderr, width=width, log_path=_state["debug"], soft_wrap=not is_terminal(stderr=stderr))


def log_line(out: Any, message: str) -> None:
    """``out.log(message)`` on a terminal; into a pipe or a file one plain ``[HH:MM:SS] message`` line, whole."""
    if out.is_terminal:
        out.log(message)
        return
    import time

    click.echo(f"[{time.strftime('%H:%M:%S')}] {message}", err=out.stderr)


def _printable(text: str) -> str:
    """A detail may quote whatever the component sent: no terminal escapes, but every character kept."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def _echo_steps(report: Graded, title: str) -> None:
    """One row per step. The detail is never cut: a terminal gets a table whose detail column wraps
    (long words folded); a pipe or file gets plain aligned lines with each detail in full."""
    from kubeaccel.conformance import Result

    rows = [(s.name, str(s.result), f"{s.seconds * 1000:.1f}", _printable(s.detail)) for s in report.steps]
    if not sys.stdout.isatty():
        header = ("step", "result", "ms", "detail")
        widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]
        click.echo(title)
        for row in [header, *rows]:
            click.echo("   ".join([*(c.ljust(w) for c, w in zip(row[:3], widths, strict=True)), row[3]]).rstrip())
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    colour = {Result.PASS: "green", Result.WARN: "yellow", Result.FAIL: "red", Result.SKIP: "cyan"}
    table = Table(title=title)
    table.add_column("step", overflow="fold")
    table.add_column("result", no_wrap=True)
    table.add_column("ms", justify="right", no_wrap=True)
    table.add_column("detail", overflow="fold", ratio=1)
    for step, (name, result, ms, detail) in zip(report.steps, rows, strict=True):
        table.add_row(Text(name), Text(result, style=colour[step.result]), ms, Text(detail))
    Console().print(table)


def echo_verdict(report: Graded, *, title: str, subject: str, table: bool = True) -> None:
    """A conformance report as a table of its steps, then PASS (naming the steps that warned), or the
    FAIL error (exit 1) naming the failed steps; ``table=False`` when the report went out as JSON (the
    error still sets the exit code). rich is imported only for a terminal: only the check commands pay."""
    if table:
        _echo_steps(report, title)
    if not report.passed:
        failed = report.failed
        raise KubeaccelError(
            f"FAIL: {subject} does not conform ({len(failed)} failed: {', '.join(failed)})",
            hint="the detail column says what the kubelet expected",
            exit_code=1,
        )
    if table:
        warned = report.warned
        if warned:
            click.secho(f"PASS with {len(warned)} warning{'s' * (len(warned) > 1)}: {', '.join(warned)} "
                        "(legal answers the kubelet accepts; the detail says what is better)", fg="yellow")
        else:
            click.secho("PASS", fg="green")
