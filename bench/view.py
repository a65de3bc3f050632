"""`kubeaccel devices` and `kubeaccel ui` over a big simulated cluster, beside `kubectl get pods -A -o wide`.

    .venv/bin/python bench/view.py [--nodes 100] [--devices 8] [--runs 5] [--state-dir DIR]

Starts its own local cluster (`kubeaccel cluster up`, kwok nodes) unless --kubeconfig names one, then:
one plugin pod per node (a kwok pod whose IP is this host's, so the API server's pod proxy really
fetches its metrics from an HTTP server here), `devices` devices per node, and one running pod holding
each device (100 x 8 = 800 pods by default). Measured, in the same run:
  1. `kubeaccel devices` as a cold CLI process (median of --runs) vs `kubectl get pods -A -o wide`;
  2. the page's first render: headless Chromium opening `kubeaccel ui` (already up) until every
     device cell is drawn;
  3. a device turning unhealthy: from the metrics change to its cell changing on the open page;
  4. watch-driven updates, with `kubeaccel ui` as its own process (watches on, --ui-interval): an
     executor pod created until its row shows on the open page (median of 5), and the server's CPU
     (utime+stime per wall second, from /proc) idle and while pods change (annotations, back to back).
Goals (issue 20): devices <= 2 s and <= 3x kubectl; first render <= 1 s; unhealthy shown <= 2 s.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from kubeaccel.cluster.binaries import cache_bin_dir
from kubeaccel.kube.client import Kube
from kubeaccel.view.cli import page_reader
from kubeaccel.view.server import UiServer

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(1, str(REPO / "tests"))


def _test_helper(name: str) -> Any:
    """tests/view/NAME.py (this script's own name, view, hides the tests' package of that name)."""
    spec = importlib.util.spec_from_file_location(f"view_{name}", REPO / "tests" / "view" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Browser = _test_helper("cdp").Browser
_cluster_helpers = _test_helper("cluster")
MetricsServer, host_ip = _cluster_helpers.MetricsServer, _cluster_helpers.host_ip

KUBEACCEL = [sys.executable, "-m", "kubeaccel.cli"]
NAMESPACE = "bench-view"
RESOURCE = "bench.example.com/acc"


def kubectl_binary() -> str:
    built = cache_bin_dir() / "kubectl"
    return str(built) if built.exists() else (shutil.which("kubectl") or "kubectl")


def kubectl(kubeconfig: Path, *args: str, stdin: str | None = None) -> str:
    done = subprocess.run([kubectl_binary(), f"--kubeconfig={kubeconfig}", *args], input=stdin, capture_output=True,
                          text=True, check=False, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"kubectl {' '.join(args[:3])} failed: {done.stderr[-2000:]}")
    return done.stdout


def body(node: str, devices: int, unhealthy: set[str]) -> bytes:
    lines = []
    for i in range(devices):
        device = f"{node}-acc{i}"
        health = "Unhealthy" if device in unhealthy else "Healthy"
        lines.append(f'kubeaccel_device_health{{resource="{RESOURCE}",device="{device}",index="{i}",numa="{i % 2}",'
                     f'health="{health}"}} 1')
        lines.append(f'kubeaccel_device_allocated{{resource="{RESOURCE}",device="{device}",namespace="{NAMESPACE}",'
                     f'pod="hold-{node}-{i}",container="c"}} 1')
    return ("\n".join(lines) + "\n").encode()


def populate(kubeconfig: Path, nodes: list[str], devices: int) -> dict[str, Any]:
    """Per node: an HTTP server with its metrics, a plugin pod pointing at it, and `devices` holder pods."""
    servers = {node: MetricsServer(body(node, devices, set())) for node in nodes}
    kubectl(kubeconfig, "create", "namespace", NAMESPACE)
    items = []
    for node in nodes:
        items.append({"apiVersion": "v1", "kind": "Pod", "metadata": {
            "name": f"plugin-{node}", "namespace": NAMESPACE,
            "labels": {"app.kubernetes.io/component": "device-plugin"}},
            "spec": {"nodeName": node, "containers": [{"name": "p", "image": "plugin", "ports": [
                {"name": "metrics", "containerPort": servers[node].port}]}]}})
        for i in range(devices):
            items.append({"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": f"hold-{node}-{i}", "namespace": NAMESPACE,
                "labels": {"spark-app-selector": f"spark-{node}", "spark-role": "executor"}},
                "spec": {"nodeName": node, "containers": [{"name": "c", "image": "spark"}]}})
    kubectl(kubeconfig, "apply", "-f", "-", stdin=json.dumps({"apiVersion": "v1", "kind": "List", "items": items}))
    want = len(items)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        phases = kubectl(kubeconfig, "get", "pods", "-n", NAMESPACE, "-o", "jsonpath={.items[*].status.phase}")
        if phases.split().count("Running") == want:
            break
        time.sleep(2)
    else:
        raise SystemExit("the pods did not all run within 10 min")
    ip = host_ip()
    patch = json.dumps({"status": {"podIP": ip, "podIPs": [{"ip": ip}]}})
    for node in nodes:
        kubectl(kubeconfig, "patch", "pod", "-n", NAMESPACE, f"plugin-{node}", "--subresource=status",
                "--type=merge", "-p", patch)
    return servers


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def watch_section(kubeconfig: Path, env: dict[str, str], nodes: list[str], interval: float,
                  window: float = 15.0) -> dict[str, Any]:
    """`kubeaccel ui` as a process: pod-event latency on the page and the server's CPU, idle and under churn."""
    import threading
    import urllib.request

    port = free_port()
    ui = subprocess.Popen([*KUBEACCEL, "ui", "--port", str(port), "--interval", str(interval)], env=env,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/"
    browser = Browser()
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(url + "api/view", timeout=5).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("kubeaccel ui did not answer within 60 s") from None
                time.sleep(0.2)
        browser.goto(url)
        browser.wait("document.querySelectorAll('td.device').length > 0", timeout=30)
        time.sleep(3)  # the watches' initial events have passed
        before, t0 = cpu_seconds(ui.pid), time.monotonic()
        time.sleep(window)
        idle = (cpu_seconds(ui.pid) - before) / (time.monotonic() - t0)
        shown = []
        for i in range(5):
            name = f"bench-exec-{i}"
            manifest = {"apiVersion": "v1", "kind": "Pod", "metadata": {
                "name": name, "namespace": NAMESPACE,
                "labels": {"spark-app-selector": "spark-bench-watch", "spark-role": "executor"}},
                "spec": {"nodeName": nodes[0], "containers": [{"name": "c", "image": "spark"}]}}
            subprocess.run([kubectl_binary(), f"--kubeconfig={kubeconfig}", "apply", "-f", "-"],
                           input=json.dumps(manifest), capture_output=True, text=True, check=True)
            created = time.monotonic()  # kubectl has returned: the API server has the pod
            browser.wait(f"document.querySelector('tr[data-pod=\"{name}\"]') !== null", timeout=30)
            shown.append(time.monotonic() - created)
            time.sleep(1.5)
        stop = threading.Event()
        events = [0]

        def churn() -> None:
            while not stop.is_set():
                pod = f"hold-{nodes[events[0] % len(nodes)]}-0"
                subprocess.run([kubectl_binary(), f"--kubeconfig={kubeconfig}", "annotate", "--overwrite", "pod",
                                "-n", NAMESPACE, pod, f"bench/churn={events[0]}"], capture_output=True, check=False)
                events[0] += 1

        churner = threading.Thread(target=churn, daemon=True)
        before, t0 = cpu_seconds(ui.pid), time.monotonic()
        churner.start()
        time.sleep(window)
        busy = (cpu_seconds(ui.pid) - before) / (time.monotonic() - t0)
        stop.set()
        churner.join()
        return {"ui_interval_s": interval, "pod_event_shown_s": round(statistics.median(shown), 3),
                "pod_event_shown_max_s": round(max(shown), 3),
                "ui_cpu_idle": round(idle, 3), "ui_cpu_churn": round(busy, 3),
                "churn_events_per_s": round(events[0] / window, 1)}
    finally:
        browser.close()
        ui.terminate()
        ui.wait(timeout=30)


def timed(command: list[str], env: dict[str, str], ok: tuple[int, ...] = (0,)) -> float:
    start = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    took = time.perf_counter() - start
    if done.returncode not in ok:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}): {done.stderr[-2000:]}")
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", type=Path, help="an existing cluster (default: start one)")
    parser.add_argument("--state-dir", type=Path, help="where the started cluster lives (default: a temp dir)")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ui-interval", type=float, default=1.0, help="kubeaccel ui --interval for part 4")
    parser.add_argument("--watch-only", action="store_true", help="measure only part 4")
    args = parser.parse_args()

    state_dir = None
    if args.kubeconfig is None:
        from kubeaccel.cluster.lifecycle import down, up
        from kubeaccel.cluster.spec import ClusterSpec

        state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="bench-view-"))
        started = time.monotonic()
        info = up(ClusterSpec(state_dir=state_dir, nodes=args.nodes,
                              node_resources={"cpu": "32", "memory": "128Gi", "pods": "110",
                                              RESOURCE: str(args.devices)}))
        print(f"cluster up with {args.nodes} kwok nodes in {time.monotonic() - started:.0f} s", file=sys.stderr)
        kubeconfig, nodes = info.kubeconfig, list(info.nodes)
    else:
        kubeconfig = args.kubeconfig
        nodes = kubectl(kubeconfig, "get", "nodes", "-l", "type=kwok", "-o",
                        "jsonpath={.items[*].metadata.name}").split()[: args.nodes]
    servers = {}
    try:
        servers = populate(kubeconfig, nodes, args.devices)
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "PYTHONPATH": str(REPO / "src")}
        devices_cmd = [*KUBEACCEL, "devices", "-o", "json"]
        check = json.loads(subprocess.run(devices_cmd, env=env, capture_output=True, text=True, check=False).stdout)
        held = sum(1 for d in check["devices"] if d["pod"].startswith("hold-"))
        print(f"devices listed: {len(check['devices'])}, held: {held}, unavailable: {len(check['unavailable'])}",
              file=sys.stderr)
        if args.watch_only:
            print(json.dumps(watch_section(kubeconfig, env, nodes, args.ui_interval), indent=2))
            return
        ours, theirs = [], []
        for _ in range(args.runs):  # interleaved, so both see the same load
            ours.append(timed(devices_cmd, env, ok=(0, 7)))
            theirs.append(timed([kubectl_binary(), "get", "pods", "-A", "-o", "wide"], env))
        kube = Kube.connect(kubeconfig=kubeconfig)
        ui = UiServer(page_reader(kube), port=0, interval=1.0)
        ui.start()
        browser = Browser()
        try:
            cells = args.devices * len(nodes)
            started = time.monotonic()
            browser.goto(ui.url)
            first = browser.wait(f"document.querySelectorAll('td.device').length >= {cells}", timeout=30)
            first = time.monotonic() - started
            node = nodes[len(nodes) // 2]
            servers[node].body = body(node, args.devices, {f"{node}-acc3"})
            changed = time.monotonic()
            browser.wait(f"document.querySelector('td.device[data-device=\"{node}-acc3\"]')?.dataset.health"
                         " === 'Unhealthy'", timeout=30)
            unhealthy = time.monotonic() - changed
        finally:
            browser.close()
            ui.stop()
            kube.close()
        median_ours, median_theirs = statistics.median(ours), statistics.median(theirs)
        watched = watch_section(kubeconfig, env, nodes, args.ui_interval)
        print(json.dumps({**watched,
            "nodes": len(nodes), "devices_per_node": args.devices, "held_pods": held,
            "kubeaccel_devices_s": round(median_ours, 3), "kubectl_get_pods_wide_s": round(median_theirs, 3),
            "ratio": round(median_ours / median_theirs, 2),
            "page_first_render_s": round(first, 3), "unhealthy_shown_s": round(unhealthy, 3),
            "runs": args.runs,
        }, indent=2))
    finally:
        for server in servers.values():
            server.close()
        if state_dir is not None:
            from kubeaccel.cluster.lifecycle import down

            down(state_dir)
            if args.state_dir is None:
                shutil.rmtree(state_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
