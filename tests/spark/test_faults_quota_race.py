"""Quota reservations hold under concurrency (real apiserver, real ResourceQuota admission).

Matrix: 8 submits released at once by a barrier, each needing all 4 VEs of the tenant -> exactly 1 admitted,
7 refused with exit code 6; 4 submits with room for 2 -> exactly 2; the admitted app's reservation (its
executors not created yet) is released when the app ends, and becomes usage (not counted twice) when the
executors exist; a lock left by a dead submitter expires and is
taken over; a live holder makes a waiter give up with a clear, retryable error naming the holder.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fixtures.spark import ON_KWOK, SPARK_USER

from kubeaccel.errors import KubeaccelError, UnavailableError
from kubeaccel.kube.client import Kube
from kubeaccel.kube.tenancy import create_tenant
from kubeaccel.spark import manage
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.ids import SubmissionId
from kubeaccel.spark.preflight import QUOTA_EXIT_CODE
from kubeaccel.spark.reservation import LEASE_NAME, QuotaLock, lease_manifest
from kubeaccel.spark.submit import submit

pytestmark = pytest.mark.cluster


def _request(kube: Kube, namespace: str, executors: int, ves: int) -> SubmitRequest:
    return SubmitRequest(
        "local:///opt/app.py",
        master=f"k8s://{kube.server}",
        name="race",
        conf={
            "spark.kubernetes.namespace": namespace,
            "spark.kubernetes.container.image": "spark:test",
            "spark.executor.instances": str(executors),
            "spark.executor.resource.ve.amount": str(ves),
            "spark.executor.resource.ve.vendor": "nec.com",
            "spark.executor.resource.ve.discoveryScript": "/opt/kubeaccel/discover",
            **ON_KWOK,
        },
    )


def race(kubeconfig: Path, request: SubmitRequest, contenders: int) -> list[SubmissionId | KubeaccelError]:
    """`contenders` submits, each with its own connection, released at the same instant."""
    _warm_decoders(kubeconfig, request.conf["spark.kubernetes.namespace"])
    barrier = threading.Barrier(contenders)
    results: list[SubmissionId | KubeaccelError] = [KubeaccelError("did not finish")] * contenders

    def one(index: int) -> None:
        kube = Kube.connect(kubeconfig=kubeconfig)
        try:
            barrier.wait(timeout=60)
            results[index] = submit(request, kube=kube)
        except KubeaccelError as exc:
            results[index] = exc
        finally:
            kube.close()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(contenders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    return results


def _warm_decoders(kubeconfig: Path, namespace: str) -> None:
    """msgspec builds each type's decoder on first use, not thread-safely: build them before the threads."""
    from lightkube.models.meta_v1 import Status
    from lightkube.resources.core_v1 import ConfigMap, ResourceQuota

    Status.from_dict({"apiVersion": "v1", "kind": "Status"})
    kube = Kube.connect(kubeconfig=kubeconfig)
    kube.list(ResourceQuota, namespace=namespace)
    kube.list(ConfigMap, namespace=namespace)
    assert QuotaLock.acquire(kube, namespace, wait_seconds=5).release()
    kube.close()


def _admitted(results: list[SubmissionId | KubeaccelError]) -> list[SubmissionId]:
    return [r for r in results if isinstance(r, SubmissionId)]


def _refusals(results: list[SubmissionId | KubeaccelError]) -> list[int]:
    return [r.exit_code for r in results if isinstance(r, KubeaccelError)]


def test_eight_way_race_for_the_whole_quota_admits_exactly_one(
    kube: Kube, kubeconfig: Path, spark_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARK_USER", SPARK_USER)
    create_tenant(kube, spark_namespace, {"requests.nec.com/ve": "4"})
    results = race(kubeconfig, _request(kube, spark_namespace, executors=2, ves=2), 8)
    admitted = _admitted(results)
    assert len(admitted) == 1, results
    assert _refusals(results) == [QUOTA_EXIT_CODE] * 7, [str(r) for r in results]
    assert [a.id for a in manage.list_apps(kube, namespace=spark_namespace)] == [str(admitted[0])]


def test_four_way_race_with_room_for_two_admits_exactly_two(
    kube: Kube, kubeconfig: Path, spark_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARK_USER", SPARK_USER)
    create_tenant(kube, spark_namespace, {"requests.nec.com/ve": "4"})
    results = race(kubeconfig, _request(kube, spark_namespace, executors=1, ves=2), 4)
    assert len(_admitted(results)) == 2, results
    assert _refusals(results) == [QUOTA_EXIT_CODE] * 2, [str(r) for r in results]
    assert len(manage.list_apps(kube, namespace=spark_namespace)) == 2


def test_reservation_is_released_when_the_app_ends(
    kube: Kube, spark_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightkube.resources.core_v1 import Pod
    from lightkube.types import PatchType

    monkeypatch.setenv("SPARK_USER", SPARK_USER)
    create_tenant(kube, spark_namespace, {"requests.nec.com/ve": "4"})
    request = _request(kube, spark_namespace, executors=2, ves=2)
    first = submit(request, kube=kube)
    with pytest.raises(KubeaccelError) as refused:
        submit(request, kube=kube)
    assert refused.value.exit_code == QUOTA_EXIT_CODE
    kube.client.patch(
        Pod.Status,
        first.pod,
        {"status": {"phase": "Succeeded"}},
        namespace=first.namespace,
        patch_type=PatchType.MERGE,
    )
    second = submit(request, kube=kube)  # the ended app no longer holds its executors' VEs
    assert second != first


def test_reservation_turns_into_usage_when_the_executors_exist(
    kube: Kube, spark_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted once: before, as the admitted app's reservation; after, as the quota's usage (never both)."""
    monkeypatch.setenv("SPARK_USER", SPARK_USER)
    create_tenant(kube, spark_namespace, {"requests.nec.com/ve": "8"})
    request = _request(kube, spark_namespace, executors=2, ves=2)  # 4 of the 8 VEs
    first = submit(request, kube=kube)
    [app] = manage.status(kube, str(first))
    for n in range(2):  # the executors, as the app's driver creates them
        kube.create(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": f"{first.pod}-exec-{n}",
                    "labels": {"spark-app-selector": app.app_id, "spark-role": "executor"},
                },
                "spec": {
                    "nodeSelector": {"type": ON_KWOK["spark.kubernetes.node.selector.type"]},
                    "containers": [{"name": "e", "image": "spark:test", "resources": {"limits": {"nec.com/ve": "2"}}}],
                },
            },
            namespace=spark_namespace,
        )
    second = submit(request, kube=kube)  # 4 used by the executors + 4 for this app: fits exactly
    with pytest.raises(KubeaccelError) as refused:
        submit(request, kube=kube)  # the second app's executors are still to come: nothing left
    assert refused.value.exit_code == QUOTA_EXIT_CODE
    assert second != first


def _lease(kube: Kube, namespace: str) -> Any:
    from lightkube.resources.coordination_v1 import Lease

    return kube.get(Lease, LEASE_NAME, namespace=namespace)


def test_lock_of_a_dead_submitter_expires_and_a_live_one_is_waited_for(kube: Kube, spark_namespace: str) -> None:
    stale = datetime.now(UTC) - timedelta(minutes=5)
    kube.create(lease_manifest(spark_namespace, "dead-host/pid-1/x", stale), namespace=spark_namespace)
    lock = QuotaLock.acquire(kube, spark_namespace, wait_seconds=5)
    lease = _lease(kube, spark_namespace)
    assert lease.spec.holderIdentity == lock.holder != "dead-host/pid-1/x"
    assert lease.spec.leaseTransitions == 1

    with pytest.raises(UnavailableError) as info:
        QuotaLock.acquire(kube, spark_namespace, wait_seconds=1)
    assert lock.holder in info.value.message
    assert "retry" in (info.value.hint or "")

    assert lock.release()
    assert _lease(kube, spark_namespace).spec.holderIdentity is None
    again = QuotaLock.acquire(kube, spark_namespace, wait_seconds=1)
    assert again.release()


def test_a_holder_that_lost_its_lock_finds_out_before_writing(kube: Kube, spark_namespace: str) -> None:
    first = QuotaLock.acquire(kube, spark_namespace, wait_seconds=1)
    # someone else takes it over (as after an expiry): the first holder's compare-and-swap must fail
    lease = _lease(kube, spark_namespace).to_dict()
    taken = lease_manifest(spark_namespace, "other", datetime.now(UTC), transitions=5)
    taken["metadata"]["resourceVersion"] = lease["metadata"]["resourceVersion"]
    from lightkube.codecs import from_dict

    kube.client.replace(from_dict(taken))
    with pytest.raises(UnavailableError, match="lost the quota lock"):
        first.renew()
    assert not first.release()  # not ours any more: left alone
    assert _lease(kube, spark_namespace).spec.holderIdentity == "other"
