"""ScheduledSparkApplication: the pure decision as a table (due or not, Allow / Forbid / Replace, history limits,
suspend, a bad schedule), and on the real control plane: `@every` runs, each a SparkApplication the controller
runs to COMPLETED, the history trimmed to its limit.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from fixtures.cluster import LocalCluster, wait_for
from fixtures.sparkapps import SPARK_PI_SCHEDULED, end_pod, load, on_kwok, state_of

from kubeaccel.kube.client import Kube
from kubeaccel.operator import crds
from kubeaccel.operator.api import AppState, ScheduledSparkApplication
from kubeaccel.operator.controller import Controller
from kubeaccel.operator.scheduled import Run, decide

CREATED = "2026-12-05T08:00:00Z"
NOW = datetime(2026, 12, 5, 8, 3, 30, tzinfo=UTC)


def scheduled(**spec: Any) -> ScheduledSparkApplication:
    document = load(SPARK_PI_SCHEDULED)
    document["metadata"].update(namespace="ns", uid="u")
    document["spec"].update(spec)
    return ScheduledSparkApplication.model_validate(document)


def test_not_due_waits() -> None:
    plan = decide(scheduled(), [], datetime(2026, 12, 5, 8, 1, tzinfo=UTC), CREATED)
    assert plan.create is None and plan.requeue_after == pytest.approx(120)
    assert plan.status is not None and plan.status["nextRun"] == "2026-12-05T08:03:00Z"


def test_due_creates_a_run_owned_by_the_schedule() -> None:
    plan = decide(scheduled(), [], NOW, CREATED)
    assert plan.create is not None
    assert (
        plan.create["metadata"]["name"]
        == f"spark-pi-scheduled-{int(datetime(2026, 12, 5, 8, 3, tzinfo=UTC).timestamp())}"
    )
    assert plan.create["metadata"]["ownerReferences"][0]["kind"] == "ScheduledSparkApplication"
    assert plan.create["spec"]["mainClass"] == "org.apache.spark.examples.SparkPi"
    assert plan.status is not None and plan.status["lastRun"] == "2026-12-05T08:03:00Z"
    assert plan.status["nextRun"] == "2026-12-05T08:06:30Z"


ACTIVE = [Run("old", AppState.RUNNING, "2026-12-05T08:00:00Z")]


@pytest.mark.parametrize(
    "policy, creates, deletes",
    [("Allow", True, ()), ("Forbid", False, ()), ("Replace", True, ("old",))],
)
def test_concurrency_policy(policy: str, creates: bool, deletes: tuple[str, ...]) -> None:
    plan = decide(scheduled(concurrencyPolicy=policy), ACTIVE, NOW, CREATED)
    assert (plan.create is not None) is creates and plan.delete == deletes
    if not creates:
        assert plan.status is not None and "Forbid" in plan.status["reason"]


def test_history_limits() -> None:
    runs = [Run(f"r{i}", AppState.COMPLETED if i % 2 else AppState.FAILED, f"2026-12-05T07:0{i}:00Z") for i in range(6)]
    plan = decide(scheduled(successfulRunHistoryLimit=2, failedRunHistoryLimit=1), runs, NOW, CREATED)
    assert plan.status is not None
    assert plan.status["pastSuccessfulRunNames"] == ["r5", "r3"] and plan.status["pastFailedRunNames"] == ["r4"]
    assert set(plan.delete) == {"r1", "r2", "r0"}


def test_suspended_runs_nothing() -> None:
    assert decide(scheduled(suspend=True), [], NOW, CREATED).create is None


def test_bad_schedule_fails_validation() -> None:
    plan = decide(scheduled(schedule="0 0 30 2 *"), [], NOW, CREATED)
    assert plan.status is not None and plan.status["scheduleState"] == "FailedValidation"
    assert "never runs" in plan.status["reason"]


ESTABLISHED = "jsonpath={.status.conditions[?(@.type=='Established')].status}"


@pytest.fixture
def running(cluster: LocalCluster) -> Iterator[tuple[Kube, str]]:
    cluster.apply(crds.crds_yaml())
    for crd in crds.all_crds():
        name = crd["metadata"]["name"]
        wait_for(name, lambda n=name: cluster.kubectl("get", "crd", n, "-o", ESTABLISHED).stdout == "True")
    namespace = cluster.create_namespace("sched")
    cluster.kubectl("create", "serviceaccount", "spark", "-n", namespace)
    kube = Kube.connect(kubeconfig=cluster.kubeconfig)
    controller = Controller(kube, [namespace], workers=2)
    controller.start()
    wait_for("watches", controller.synced.is_set)
    yield kube, namespace
    controller.stop()


@pytest.mark.cluster
def test_every_runs_on_the_cluster(cluster: LocalCluster, running: tuple[Kube, str]) -> None:
    kube, namespace = running
    document = copy.deepcopy(load(SPARK_PI_SCHEDULED))
    document["spec"].update(schedule="@every 3s", successfulRunHistoryLimit=1)
    on_kwok(document)
    cluster.apply(yaml.safe_dump(document), namespace)
    finished: list[str] = []

    def runs() -> list[str]:
        out = cluster.kubectl("get", "sparkapplications", "-n", namespace, "-o", "jsonpath={.items[*].metadata.name}")
        return sorted(out.stdout.split())

    for _ in range(2):
        wait_for("a new run", lambda: any(r not in finished for r in runs()), timeout=20)
        run = next(r for r in runs() if r not in finished)
        wait_for(f"{run} running", lambda r=run: state_of(cluster, namespace, r) == "RUNNING", timeout=20)
        end_pod(kube, namespace, f"{run}-driver", 0)
        wait_for(f"{run} completed", lambda r=run: state_of(cluster, namespace, r) == "COMPLETED", timeout=20)
        finished.append(run)
    status_path = "jsonpath={.status.scheduleState} {.status.pastSuccessfulRunNames[*]}"
    wait_for(
        "the history trimmed to 1",
        lambda: finished[0] not in runs()
        and cluster.kubectl("get", "scheduledsparkapplication", "spark-pi-scheduled", "-n", namespace, "-o",
                            status_path).stdout.startswith("Scheduled"),
        timeout=20,
    )  # fmt: skip
    assert (datetime.now(UTC) - timedelta(minutes=5)).year >= 2026
