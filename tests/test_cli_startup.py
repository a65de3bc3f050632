"""The CLI's start-up handling of the cyclic garbage collector (see `kubeaccel.cli`).

A process started as `kubeaccel ...` imports with the collector at rest and then freezes what the
imports made; anything that merely imports `kubeaccel.cli` or calls `main(argv)` in-process (tests,
the Python API) finds the collector exactly as it left it.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

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


def _plugin_scan(env_value: str | None, tmp_path: Path) -> list[str]:
    """Which pydantic plugin entry-point scans a `kubeaccel plugin devices` process makes."""
    config = tmp_path / "c.yaml"
    config.write_text("resources:\n  - name: example.com/sim\n    backend: simulated\n    count: 1\n")
    probe = (
        "import sys, importlib.metadata as md\n"
        "calls = []\n"
        "real = md.entry_points\n"
        "def spy(**kw):\n"
        "    calls.append(kw.get('group'))\n"
        "    return real(**kw)\n"
        "md.entry_points = spy\n"
        "import pydantic.plugin._loader as loader\n"
        "loader.entry_points = spy\n"
        "import kubeaccel.cli\n"
        "sys.argv = ['kubeaccel', 'plugin', 'devices', '--config', sys.argv[1]]\n"
        "try:\n"
        "    kubeaccel.cli.main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print('SCANS', [c for c in calls if c == 'pydantic'])\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYDANTIC_DISABLE_PLUGINS"}
    if env_value is not None:
        env["PYDANTIC_DISABLE_PLUGINS"] = env_value
    done = subprocess.run([sys.executable, "-c", probe, str(config)], capture_output=True, text=True, timeout=60,
                          check=False, env=env)
    assert done.returncode == 0, done.stderr
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("SCANS"))
    return list(json.loads(line.removeprefix("SCANS ").replace("'", '"')))


def test_the_entry_point_skips_the_pydantic_plugin_scan_unless_the_user_set_it(tmp_path: Path) -> None:
    # 30 ms of a GPU node's device-plugin start-up went to scanning ~200 distributions for plugins.
    assert _plugin_scan(None, tmp_path) == []
    assert _plugin_scan("", tmp_path) == ["pydantic"]  # the user's own setting (plugins on) wins
