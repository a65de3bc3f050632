"""The view as table rows and JSON: pure, so the CLI, the page and the tests read the same columns."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from kubeaccel.view.model import DeviceRow, Problem, View

COLUMNS = ("NODE", "RESOURCE", "DEVICE", "HEALTH", "MODE", "HOLDER", "APP")
WIDE_COLUMNS = ("NODE", "RESOURCE", "DEVICE", "INDEX", "HEALTH", "NUMA", "MODE", "HOLDER", "APP", "TENANT", "SINCE")
PROBLEM_COLUMNS = ("NODE", "SOURCE", "UNAVAILABLE", "HINT")


def cells(row: DeviceRow, *, wide: bool = False) -> list[str]:
    holder = row.holder or "-"
    if wide:
        return [row.node, row.resource, row.device, row.index or "-", row.health, row.numa or "-", row.mode,
                holder, row.app or "-", row.tenant or "-", row.since or "-"]
    device = f"{row.device} ({row.index})" if row.index and row.index != row.device else row.device
    return [row.node, row.resource, device, row.health, row.mode, holder, row.app or "-"]


def problem_cells(problem: Problem) -> list[str]:
    return [problem.node or "-", problem.source, problem.reason, problem.hint or "-"]


def to_json(view: View) -> dict[str, Any]:
    return {
        "devices": [asdict(r) | {"holder": r.holder} for r in view.rows],
        "unavailable": [asdict(p) for p in view.problems],
        "partial": view.partial,
    }
