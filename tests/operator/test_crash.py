"""A controller SIGKILLed while it submits: the next one leaves exactly one driver per app and no orphaned
ConfigMap or Service (the submission is written down before it is made; names follow from its ID).

Runs `kubeaccel operator run` as a real process on the real control plane (kwok nodes), kills it with
SIGKILL once some apps are part-way, starts another, and checks every app's objects.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fixtures.cluster import LocalCluster, wait_for
from fixtures.sparkapps import SPARK_PI, load, on_kwok

from kubeaccel.operator import crds

pytestmark = [pytest.mark.cluster, pytest.mark.slow]
APPS = 40
ESTABLISHED = "jsonpath={.status.conditions[?(@.type=='Established')].status}"


def _start(kubeconfig: Path, namespace: str) -> subprocess.Popen[bytes]:
    code = "import sys; from kubeaccel.cli import main; main(sys.argv[1:])"
    args = [
        "operator",
        "run",
        "-n",
        namespace,
        "--listen",
        "127.0.0.1:0",
        "--workers",
        "4",
        "--kubeconfig",
        str(kubeconfig),
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )


def _apps(cluster: LocalCluster, namespace: str) -> list[dict[str, object]]:
    out = cluster.kubectl("get", "sparkapplications", "-n", namespace, "-o", "json").stdout
    items: list[dict[str, object]] = json.loads(out)["items"]
    return items


def _state(item: dict[str, object]) -> str:
    status = item.get("status") or {}
    assert isinstance(status, dict)
    return str((status.get("applicationState") or {}).get("state", ""))


def test_sigkill_mid_submit_leaves_no_duplicate_and_no_orphan(cluster: LocalCluster) -> None:
    cluster.apply(crds.crds_yaml())
    for crd in crds.all_crds():
        name = crd["metadata"]["name"]
        wait_for(name, lambda n=name: cluster.kubectl("get", "crd", n, "-o", ESTABLISHED).stdout == "True")
    namespace = cluster.create_namespace("crash")
    cluster.kubectl("create", "serviceaccount", "spark", "-n", namespace)
    documents = []
    for index in range(APPS):
        document = load(SPARK_PI)
        document["metadata"]["name"] = f"app-{index:03d}"
        on_kwok(document)
        documents.append(yaml.safe_dump(document))
    first = _start(cluster.kubeconfig, namespace)
    try:
        time.sleep(1.5)  # the process is up and watching
        cluster.apply("---\n".join(documents), namespace)
        wait_for(
            "some submissions under way",
            lambda: sum(1 for a in _apps(cluster, namespace) if (a.get("status") or {}).get("submissionID")) >= 3,  # type: ignore[union-attr]
            timeout=60,
            interval=0.02,
        )
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(10)
    states = [_state(a) for a in _apps(cluster, namespace)]
    assert states.count("RUNNING") + states.count("SUBMITTED") < APPS, "killed too late to test anything"

    second = _start(cluster.kubeconfig, namespace)
    try:
        wait_for(
            "every app submitted",
            lambda: all(_state(a) in ("SUBMITTED", "RUNNING") for a in _apps(cluster, namespace)),
            timeout=120,
            interval=0.5,
        )
    finally:
        second.send_signal(signal.SIGTERM)
        _, err = second.communicate(timeout=20)
    assert second.returncode == 0, err.decode()[-2000:]

    pods = json.loads(cluster.kubectl("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]
    drivers = [p for p in pods if p["metadata"]["labels"].get("spark-role") == "driver"]
    assert len(drivers) == APPS
    by_uid = {p["metadata"]["uid"]: p for p in drivers}
    submissions = {a["metadata"]["name"]: a["status"]["submissionID"] for a in _apps(cluster, namespace)}  # type: ignore[index]
    for driver in drivers:
        app_name = driver["metadata"]["labels"]["sparkoperator.k8s.io/app-name"]
        assert driver["metadata"]["labels"]["sparkoperator.k8s.io/submission-id"] == submissions[app_name]
    for kind in ("configmaps", "services"):
        items = json.loads(cluster.kubectl("get", kind, "-n", namespace, "-o", "json").stdout)["items"]
        ours = [i for i in items if i["metadata"]["name"] != "kube-root-ca.crt"]
        for item in ours:
            owners = item["metadata"].get("ownerReferences") or []
            assert owners and owners[0]["uid"] in by_uid, f"orphaned {kind[:-1]} {item['metadata']['name']}"
        expected = APPS * (2 if kind == "configmaps" else 1)  # the conf and the executor template ConfigMaps
        assert len(ours) == expected, [i["metadata"]["name"] for i in ours]
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
