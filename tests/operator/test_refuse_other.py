"""`operator run` refuses to start while another SparkApplication controller is in the cluster.

Pure: each kind of evidence (a webhook rule on sparkoperator.k8s.io, kubeflow's chart Deployment, a held
kubeflow leader Lease) as a table, and hypothesis over arbitrary objects (never raises, never claims an
unrelated object). Real control plane: stand-ins of kubeflow's objects (a webhook that matches no namespace,
a Deployment of 0 replicas, a freshly renewed Lease) make `kubeaccel operator run` exit 2 naming each one;
with them gone, or the Lease expired, the check passes.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fixtures.cluster import LocalCluster
from fixtures.kubeflow import webhook
from hypothesis import given
from hypothesis import strategies as st

from kubeaccel.kube.client import Kube
from kubeaccel.operator.leader import micro_time
from kubeaccel.operator.others import OtherControllerError, check_no_other_controller, judge, lease_evidence

NOW = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)


def lease(name: str, renewed: datetime, holder: str | None = "spark-operator-controller-7d9f_abc") -> dict[str, Any]:
    spec = {"holderIdentity": holder, "renewTime": micro_time(renewed), "leaseDurationSeconds": 15}
    return {"metadata": {"name": name, "namespace": "spark-operator"}, "spec": spec}


def deployment(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "spark-operator", "labels": labels}, "spec": {"replicas": 1}}


KUBEFLOW = {"app.kubernetes.io/name": "spark-operator", "app.kubernetes.io/instance": "spark-operator"}


@pytest.mark.parametrize(
    "webhooks, deployments, leases, kinds",
    [
        ([], [], [], []),
        ([("MutatingWebhookConfiguration", webhook("spark-operator-webhook", ["sparkoperator.k8s.io"]))], [], [],
         ["MutatingWebhookConfiguration"]),
        ([("ValidatingWebhookConfiguration", webhook("any", ["*"]))], [], [], ["ValidatingWebhookConfiguration"]),
        ([("ValidatingWebhookConfiguration", webhook("any", ["*"], ["pods"]))], [], [], []),
        ([("MutatingWebhookConfiguration", webhook("other", ["apps"]))], [], [], []),
        ([], [deployment("spark-operator-controller", KUBEFLOW)], [], ["Deployment"]),
        ([], [deployment("ops-kubeaccel-operator", {"app.kubernetes.io/name": "kubeaccel-operator"})], [], []),
        ([], [], [lease("spark-operator-controller-lock", NOW - timedelta(seconds=3))], ["Lease"]),
        ([], [], [lease("spark-operator-lock", NOW - timedelta(seconds=3))], ["Lease"]),
        ([], [], [lease("spark-operator-controller-lock", NOW - timedelta(seconds=60))], []),
        ([], [], [lease("spark-operator-controller-lock", NOW, holder=None)], []),
        ([], [], [lease("kubeaccel-operator", NOW)], []),
    ],
    ids=["nothing", "webhook", "wildcard-webhook", "wildcard-pods", "other-group", "deployment", "our-deployment",
         "lease-v2", "lease-v1", "lease-expired", "lease-released", "our-lease"],
)
def test_judge(webhooks: Any, deployments: Any, leases: Any, kinds: list[str]) -> None:
    assert [e.kind for e in judge(webhooks, deployments, leases, NOW)] == kinds


@given(
    name=st.sampled_from(["spark-operator-controller-lock", "x-spark-operator-lock", "kubeaccel-operator", "lock"]),
    age=st.integers(min_value=0, max_value=100),
    duration=st.integers(min_value=1, max_value=60),
    holder=st.none() | st.text(min_size=1, max_size=10),
)
def test_a_lease_is_evidence_iff_kubeflow_named_and_held(
    name: str, age: int, duration: int, holder: str | None
) -> None:
    held = lease(name, NOW - timedelta(seconds=age), holder)
    held["spec"]["leaseDurationSeconds"] = duration
    want = name.endswith("spark-operator-lock") or name.endswith("spark-operator-controller-lock")
    assert (lease_evidence(held, NOW) is not None) == (want and holder is not None and age <= duration)


@pytest.mark.cluster
def test_run_refuses_with_kubeflow_stand_ins(cluster: LocalCluster) -> None:
    namespace = cluster.create_namespace("kubeflow")
    hook = webhook(f"spark-operator-webhook-{namespace}", ["sparkoperator.k8s.io"])
    hook |= {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration"}
    container = {"name": "spark-operator-controller", "image": "spark-operator:2.5.0"}
    kubeflow_deployment = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "spark-operator-controller",
                     "labels": {**KUBEFLOW, "app.kubernetes.io/component": "controller"}},
        "spec": {"replicas": 0, "selector": {"matchLabels": KUBEFLOW},
                 "template": {"metadata": {"labels": KUBEFLOW}, "spec": {"containers": [container]}}},
    }  # fmt: skip
    held = lease("spark-operator-controller-lock", datetime.now(UTC))
    held |= {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease"}
    held["metadata"]["namespace"] = namespace
    try:
        cluster.apply(json.dumps(hook))
        cluster.apply(json.dumps(kubeflow_deployment), namespace)
        cluster.apply(json.dumps(held), namespace)
        code = "import sys; from kubeaccel.cli import main; main(sys.argv[1:])"
        result = subprocess.run(
            [sys.executable, "-c", code, "operator", "run", "--kubeconfig", str(cluster.kubeconfig),
             "--listen", "127.0.0.1:0"],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert result.returncode == 2, result.stderr
        for named in (f"MutatingWebhookConfiguration {hook['metadata']['name']}",
                      f"Deployment {namespace}/spark-operator-controller",
                      f"Lease {namespace}/spark-operator-controller-lock", "helm uninstall"):  # fmt: skip
            assert named in result.stderr
        assert "Traceback" not in result.stderr
    finally:
        cluster.kubectl("delete", "mutatingwebhookconfiguration", hook["metadata"]["name"], check=False)
    kube = Kube.connect(kubeconfig=cluster.kubeconfig)
    cluster.kubectl("delete", "deployment", "spark-operator-controller", "-n", namespace)
    with pytest.raises(OtherControllerError, match="Lease"):
        check_no_other_controller(kube, datetime.now(UTC))  # the Lease alone still refuses
    # The same Lease, no longer renewed: a controller that stopped, not one running now.
    check_no_other_controller(kube, datetime.now(UTC) + timedelta(seconds=60))
    # Gone at once, not after its 15 s: later tests of the session start controllers.
    cluster.kubectl("delete", "lease", "spark-operator-controller-lock", "-n", namespace)
