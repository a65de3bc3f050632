"""The plain tables of the hot read commands: aligned like kubectl's, and whatever the server sends in a
cell (a pod's status reason) cannot reach the terminal as control characters or unbounded text."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeaccel.cliopts import CELL_LIMIT, echo_table


def test_columns_are_aligned(capsys: pytest.CaptureFixture[str]) -> None:
    echo_table(("ID", "PHASE"), [("team-a:etl-driver", "Running"), ("b:x", "-")])
    assert capsys.readouterr().out.splitlines() == [
        "ID                  PHASE",
        "team-a:etl-driver   Running",
        "b:x                 -",
    ]


@given(st.lists(st.text(), min_size=1, max_size=4).map(tuple), st.integers(1, 3))
def test_any_server_text_prints_as_bounded_printable_lines(cells: tuple[str, ...], rows: int) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        echo_table(tuple(f"H{i}" for i in range(len(cells))), [cells] * rows)
    lines = out.getvalue().splitlines()
    assert len(lines) == rows + 1
    assert all(line.isprintable() for line in lines)
    assert all(len(line) <= len(cells) * (CELL_LIMIT + 3) for line in lines)
