"""`describe`: the one reason a person needs, from a driver pod as the API returns it (JSON; pure)."""

from __future__ import annotations

from typing import Any

import pytest

from kubeaccel.spark.manage import describe


def _pod(status: dict[str, Any], node: str | None = "node-1") -> Any:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": "etl-1-driver",
            "namespace": "team-a",
            "labels": {"spark-app-name": "etl", "spark-app-selector": "spark-123", "spark-role": "driver"},
        },
        "spec": {
            "containers": [{"name": "spark-kubernetes-driver", "image": "img"}],
            **({"nodeName": node} if node else {}),
        },
        "status": status,
    }


def _container(state: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "spark-kubernetes-driver",
        "image": "img",
        "imageID": "",
        "ready": False,
        "restartCount": 0,
        "state": state,
    }


@pytest.mark.parametrize(
    ("status", "phase", "reason", "exit_code"),
    [
        (
            {
                "phase": "Pending",
                "containerStatuses": [
                    _container(
                        {"waiting": {"reason": "ImagePullBackOff", "message": 'Back-off pulling image "spark:nope"'}}
                    )
                ],
            },
            "Pending",
            'ImagePullBackOff: Back-off pulling image "spark:nope"',
            None,
        ),
        (
            {
                "phase": "Failed",
                "containerStatuses": [
                    _container(
                        {"terminated": {"reason": "OOMKilled", "exitCode": 137, "finishedAt": "2026-11-24T10:00:00Z"}}
                    )
                ],
            },
            "Failed",
            "OOMKilled (exit code 137)",
            137,
        ),
        (
            {
                "phase": "Pending",
                "conditions": [
                    {
                        "type": "PodScheduled",
                        "status": "False",
                        "reason": "Unschedulable",
                        "message": "0/2 nodes are available: 2 Insufficient nec.com/ve.",
                    }
                ],
            },
            "Pending",
            "Unschedulable: 0/2 nodes are available: 2 Insufficient nec.com/ve.",
            None,
        ),
        (
            {
                "phase": "Succeeded",
                "startTime": "2026-11-24T09:00:00Z",
                "containerStatuses": [_container({"terminated": {"reason": "Completed", "exitCode": 0}})],
            },
            "Succeeded",
            "Completed (exit code 0)",
            0,
        ),
        (
            {"phase": "Failed", "reason": "Evicted", "message": "The node was low on resource: memory."},
            "Failed",
            "Evicted: The node was low on resource: memory.",
            None,
        ),
        ({}, "Unknown", "", None),
    ],
)
def test_reasons(status: dict[str, Any], phase: str, reason: str, exit_code: int | None) -> None:
    app = describe(_pod(status), executors=3, running=2)
    assert (app.phase, app.reason, app.exit_code) == (phase, reason, exit_code)
    assert (app.id, app.app_name, app.app_id, app.node) == ("team-a:etl-1-driver", "etl", "spark-123", "node-1")
    assert (app.executors, app.executors_running) == (3, 2)


def test_times() -> None:
    app = describe(
        _pod(
            {
                "phase": "Succeeded",
                "startTime": "2026-11-24T09:00:00Z",
                "containerStatuses": [
                    _container({"terminated": {"exitCode": 0, "finishedAt": "2026-11-24T09:05:00Z"}})
                ],
            }
        )
    )
    assert app.start is not None and app.start.startswith("2026-11-24T09:00:00")
    assert app.end is not None and app.end.startswith("2026-11-24T09:05:00")
