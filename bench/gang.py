"""Gangs against the deadlock: many Spark apps submitted at once to a cluster with room for a few.

30 apps x (1 driver + 8 executors, 1 nec.com/ve each) are submitted together (`kubeaccel.spark.submit`)
to 10 kwok nodes x 8 VEs (room for 8 whole apps at a time). A stand-in driver creates each app's
executors from the executor pod template its submit produced, one at a time per app (interleaved across
apps, as drivers starting together do). An app whose 9 pods are all placed runs for --run-seconds, then
ends (its pods are deleted, as kwok completes pods after a fixed time). Without gangs and with the native
gang (`spark.kubeaccel.gang.enabled`) and with a Kueue queue (`spark.kubeaccel.queue`, a ClusterQueue
holding the cluster's 80 VEs; Kueue 0.17 from scripts/bootstrap.d/45-kueue.sh, run as in the tests), in
the same run, on one fresh local cluster:

* apps that ever held devices while not all their pods were placed, counted three ways: executors
  partly placed in any sample (a gang's pods are bound one by one within a fraction of a second, which
  a 0.2 s sample can catch), partly placed for over 1 s (the gang's promise: 0), and any device held,
  the driver's included (the driver is placed before it creates its executors, so every app counts);
* time until all apps finished (or "deadlocked" after --timeout);
* device-seconds held by apps while some of their executors were placed and some not.

    PYTHONPATH=src .venv/bin/python bench/gang.py [--apps 30] [--nodes 10] [--run-seconds 5] [--timeout 180]
        [--modes plain,gang,kueue]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fixtures.cluster import LocalCluster
from fixtures.kueue import running_kueue
from fixtures.standin import executor_pod, template_text
from lightkube.resources.core_v1 import Pod

from kubeaccel.cluster.lifecycle import down, up
from kubeaccel.cluster.spec import ClusterSpec
from kubeaccel.kube.client import Kube
from kubeaccel.kube.rest import CONFIGMAPS, PODS
from kubeaccel.kube.tenancy import create_tenant
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.submit import submit

VE = "nec.com/ve"
EXECUTORS = 8


@dataclass
class App:
    driver: str
    app_id: str = ""
    template: str | None = None
    created: int = 0
    done: bool = False
    all_placed_at: float | None = None
    partial_executors: bool = False  # ever: some executors placed, some not
    any_device_incomplete: bool = False  # ever: a device held (driver's too) while not all pods placed
    wasted: float = 0.0  # device-seconds held while executors were partly placed
    partial_since: float | None = None
    longest_partial: float = 0.0  # seconds: the longest stretch with executors partly placed
    last: float = field(default_factory=time.monotonic)


def _conf(namespace: str, mode: str) -> dict[str, str]:
    conf = {
        "spark.kubernetes.namespace": namespace,
        "spark.kubernetes.container.image": "spark:bench",
        "spark.kubernetes.node.selector.type": "kwok",
        "spark.executor.instances": str(EXECUTORS),
        "spark.driver.cores": "1", "spark.executor.cores": "1",
        "spark.driver.memory": "512m", "spark.executor.memory": "512m",
    }
    for role in ("driver", "executor"):
        conf |= {f"spark.{role}.resource.ve.amount": "1", f"spark.{role}.resource.ve.vendor": "nec.com",
                 f"spark.{role}.resource.ve.discoveryScript": "/opt/kubeaccel/discover"}
    if mode == "gang":
        conf["spark.kubeaccel.gang.enabled"] = "true"
    elif mode == "kueue":
        conf["spark.kubeaccel.queue"] = "batch"
    return conf


def _queue(cluster: LocalCluster, namespace: str, devices: int) -> None:
    """A ClusterQueue holding the whole cluster's VEs, and LocalQueue `batch` in the namespace."""
    objects = [
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ResourceFlavor", "metadata": {"name": "bench"}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "ClusterQueue", "metadata": {"name": "bench"},
         "spec": {"namespaceSelector": {}, "resourceGroups": [{
             "coveredResources": ["cpu", "memory", VE],
             "flavors": [{"name": "bench", "resources": [
                 {"name": "cpu", "nominalQuota": "10000"}, {"name": "memory", "nominalQuota": "100Ti"},
                 {"name": VE, "nominalQuota": str(devices)}]}]}]}},
        {"apiVersion": "kueue.x-k8s.io/v1beta2", "kind": "LocalQueue",
         "metadata": {"name": "batch", "namespace": namespace}, "spec": {"clusterQueue": "bench"}},
    ]
    cluster.apply(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}))


def _placed(pod: dict[str, Any]) -> bool:
    return bool((pod.get("spec") or {}).get("nodeName"))


def run(cluster: LocalCluster, kube: Kube, apps_wanted: int, mode: str, run_seconds: float,
        timeout: float) -> dict[str, Any]:
    namespace = f"bench-{mode}-{int(time.time())}"
    server = cluster.server
    create_tenant(kube, namespace, {})
    kube.apply({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": namespace}},
               namespace=namespace)
    if mode == "kueue":
        _queue(cluster, namespace, 8 * len(cluster.nodes))
    start = time.monotonic()
    apps: dict[str, App] = {}
    for index in range(apps_wanted):
        request = SubmitRequest("local:///opt/app.py", master=f"k8s://{server}", name=f"app{index}",
                                conf=_conf(namespace, mode))
        sid = submit(request, kube=kube, check_quota=False)
        apps[sid.pod] = App(sid.pod)
    submitted = time.monotonic() - start
    while time.monotonic() - start < timeout and not all(a.done for a in apps.values()):
        now = time.monotonic()
        pods = kube.list_raw(PODS, namespace)
        drivers = {p["metadata"]["name"]: p for p in pods if p["metadata"]["labels"].get("spark-role") == "driver"}
        by_app: dict[str, list[dict[str, Any]]] = {}
        for pod in pods:
            if pod["metadata"]["labels"].get("spark-role") == "executor":
                by_app.setdefault(pod["metadata"]["labels"]["spark-app-selector"], []).append(pod)
        config_maps: list[dict[str, Any]] | None = None
        for app in apps.values():
            if app.done:
                continue
            driver = drivers.get(app.driver)
            if driver is None:
                continue
            app.app_id = driver["metadata"]["labels"]["spark-app-selector"]
            executors = by_app.get(app.app_id, [])
            placed_executors = sum(1 for p in executors if _placed(p))
            driver_placed = _placed(driver)
            held = placed_executors + (1 if driver_placed else 0)
            complete = driver_placed and placed_executors == EXECUTORS
            if held and not complete:
                app.any_device_incomplete = True
            if 0 < placed_executors < EXECUTORS:
                app.partial_executors = True
                app.wasted += held * (now - app.last)
                app.partial_since = app.partial_since if app.partial_since is not None else app.last
                app.longest_partial = max(app.longest_partial, now - app.partial_since)
            else:
                app.partial_since = None
            app.last = now
            # the stand-in driver: once running, create the next executor from the template
            if (driver.get("status") or {}).get("phase") == "Running" and app.created < EXECUTORS:
                if app.template is None:
                    config_maps = config_maps if config_maps is not None else kube.list_raw(CONFIGMAPS, namespace)
                    app.template = template_text(config_maps, app.driver)
                app.created += 1
                kube.create(executor_pod(app.template, driver, app.created, {VE: "1"}), namespace=namespace)
            if complete and app.all_placed_at is None:
                app.all_placed_at = now
            if app.all_placed_at is not None and now - app.all_placed_at >= run_seconds:
                for pod in [driver, *executors]:
                    kube.delete(PODS, pod["metadata"]["name"], namespace, grace_period=0, missing_ok=True)
                app.done = True
        time.sleep(0.2)
    elapsed = time.monotonic() - start
    finished = sum(a.done for a in apps.values())
    # the next run starts on an empty cluster: what a deadlocked run still holds goes
    left = [p["metadata"]["name"] for p in kube.list_raw(PODS, namespace)]
    kube.delete_many(Pod, [(namespace, name) for name in left], grace_period=0)
    while kube.list_raw(PODS, namespace):
        time.sleep(0.5)
    return {
        "mode": {"plain": "no gang", "gang": "native gang", "kueue": "kueue queue"}[mode],
        "submit_s": round(submitted, 1),
        "finished": f"{finished}/{apps_wanted}",
        "all_finished_s": round(elapsed, 1) if finished == apps_wanted else f"deadlocked (> {timeout:.0f} s)",
        "apps_executors_partly_placed": sum(a.partial_executors for a in apps.values()),
        "apps_partly_placed_over_1s": sum(a.longest_partial > 1.0 for a in apps.values()),
        "longest_partial_s": round(max(a.longest_partial for a in apps.values()), 2),
        "apps_any_device_while_incomplete": sum(a.any_device_incomplete for a in apps.values()),
        "wasted_device_s": round(sum(a.wasted for a in apps.values()), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--apps", type=int, default=30)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--run-seconds", type=float, default=5.0)
    parser.add_argument("--timeout", type=float, default=180.0)
    parser.add_argument("--modes", default="plain,gang,kueue", help="comma-separated: plain, gang, kueue")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="kubeaccel-bench-gang-"))
    resources = {"cpu": "64", "memory": "256Gi", "pods": "110", VE: "8"}
    try:
        info = up(ClusterSpec(state_dir=state, nodes=args.nodes, node_resources=resources))
        kube = Kube.connect(kubeconfig=info.kubeconfig)
        cluster = LocalCluster(info.kubeconfig, info.server, info.state_dir, list(info.nodes))
        print(f"{args.apps} apps x (1 driver + {EXECUTORS} executors, 1 {VE} each) on {args.nodes} kwok nodes x 8")
        for mode in args.modes.split(","):
            if mode == "kueue":
                with running_kueue(cluster):
                    print(run(cluster, kube, args.apps, mode, args.run_seconds, args.timeout), flush=True)
            else:
                print(run(cluster, kube, args.apps, mode, args.run_seconds, args.timeout), flush=True)
        kube.close()
    finally:
        down(state)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
