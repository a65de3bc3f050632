"""DRA benchmark: the real scheduler placing pods through DRA vs the device-plugin path, same run, same cluster.

    .venv/bin/python bench/dra.py [--nodes 100] [--devices 8] [--pods 800] [--calls 400]
    .venv/bin/python bench/dra.py --node [...]   # the node side alone: see bench/dra_node.py

A local control plane (Kubernetes 1.37) with ``--nodes`` kwok nodes. Each node gets
``--devices`` simulated devices twice: as a ResourceSlice of kubeaccel's DRA driver (built by
``kubeaccel.dra.model`` exactly as the daemon publishes them) and as node capacity
``example.com/dp`` (what the kubelet reports for a device plugin). Then, in alternating blocks
of 100 so a busy host slows both alike:

* ``--pods`` pods with a claim (a ResourceClaimTemplate asking one device of the DeviceClass);
* ``--pods`` pods with ``limits: {example.com/dp: 1}``.

A watch records when each pod is first seen bound; per path: throughput (pods / s from the first
create to the last bind) and pod-scheduled latency p50 / p99 (create returned → bind seen).
Then the DRA daemon runs for one node against the same API server and the kubelet's
NodePrepareResources / NodeUnprepareResources are timed over its unix socket (p50 / p99) for
claims the scheduler allocated there: a first prepare reads the claim from the API server and
writes its CDI spec and the checkpoint; the repeated one is answered from the checkpoint.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import yaml

from kubeaccel.cluster.lifecycle import down, up
from kubeaccel.cluster.spec import ClusterSpec
from kubeaccel.devices.backends.simulated import Config, create
from kubeaccel.devices.config import load_config
from kubeaccel.dra._generated import dra_v1_pb2 as pb
from kubeaccel.dra._generated import dra_v1_pb2_grpc as pb_grpc
from kubeaccel.dra.daemon import BackgroundDraDaemon, DraDaemon, KubeAccess, Options
from kubeaccel.dra.model import DEFAULT_DRIVER, Pool, device_class, device_class_name, resource_slice
from kubeaccel.kube import dra as kdra
from kubeaccel.kube.client import Kube
from kubeaccel.kube.client import load_config as kube_config

SIM = "example.com/sim"
DP = "example.com/dp"
BLOCK = 100


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


class BindWatch:
    """Watches pods in a namespace and records the monotonic time each is first seen with a node."""

    def __init__(self, kube: Kube, namespace: str) -> None:
        from lightkube.resources.core_v1 import Pod

        self.bound: dict[str, float] = {}
        self._kube, self._ns, self._pod = kube, namespace, Pod
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        for _, pod in self._kube.watch(self._pod, self._ns):
            if pod.spec and pod.spec.nodeName and pod.metadata.name not in self.bound:
                self.bound[pod.metadata.name] = time.monotonic()


def pod(name: str, *, claim: bool) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "c", "image": "busybox"}
    spec: dict[str, Any] = {"containers": [container], "tolerations": [{"operator": "Exists"}]}
    if claim:
        spec["resourceClaims"] = [{"name": "dev", "resourceClaimTemplateName": "one"}]
        container["resources"] = {"claims": [{"name": "dev"}]}
    else:
        container["resources"] = {"limits": {DP: "1"}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}


def schedule(kube: Kube, ns: str, pods: int) -> dict[str, dict[str, float]]:
    watch = BindWatch(kube, ns)
    created: dict[str, float] = {}
    first: dict[str, float] = {}
    pool = ThreadPoolExecutor(max_workers=16)

    def make(name: str, claim: bool) -> None:
        kube.create(pod(name, claim=claim), ns)
        created[name] = time.monotonic()

    for start in range(0, pods, BLOCK):
        for path in ("dra", "dp"):
            first.setdefault(path, time.monotonic())
            names = [f"{path}-{i}" for i in range(start, min(start + BLOCK, pods))]
            list(pool.map(lambda n, c=(path == "dra"): make(n, c), names))
    deadline = time.monotonic() + 600
    while len(watch.bound) < 2 * pods and time.monotonic() < deadline:
        time.sleep(0.2)
    out: dict[str, dict[str, float]] = {}
    for path in ("dra", "dp"):
        names = [n for n in created if n.startswith(f"{path}-")]
        lat = [watch.bound[n] - created[n] for n in names if n in watch.bound]
        last = max(watch.bound[n] for n in names if n in watch.bound)
        out[path] = {"bound": len(lat), "pods_per_s": len(lat) / (last - first[path]),
                     "p50_ms": percentile(lat, 50) * 1000, "p99_ms": percentile(lat, 99) * 1000}
    return out


def prepare_latency(kubeconfig: Path, ns: str, node: str, calls: int) -> dict[str, float]:
    from lightkube.resources.resource_v1 import ResourceClaim

    kube = Kube(kube_config(kubeconfig=kubeconfig))
    claims = [c for c in kube.list_raw(ResourceClaim, ns)
              if any(r["pool"].startswith(f"{node}/") for r in
                     (((c.get("status") or {}).get("allocation") or {}).get("devices") or {}).get("results") or [])]
    kube.close()
    base = Path(tempfile.mkdtemp(prefix="kbd-"))
    for sub in ("registry", "plugins", "state", "cdi"):
        (base / sub).mkdir()
    config = base / "config.yaml"
    config.write_text(yaml.safe_dump({"resources": [{"name": SIM, "backend": "simulated", "count": 8,
                                                       "numaNodes": 2}]}))
    options = Options(node=node, registry_dir=base / "registry", plugins_dir=base / "plugins",
                      state_dir=base / "state", cdi_dir=base / "cdi", publish=False)
    runner = BackgroundDraDaemon(DraDaemon(lambda: load_config(config), options, access=KubeAccess(kubeconfig)))
    runner.start()
    timings: dict[str, list[float]] = {"prepare (first)": [], "prepare (repeat)": [], "unprepare": []}
    try:
        with grpc.insecure_channel(f"unix://{options.endpoint}") as channel:
            stub = pb_grpc.DRAPluginStub(channel)
            refs = [pb.Claim(namespace=c["metadata"]["namespace"], name=c["metadata"]["name"],
                             uid=c["metadata"]["uid"]) for c in claims]
            if not refs:
                raise SystemExit(f"no claim was allocated on {node}")
            for i in range(calls):
                ref = refs[i % len(refs)]
                for label, call in (("prepare (first)", stub.NodePrepareResources),
                                    ("prepare (repeat)", stub.NodePrepareResources),
                                    ("unprepare", stub.NodeUnprepareResources)):
                    request = (pb.NodePrepareResourcesRequest if "prepare (" in label else
                               pb.NodeUnprepareResourcesRequest)(claims=[ref])
                    t0 = time.perf_counter()
                    answer = call(request, timeout=10)
                    timings[label].append(time.perf_counter() - t0)
                    assert not answer.claims[ref.uid].error, answer.claims[ref.uid].error
    finally:
        runner.stop()
        shutil.rmtree(base, ignore_errors=True)
    return {f"{k} p50_ms": percentile(v, 50) * 1000 for k, v in timings.items()} | {
        f"{k} p99_ms": percentile(v, 99) * 1000 for k, v in timings.items()}


def add_nodes(kube: Kube, count: int, resources: dict[str, str]) -> list[str]:
    """kwok nodes created Ready: the scheduler only needs them to exist (kwok runs the pods bound to them)."""
    from kubeaccel.cluster.kwok import node_manifest

    names = [f"kwok-node-{i}" for i in range(count)]

    def one(name: str) -> None:
        manifest = node_manifest(name, resources)
        manifest["status"]["conditions"] = [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]
        kube.create(manifest)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(one, names))
    return names


def main() -> None:
    if sys.argv[1:2] == ["--node"]:  # the node-side benchmark needs no cluster
        from dra_node import main as node_main

        node_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--pods", type=int, default=800)
    parser.add_argument("--calls", type=int, default=400)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="kubeaccel-bench-dra-"))
    resources = {"cpu": "64", "memory": "256Gi", "pods": "110", DP: str(args.devices)}
    t0 = time.monotonic()
    info = up(ClusterSpec(state_dir=state, nodes=0, node_resources=resources))
    kube = Kube(kube_config(kubeconfig=info.kubeconfig))
    try:
        nodes = add_nodes(kube, args.nodes, resources)
        print(f"cluster: {args.nodes} kwok nodes up in {time.monotonic() - t0:.1f} s")
        kdra.apply_device_class(kube, device_class(DEFAULT_DRIVER, SIM, extended_resource=False))
        devices = create(SIM, Config(count=args.devices, numaNodes=2)).scan()
        t0 = time.monotonic()
        with ThreadPoolExecutor(max_workers=16) as pool:
            list(pool.map(lambda n: kdra.apply_slice(kube, resource_slice(n, DEFAULT_DRIVER, Pool.of(n, SIM, devices),
                                                                           1)), nodes))
        print(f"published {args.nodes} ResourceSlices x {args.devices} devices in {time.monotonic() - t0:.1f} s")
        ns = f"bench-{uuid.uuid4().hex[:6]}"
        kube.create({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        kube.create({"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                     "metadata": {"name": "one"},
                     "spec": {"spec": {"devices": {"requests": [{"name": "dev", "exactly": {
                         "deviceClassName": device_class_name(SIM)}}]}}}}, ns)
        results = schedule(kube, ns, args.pods)
        for path, label in (("dra", "DRA claims"), ("dp", "extended resource (device plugin)")):
            r = results[path]
            print(f"{label:36s} {r['bound']:4.0f} bound  {r['pods_per_s']:7.1f} pods/s  "
                  f"p50 {r['p50_ms']:7.1f} ms  p99 {r['p99_ms']:7.1f} ms")
        print(f"DRA / device plugin: throughput x{results['dra']['pods_per_s'] / results['dp']['pods_per_s']:.2f}, "
              f"p99 x{results['dra']['p99_ms'] / results['dp']['p99_ms']:.2f}")
        latency = prepare_latency(info.kubeconfig, ns, nodes[0], args.calls)
        for key, value in latency.items():
            print(f"{key:28s} {value:7.2f} ms")
        print(json.dumps({"scheduling": results, "prepare": latency}))
    finally:
        kube.close()
        down(state)
        shutil.rmtree(state, ignore_errors=True)


if __name__ == "__main__":
    main()
