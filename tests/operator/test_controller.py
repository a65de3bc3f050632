"""The controller on the real control plane (kwok nodes run the pods; the test writes a driver's end through
the status subresource, as the kubelet would).

Matrix: submit -> SUBMITTED/RUNNING -> COMPLETED with driverInfo, IDs, attempts, times, executorState |
FAILED with OnFailure retries (PENDING_RERUN, a new submission, then FAILED for good) | SUBMISSION_FAILED +
Event for a refused pod (no ServiceAccount), the quota pre-flight (the CLI's message), an unserved field |
deleting the app removes its pods, Service, ConfigMaps | TTL | suspend and resume | a spec change re-submits |
a crash after the driver was created: the next controller adopts it and creates what it lacks.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from fixtures.cluster import LocalCluster, wait_for
from fixtures.sparkapps import SPARK_PI, end_pod, get_app, load, on_kwok, state_of

from kubeaccel.kube.client import Kube
from kubeaccel.kube.rest import PODS
from kubeaccel.operator import crds
from kubeaccel.operator.controller import Controller, generated_for
from kubeaccel.operator.mapping import LABEL_SUBMISSION_ID, resolve_mapped, to_submission

pytestmark = pytest.mark.cluster
ESTABLISHED = "jsonpath={.status.conditions[?(@.type=='Established')].status}"


@pytest.fixture(scope="module")
def kube(cluster: LocalCluster) -> Iterator[Kube]:
    cluster.apply(crds.crds_yaml())
    for crd in crds.all_crds():
        name = crd["metadata"]["name"]
        wait_for(
            f"{name} established", lambda n=name: cluster.kubectl("get", "crd", n, "-o", ESTABLISHED).stdout == "True"
        )
    kube = Kube.connect(kubeconfig=cluster.kubeconfig)
    yield kube
    kube.close()


@pytest.fixture
def namespace(cluster: LocalCluster) -> str:
    name = cluster.create_namespace("op")
    cluster.kubectl("create", "serviceaccount", "spark", "-n", name)
    return name


@pytest.fixture
def controller(kube: Kube, namespace: str) -> Iterator[Controller]:
    controller = Controller(kube, [namespace], workers=2)
    controller.start()
    wait_for("the controller's watches", controller.synced.is_set, timeout=30)
    yield controller
    controller.stop()
    assert controller.metrics.reconcile_errors._value.get() == 0


def app_document(name: str = "spark-pi", **spec: Any) -> dict[str, Any]:
    document = on_kwok(load(SPARK_PI), **spec)
    document["metadata"]["name"] = name
    return document


def apply(cluster: LocalCluster, namespace: str, document: dict[str, Any]) -> None:
    cluster.apply(yaml.safe_dump(document), namespace)


def wait_state(cluster: LocalCluster, namespace: str, name: str, *states: str, timeout: float = 30) -> dict[str, Any]:
    wait_for(f"{name} in {states}", lambda: state_of(cluster, namespace, name) in states, timeout=timeout)
    return get_app(cluster, namespace, name)


def executor_pod(app: dict[str, Any], driver: dict[str, Any]) -> dict[str, Any]:
    """An executor as Spark's driver would make it: the operator's labels, owned by the driver."""
    labels = {k: v for k, v in driver["metadata"]["labels"].items() if k != "spark-role"}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"{app['metadata']['name']}-exec-1",
            "labels": {**labels, "spark-role": "executor", "spark-exec-id": "1"},
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": driver["metadata"]["name"],
                    "uid": driver["metadata"]["uid"],
                    "controller": True,
                }
            ],
        },
        "spec": {"nodeSelector": {"type": "kwok"}, "containers": [{"name": "executor", "image": "spark:test"}]},
    }


def test_runs_to_completed(cluster: LocalCluster, kube: Kube, namespace: str, controller: Controller) -> None:
    apply(cluster, namespace, app_document())
    app = wait_state(cluster, namespace, "spark-pi", "RUNNING")
    status = app["status"]
    assert status["driverInfo"]["podName"] == "spark-pi-driver"
    assert status["sparkApplicationId"].startswith("spark-") and status["submissionID"]
    assert status["executionAttempts"] == 1 and status["submissionAttempts"] == 1
    assert status["lastSubmissionAttemptTime"].endswith("Z")
    driver = kube.get_raw(PODS, "spark-pi-driver", namespace)
    assert driver["metadata"]["ownerReferences"][0]["kind"] == "SparkApplication"
    assert driver["metadata"]["labels"][LABEL_SUBMISSION_ID] == status["submissionID"]
    kube.create(executor_pod(app, driver), namespace=namespace)
    wait_for(
        "executorState",
        lambda: (
            (get_app(cluster, namespace, "spark-pi")["status"].get("executorState") or {}).get("spark-pi-exec-1")
            in ("PENDING", "RUNNING")
        ),
    )
    end_pod(kube, namespace, "spark-pi-driver", 0)
    app = wait_state(cluster, namespace, "spark-pi", "COMPLETED")
    assert app["status"]["terminationTime"].endswith("Z")
    events = cluster.kubectl("get", "events", "-n", namespace, "-o", "jsonpath={.items[*].reason}").stdout.split()
    assert "SparkApplicationSubmitted" in events and "SparkDriverCompleted" in events


def test_on_failure_retries_then_fails(
    cluster: LocalCluster, kube: Kube, namespace: str, controller: Controller
) -> None:
    policy = {"type": "OnFailure", "onFailureRetries": 1, "onFailureRetryInterval": 1}
    apply(cluster, namespace, app_document(restartPolicy=policy))
    first = wait_state(cluster, namespace, "spark-pi", "RUNNING")["status"]["submissionID"]
    end_pod(kube, namespace, "spark-pi-driver", 1)
    failed = wait_state(cluster, namespace, "spark-pi", "FAILED", "PENDING_RERUN", "SUBMITTED", "RUNNING")
    assert (
        failed["status"]["submissionID"] != first
        or "exit code 1" in failed["status"]["applicationState"]["errorMessage"]
    )
    wait_for(
        "the rerun",
        lambda: (
            get_app(cluster, namespace, "spark-pi")["status"].get("submissionID") not in (None, first)
            and state_of(cluster, namespace, "spark-pi") == "RUNNING"
        ),
        timeout=30,
    )
    assert get_app(cluster, namespace, "spark-pi")["status"]["executionAttempts"] == 2
    end_pod(kube, namespace, "spark-pi-driver", 1)
    app = wait_state(cluster, namespace, "spark-pi", "FAILED")
    assert (
        "exit code 1" in app["status"]["applicationState"]["errorMessage"]
        and "boom" in app["status"]["applicationState"]["errorMessage"]
    )
    time.sleep(2)  # past the retry interval: no third run
    assert state_of(cluster, namespace, "spark-pi") == "FAILED"


@pytest.mark.parametrize(
    "change, expected",
    [
        ({"driver": {"cores": 1, "memory": "512m", "serviceAccount": "nobody"}}, 'serviceaccount "nobody" not found'),
        ({"monitoring": {"exposeDriverMetrics": True}}, "spec.monitoring"),
        ({"driver": {"cores": 64, "memory": "512m", "serviceAccount": "spark"}}, "quota"),
    ],
    ids=["admission", "unserved-field", "quota-preflight"],
)
def test_submission_failed_with_an_event(
    cluster: LocalCluster, namespace: str, controller: Controller, change: dict[str, Any], expected: str
) -> None:
    cluster.apply(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "ResourceQuota",
                "metadata": {"name": "q"},
                "spec": {"hard": {"requests.cpu": "8"}},
            }
        ),
        namespace,
    )
    apply(cluster, namespace, app_document(**change))
    app = wait_state(cluster, namespace, "spark-pi", "SUBMISSION_FAILED")
    message = app["status"]["applicationState"]["errorMessage"]
    assert expected in message
    wait_for(
        "the Event",
        lambda: (
            expected
            in cluster.kubectl(
                "get",
                "events",
                "-n",
                namespace,
                "--field-selector",
                "reason=SparkApplicationSubmissionFailed",
                "-o",
                "jsonpath={.items[*].message}",
            ).stdout
        ),
    )
    pods = cluster.kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.split()
    assert pods == []  # nothing left behind


def test_delete_removes_everything(cluster: LocalCluster, namespace: str, controller: Controller) -> None:
    apply(cluster, namespace, app_document())
    wait_state(cluster, namespace, "spark-pi", "RUNNING")
    owned = ("pods", "services", "configmaps", "networkpolicies")
    before = cluster.kubectl("get", ",".join(owned), "-n", namespace, "-o", "name").stdout.split()
    assert len([n for n in before if "spark-pi" in n or "spark-drv" in n]) >= 4
    cluster.kubectl("delete", "sparkapplication", "spark-pi", "-n", namespace, "--wait=true")
    wait_for(
        "the owned objects gone",
        lambda: (
            not [
                n
                for n in cluster.kubectl("get", ",".join(owned), "-n", namespace, "-o", "name").stdout.split()
                if "spark-pi" in n or "spark-drv" in n
            ]
        ),
        timeout=60,
    )


def test_ttl_deletes_the_finished_app(
    cluster: LocalCluster, kube: Kube, namespace: str, controller: Controller
) -> None:
    apply(cluster, namespace, app_document(timeToLiveSeconds=2))
    wait_state(cluster, namespace, "spark-pi", "RUNNING")
    end_pod(kube, namespace, "spark-pi-driver", 0)
    wait_state(cluster, namespace, "spark-pi", "COMPLETED")
    wait_for("the TTL", lambda: not get_app(cluster, namespace, "spark-pi"), timeout=20)


def test_suspend_and_resume(cluster: LocalCluster, namespace: str, controller: Controller) -> None:
    apply(cluster, namespace, app_document())
    first = wait_state(cluster, namespace, "spark-pi", "RUNNING")["status"]["submissionID"]
    apply(cluster, namespace, app_document(suspend=True))
    wait_state(cluster, namespace, "spark-pi", "SUSPENDED")
    wait_for(
        "the driver gone",
        lambda: not cluster.kubectl("get", "pods", "-n", namespace, "-o", "name").stdout.strip(),
        timeout=30,
    )
    apply(cluster, namespace, app_document(suspend=False))
    app = wait_state(cluster, namespace, "spark-pi", "RUNNING", "SUBMITTED", timeout=40)
    assert app["status"]["submissionID"] != first


def test_spec_change_resubmits(cluster: LocalCluster, kube: Kube, namespace: str, controller: Controller) -> None:
    apply(cluster, namespace, app_document())
    first = wait_state(cluster, namespace, "spark-pi", "RUNNING")["status"]["submissionID"]
    apply(cluster, namespace, app_document(arguments=["10"]))
    wait_for(
        "a new submission",
        lambda: (
            get_app(cluster, namespace, "spark-pi")["status"].get("submissionID") not in (None, first)
            and state_of(cluster, namespace, "spark-pi") == "RUNNING"
        ),
        timeout=40,
    )
    driver = kube.get_raw(PODS, "spark-pi-driver", namespace)
    assert driver["spec"]["containers"][-1]["args"][-1] == "10"
    assert get_app(cluster, namespace, "spark-pi")["status"]["observedGeneration"] == 2


def test_adopts_a_driver_made_before_a_crash(cluster: LocalCluster, kube: Kube, namespace: str) -> None:
    """A controller wrote the submission down, created the driver pod, and died: the next one adopts it."""
    from kubeaccel.operator import kinds
    from kubeaccel.operator.api import SparkApplication
    from kubeaccel.spark.builder import build

    apply(cluster, namespace, app_document())
    raw = get_app(cluster, namespace, "spark-pi")
    submission = "crashed-0000"
    intent = {
        "submissionID": submission,
        "lastSubmissionAttemptTime": "2026-12-05T00:00:00Z",
        "submissionAttempts": 1,
        "observedGeneration": 1,
    }
    kube.merge_patch(kinds.apps().Status, "spark-pi", {"status": intent}, namespace)
    app = SparkApplication.model_validate({**raw, "status": intent})
    owner = {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "name": "spark-pi",
        "uid": raw["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }
    resolved = resolve_mapped(to_submission(app, master=f"k8s://{kube.server}", submission_id=submission, owner=owner))
    manifests = build(resolved.placed(None), generated_for(submission, intent["lastSubmissionAttemptTime"]))
    created = kube.create(copy.deepcopy(manifests.driver_pod), namespace=namespace)

    controller = Controller(kube, [namespace], workers=2)
    controller.start()
    try:
        app_after = wait_state(cluster, namespace, "spark-pi", "RUNNING", "SUBMITTED")
        assert app_after["status"]["submissionID"] == submission
        assert kube.get_raw(PODS, "spark-pi-driver", namespace)["metadata"]["uid"] == created["metadata"]["uid"]
        names = cluster.kubectl("get", "configmaps,services", "-n", namespace, "-o", "name").stdout.split()
        assert f"configmap/{manifests.config_map['metadata']['name']}" in names
        assert f"service/{manifests.service['metadata']['name']}" in names
    finally:
        controller.stop()
