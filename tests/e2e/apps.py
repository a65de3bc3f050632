"""What the example app prints, parsed: shared by the standalone and the Kubernetes tests."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_APP = REPO / "deploy" / "spark" / "examples" / "accel_pi.py"
REPORT_PREFIX = "kubeaccel-task-resources "
PI_RE = re.compile(r"Pi is roughly (\d+\.\d+)")


def task_reports(output: str) -> list[dict[str, Any]]:
    """The per-task reports from the app's output (driver stdout or driver pod log)."""
    lines = [line for line in output.splitlines() if line.startswith(REPORT_PREFIX)]
    assert len(lines) == 1, f"expected one report line in the app output:\n{output[-4000:]}"
    reports: list[dict[str, Any]] = json.loads(lines[0][len(REPORT_PREFIX) :])
    return reports


def pi_estimate(output: str) -> float:
    found = PI_RE.search(output)
    assert found, f"no Pi in the app output:\n{output[-4000:]}"
    return float(found.group(1))
