"""The CLI's start-up handling of the cyclic garbage collector (see `kubeaccel.cli`).

A process started as `kubeaccel ...` imports with the collector at rest and then freezes what the
imports made; anything that merely imports `kubeaccel.cli` or calls `main(argv)` in-process (tests,
the Python API) finds the collector exactly as it left it.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys

from fixtures.cli import run

PROBE = """
import gc, json, sys
before = gc.isenabled()
import kubeaccel.cli
after_import = (gc.isenabled(), gc.get_freeze_count())
sys.argv = ["kubeaccel", *sys.argv[1:]]
code = 0
try:
    kubeaccel.cli.main()
except SystemExit as exc:
    code = exc.code
print(json.dumps({"before": before, "after_import": after_import, "code": code,
                  "after_main": [gc.isenabled(), gc.get_freeze_count()]}))
"""


def _probe(*argv: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_importing_the_cli_leaves_the_collector_as_it_was() -> None:
    result = _probe("--version")
    assert result["before"] is True
    assert result["after_import"] == [True, 0]  # re-enabled, nothing frozen by a mere import


def test_the_entry_point_freezes_what_the_subcommand_import_made_and_collects_again() -> None:
    result = _probe("spark", "--help")
    assert result["code"] == 0
    enabled, frozen = result["after_main"]  # type: ignore[misc]
    assert enabled is True
    assert isinstance(frozen, int) and frozen > 10_000  # the modules, classes and functions of the imports


def test_in_process_calls_freeze_nothing() -> None:
    before = gc.get_freeze_count()
    code, _ = run(["spark", "--help"])
    assert code == 0
    assert gc.isenabled()
    assert gc.get_freeze_count() == before
