"""Submit and manage against the real apiserver (kwok runs the pods on the local control plane).

Matrix: fire-and-forget submit prints the ID and creates pod + owned objects; a failure part-way
(a conflicting Service) leaves nothing behind; quota pre-flight refuses an app whose executors
would not fit (extended resources included) and --no-preflight skips it; unknown namespace;
status / list (json and table) / kill with a glob / logs errors; malformed IDs fail before any call.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.spark import ON_KWOK, ON_KWOK_ARGS, SPARK_USER, run_cli

from kubeaccel.errors import KubeaccelError
from kubeaccel.kube.client import Kube
from kubeaccel.kube.tenancy import create_tenant
from kubeaccel.spark import manage
from kubeaccel.spark.builder import Generated
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.submit import submit

pytestmark = pytest.mark.cluster

VE_EXECUTORS = {
    "spark.executor.instances": "3",
    "spark.executor.resource.ve.amount": "2",
    "spark.executor.resource.ve.vendor": "nec.com",
    "spark.executor.resource.ve.discoveryScript": "/opt/kubeaccel/discover",
}


def _request(kube: Kube, namespace: str, name: str = "app", **conf: str) -> SubmitRequest:
    return SubmitRequest(
        "local:///opt/spark/examples/src/main/python/pi.py",
        master=f"k8s://{kube.server}",
        name=name,
        conf={
            "spark.kubernetes.namespace": namespace,
            "spark.kubernetes.container.image": "spark:test",
            **ON_KWOK,
            **conf,
        },
    )


def _submit_cli(kube: Kube, kubeconfig: Path, namespace: str, *extra: str) -> tuple[int, str, BaseException | None]:
    return run_cli(
        [
            "spark",
            "submit",
            "--kubeconfig",
            str(kubeconfig),
            "--master",
            f"k8s://{kube.server}",
            "--name",
            "cli-app",
            "--conf",
            f"spark.kubernetes.namespace={namespace}",
            "--conf",
            "spark.kubernetes.container.image=spark:test",
            *ON_KWOK_ARGS,
            *extra,
            "local:///opt/app.py",
        ]
    )


def test_submit_prints_id_and_creates_owned_objects(kube: Kube, kubeconfig: Path, spark_namespace: str) -> None:
    from lightkube.resources.core_v1 import ConfigMap, Pod, Service

    code, output, error = _submit_cli(kube, kubeconfig, spark_namespace)
    assert code == 0, (output, error)
    namespace, pod_name = output.strip().split(":")
    assert namespace == spark_namespace
    pod = kube.get(Pod, pod_name, namespace=namespace)
    assert pod.metadata.labels["spark-role"] == "driver"
    owned = [
        o
        for res in (Service, ConfigMap)
        for o in kube.list(res, namespace=namespace)
        if o.metadata.ownerReferences and o.metadata.ownerReferences[0].uid == pod.metadata.uid
    ]
    assert sorted(type(o).__name__ for o in owned) == ["ConfigMap", "Service"]


def test_failure_part_way_leaves_nothing(kube: Kube, spark_namespace: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from lightkube.resources.core_v1 import ConfigMap, Pod, Service

    monkeypatch.setenv("SPARK_USER", SPARK_USER)
    generated = Generated.fresh(SPARK_USER)
    # a Service already holding the name the app's driver Service needs: the API refuses (409)
    taken = f"clash-{generated.name_id}-driver-svc"
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": taken},
            "spec": {"clusterIP": "None", "ports": [{"port": 1}]},
        },
        namespace=spark_namespace,
    )
    with pytest.raises(KubeaccelError) as info:
        submit(_request(kube, spark_namespace, "clash"), kube=kube, generated=generated)
    assert "already exists" in info.value.message
    assert kube.list(Pod, namespace=spark_namespace) == []
    assert [s.metadata.name for s in kube.list(Service, namespace=spark_namespace)] == [taken]
    assert [
        c.metadata.name
        for c in kube.list(ConfigMap, namespace=spark_namespace)
        if c.metadata.name.startswith("spark-drv-")
    ] == []


def test_quota_preflight(kube: Kube, kubeconfig: Path, spark_namespace: str) -> None:
    from lightkube.resources.core_v1 import Pod

    create_tenant(kube, spark_namespace, {"requests.nec.com/ve": "4", "requests.cpu": "16"})
    extra = [arg for key, value in VE_EXECUTORS.items() for arg in ("--conf", f"{key}={value}")]
    code, output, error = _submit_cli(kube, kubeconfig, spark_namespace, *extra)
    assert code == 6, output
    assert isinstance(error, KubeaccelError)
    assert "requests.nec.com/ve: the app needs 6, quota spark-quota has 4 left of 4" in error.message
    assert "--no-preflight" in (error.hint or "")
    assert kube.list(Pod, namespace=spark_namespace) == []
    # the driver itself asks no VE, so without the check it is admitted (and its executors would wait)
    code, output, error = _submit_cli(kube, kubeconfig, spark_namespace, *extra, "--no-preflight")
    assert code == 0, (output, error)

    # that admitted app's 3 executors (6 VE) are still to come: a small app no longer fits either
    small = [
        "--conf",
        "spark.executor.instances=1",
        "--conf",
        "spark.executor.resource.ve.amount=1",
        "--conf",
        "spark.executor.resource.ve.vendor=nec.com",
        "--conf",
        "spark.executor.resource.ve.discoveryScript=/opt/kubeaccel/discover",
    ]
    code, output, error = _submit_cli(kube, kubeconfig, spark_namespace, *small)
    assert code == 6, output
    assert isinstance(error, KubeaccelError)
    assert "1 admitted app(s) still wait for executors" in error.message
    assert (
        "requests.nec.com/ve: the app needs 1, quota spark-quota has 4 left of 4, "
        "of which 6 other apps' executors still need"
    ) in error.message
    # without VE executors it fits: the CPU quota has room for both apps' executors
    code, output, error = _submit_cli(kube, kubeconfig, spark_namespace, "--conf", "spark.executor.instances=1")
    assert code == 0, (output, error)


def test_unknown_namespace(kube: Kube, kubeconfig: Path) -> None:
    code, _, error = _submit_cli(kube, kubeconfig, "no-such-namespace-h4")
    assert code == 3
    assert 'namespaces "no-such-namespace-h4" not found' in str(error)


def _with_context_namespace(kubeconfig: Path, namespace: str | None, tmp_path: Path) -> Path:
    config = yaml.safe_load(kubeconfig.read_text())
    for context in config["contexts"]:
        context["context"].pop("namespace", None)
        if namespace:
            context["context"]["namespace"] = namespace
    path = tmp_path / f"kubeconfig-{namespace}"
    path.write_text(yaml.safe_dump(config))
    return path


def test_status_list_kill_with_globs(
    kube: Kube, kubeconfig: Path, spark_namespace: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SPARK_USER", SPARK_USER)
    ids = [
        submit(_request(kube, spark_namespace, name), kube=kube, check_quota=False)
        for name in ("etl-a", "etl-b", "report")
    ]
    base = ["--kubeconfig", str(kubeconfig)]

    code, output, _ = run_cli(["spark", "status", str(ids[0]), "-o", "json", *base])
    assert code == 0
    [app] = json.loads(output)["apps"]
    assert (app["id"], app["app_name"], app["namespace"]) == (str(ids[0]), "etl-a", spark_namespace)
    assert app["phase"] in ("Pending", "Running")

    code, output, _ = run_cli(["spark", "list", "-n", spark_namespace, "-o", "json", *base])
    assert sorted(a["id"] for a in json.loads(output)["apps"]) == sorted(map(str, ids))
    # no namespace given: the context's namespace, else all namespaces, as spark-submit
    for context_namespace, expected in ((spark_namespace, True), (None, True), ("kube-system", False)):
        variant = _with_context_namespace(kubeconfig, context_namespace, tmp_path)
        code, output, _ = run_cli(["spark", "list", "-o", "json", "--kubeconfig", str(variant)])
        assert code == 0
        assert ({str(i) for i in ids} <= {a["id"] for a in json.loads(output)["apps"]}) is expected, context_namespace
    code, output, _ = run_cli(["spark", "status", "*:etl-?-*", "-o", "json", *base])
    listed = [a["id"] for a in json.loads(output)["apps"] if a["namespace"] == spark_namespace]
    assert sorted(listed) == sorted(map(str, ids[:2]))
    code, output, _ = run_cli(["spark", "list", "-n", spark_namespace, "--name", "etl-?-*", *base])
    assert code == 0 and "etl-a" in output and "report" not in output

    code, _, error = run_cli(["spark", "logs", f"{spark_namespace}:*", *base])
    assert code == 2  # ambiguous: bad input, not "not found"
    assert isinstance(error, KubeaccelError)
    assert "matches 3 apps" in error.message and "give its full ID" in (error.hint or "")

    code, output, _ = run_cli(["spark", "kill", f"{spark_namespace}:etl-*", "--grace-period", "0", "-o", "json", *base])
    assert code == 0
    assert json.loads(output) == {"killed": sorted(str(i) for i in ids[:2]), "failed": []}
    assert [a.id for a in manage.list_apps(kube, namespace=spark_namespace)] == [str(ids[2])]
    code, _, error = run_cli(["spark", "status", f"{spark_namespace}:etl-*", *base])
    assert code == 3
    assert "no Spark driver pod matching 'etl-*'" in str(error)


@pytest.mark.parametrize("bad", ["a:b:c", "Bad_NS:x", ":x", "ns:pod name"])
def test_malformed_ids_fail_before_connecting(bad: str, tmp_path: Path) -> None:
    code, _, error = run_cli(["spark", "kill", bad, "--kubeconfig", str(tmp_path / "absent")])
    assert code == 2
    assert "hint" in str(error)


def test_status_reports_scheduler_message_and_executors(
    kube: Kube, cluster: Any, spark_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Needs the full local cluster (scheduler + kwok nodes with nec.com/ve=8 each)."""
    import time

    monkeypatch.setenv("SPARK_USER", SPARK_USER)
    greedy = {
        "spark.driver.resource.ve.amount": "64",
        "spark.driver.resource.ve.vendor": "nec.com",
        "spark.driver.resource.ve.discoveryScript": "/opt/kubeaccel/discover",
    }
    sid = submit(_request(kube, spark_namespace, "greedy", **greedy), kube=kube, check_quota=False)
    fits = submit(_request(kube, spark_namespace, "fits"), kube=kube, check_quota=False)
    # an executor as Spark's driver creates it: labelled with the app ID and spark-role=executor
    [app] = manage.status(kube, str(fits))
    kube.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "fits-exec-1", "labels": {"spark-app-selector": app.app_id, "spark-role": "executor"}},
            "spec": {
                "nodeSelector": {"type": "kwok"},
                "containers": [{"name": "spark-kubernetes-executor", "image": "spark:test"}],
            },
        },
        namespace=spark_namespace,
    )
    deadline = time.monotonic() + 60
    while True:
        [greedy_app] = manage.status(kube, str(sid))
        [fits_app] = manage.status(kube, str(fits))
        if (
            greedy_app.reason and fits_app.phase == "Running" and fits_app.executors_running == 1
        ) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert greedy_app.phase == "Pending"
    assert greedy_app.reason.startswith("Unschedulable: 0/")
    assert "Insufficient nec.com/ve" in greedy_app.reason
    assert fits_app.phase == "Running" and fits_app.node in cluster.nodes
    assert (fits_app.executors, fits_app.executors_running) == (1, 1)
    assert greedy_app.executors == 0  # one app's status lists only that app's executors
    # a glob counts every app's executors from one list of the namespace's, per app ID
    counts = {a.app_name: (a.executors, a.executors_running) for a in manage.status(kube, f"{spark_namespace}:*")}
    assert counts["fits"] == (1, 1) and counts["greedy"] == (0, 0)


def test_logs_of_one_app_reach_the_api(
    kube: Kube, kubeconfig: Path, spark_namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """kwok serves no container logs: the API server cannot reach a kubelet for them (a 5xx Status), which
    must come back as a clear "unavailable" error (4) that names the pod (the log text itself is checked
    on the real node, in the end-to-end test)."""
    monkeypatch.setenv("SPARK_USER", SPARK_USER)
    sid = submit(_request(kube, spark_namespace, "logged"), kube=kube, check_quota=False)
    code, _, error = run_cli(["spark", "logs", str(sid), "--kubeconfig", str(kubeconfig)])
    assert isinstance(error, KubeaccelError), error
    # the apiserver answers 500 (a kwok node has no address to fetch logs from): the door types that unavailable
    assert code == 4 and error.retryable
    assert f"cannot get logs of pod {sid.pod} in namespace {spark_namespace!r}" in error.message
