"""Leader election: the pure step as a table; two electors on the real API server's Lease (one leads, the other
takes over once the leader stops renewing; a clean stop frees the Lease at once).
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fixtures.cluster import LocalCluster, wait_for

from kubeaccel.kube.client import Kube
from kubeaccel.operator.leader import LeaderElector, micro_time, step

NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def lease(holder: str | None, renewed: datetime, transitions: int = 0) -> dict[str, Any]:
    return {"spec": {"holderIdentity": holder, "renewTime": micro_time(renewed), "leaseDurationSeconds": 15,
                     "leaseTransitions": transitions}}  # fmt: skip


@pytest.mark.parametrize(
    "current, leading, transitions",
    [
        (None, True, 0),
        (lease("me", NOW - timedelta(seconds=5)), True, 0),
        (lease("other", NOW - timedelta(seconds=5)), False, None),
        (lease("other", NOW - timedelta(seconds=16), 2), True, 3),
        (lease(None, NOW - timedelta(seconds=1), 2), True, 2),
    ],
    ids=["none", "ours", "held", "expired", "released"],
)
def test_step(current: dict[str, Any] | None, leading: bool, transitions: int | None) -> None:
    decision = step(current, "me", NOW)
    assert decision.leading is leading
    if transitions is None:
        assert decision.spec is None
    else:
        assert decision.spec is not None and decision.spec["holderIdentity"] == "me"
        assert decision.spec["leaseTransitions"] == transitions and decision.spec["renewTime"] == micro_time(NOW)


@pytest.mark.cluster
def test_failover_on_the_real_lease(cluster: LocalCluster) -> None:
    namespace = cluster.create_namespace("lease")
    kube = Kube.connect(kubeconfig=cluster.kubeconfig)
    started: list[str] = []
    lost: list[str] = []

    def elector(me: str) -> LeaderElector:
        return LeaderElector(
            kube, namespace, me=me, on_started=lambda: started.append(me), on_lost=lambda: lost.append(me),
            retry_s=0.2, renew_deadline_s=1.0, duration=2,
        )  # fmt: skip

    first, second = elector("a"), elector("b")
    stop_first, stop_second = threading.Event(), threading.Event()
    threading.Thread(target=first.run, args=(stop_first,), daemon=True).start()
    wait_for("a leads", lambda: started == ["a"], timeout=10)
    threading.Thread(target=second.run, args=(stop_second,), daemon=True).start()
    threading.Event().wait(1.0)
    assert started == ["a"] and not second.leading.is_set()  # never two leaders
    stop_first.set()  # "a" stops renewing without releasing: as if killed
    wait_for("b takes over", lambda: started == ["a", "b"], timeout=10)
    holder = cluster.kubectl("get", "lease", "kubeaccel-operator", "-n", namespace, "-o",
                             "jsonpath={.spec.holderIdentity} {.spec.leaseTransitions}").stdout  # fmt: skip
    assert holder == "b 1"
    second.release()
    stop_second.set()
    third = elector("c")
    stop_third = threading.Event()
    threading.Thread(target=third.run, args=(stop_third,), daemon=True).start()
    wait_for("c takes the released Lease at once", lambda: "c" in started, timeout=3)
    stop_third.set()
    assert lost == []
