"""Two `kubeaccel operator run --leader-elect` processes: one reconciles; SIGKILL it and the other takes over
within 14 s (a 12 s Lease renewed every 2 s), with no app submitted twice.
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
ESTABLISHED = "jsonpath={.status.conditions[?(@.type=='Established')].status}"
FAILOVER_S = 14.0


def _start(kubeconfig: Path, name: str, lease_ns: str, apps_ns: str) -> subprocess.Popen[bytes]:
    code = "import sys; from kubeaccel.cli import main; main(sys.argv[1:])"
    args = ["operator", "run", "-n", apps_ns, "--leader-elect", "--lease-namespace", lease_ns,
            "--listen", "127.0.0.1:0", "--kubeconfig", str(kubeconfig)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "POD_NAME": name}
    return subprocess.Popen([sys.executable, "-c", code, *args], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip


def _apply_apps(cluster: LocalCluster, namespace: str, names: list[str]) -> None:
    documents = []
    for name in names:
        document = load(SPARK_PI)
        document["metadata"]["name"] = name
        on_kwok(document)
        documents.append(yaml.safe_dump(document))
    cluster.apply("---\n".join(documents), namespace)


def _submitted(cluster: LocalCluster, namespace: str, names: list[str]) -> bool:
    items = json.loads(cluster.kubectl("get", "sparkapplications", "-n", namespace, "-o", "json").stdout)["items"]
    states = {i["metadata"]["name"]: (i.get("status") or {}).get("applicationState", {}).get("state") for i in items}
    return all(states.get(n) in ("SUBMITTED", "RUNNING") for n in names)


def test_sigkilled_leader_is_replaced_without_a_double_submit(cluster: LocalCluster) -> None:
    cluster.apply(crds.crds_yaml())
    for crd in crds.all_crds():
        name = crd["metadata"]["name"]
        wait_for(name, lambda n=name: cluster.kubectl("get", "crd", n, "-o", ESTABLISHED).stdout == "True")
    lease_ns = cluster.create_namespace("lease")
    apps_ns = cluster.create_namespace("ha")
    cluster.kubectl("create", "serviceaccount", "spark", "-n", apps_ns)
    processes = {name: _start(cluster.kubeconfig, name, lease_ns, apps_ns) for name in ("a", "b")}
    try:
        holder = ""

        def leader() -> str:
            out = cluster.kubectl("get", "lease", "kubeaccel-operator", "-n", lease_ns, "-o",
                                  "jsonpath={.spec.holderIdentity}", check=False).stdout  # fmt: skip
            return out.split("_", 1)[0]

        wait_for("a leader", lambda: leader() in processes, timeout=30)
        holder = leader()
        first = [f"before-{i}" for i in range(5)]
        _apply_apps(cluster, apps_ns, first)
        wait_for("the first apps submitted", lambda: _submitted(cluster, apps_ns, first), timeout=60)

        processes[holder].send_signal(signal.SIGKILL)
        processes[holder].wait(10)
        killed_at = time.monotonic()
        second = [f"after-{i}" for i in range(5)]
        _apply_apps(cluster, apps_ns, second)
        wait_for("the standby submits", lambda: _submitted(cluster, apps_ns, second), timeout=60, interval=0.2)
        failover = time.monotonic() - killed_at
        assert failover <= FAILOVER_S + 3, f"failover took {failover:.1f} s"  # + the submissions themselves
        standby = next(n for n in processes if n != holder)
        assert leader() == standby

        items = json.loads(cluster.kubectl("get", "sparkapplications", "-n", apps_ns, "-o", "json").stdout)["items"]
        assert all(i["status"]["submissionAttempts"] == 1 for i in items), "an app was submitted twice"
        drivers = cluster.kubectl("get", "pods", "-n", apps_ns, "-l", "spark-role=driver", "-o", "name").stdout.split()
        assert len(drivers) == 10
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                process.wait(20)
        cluster.kubectl("delete", "namespace", apps_ns, "--wait=false", check=False)
