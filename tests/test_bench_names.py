"""bench/ scripts run as `python bench/NAME.py`, which puts bench/ first on sys.path: a script named like a
standard-library module (operator.py did) would shadow it for every other script there."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench"


def test_no_bench_script_shadows_a_standard_module() -> None:
    names = {p.stem for p in BENCH.glob("*.py")}
    assert names, "bench/ has scripts"
    assert not names & set(sys.stdlib_module_names), sorted(names & set(sys.stdlib_module_names))
