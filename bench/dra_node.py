"""DRA node-side benchmark: the driver as the kubelet sees it, with many claims checkpointed.

    .venv/bin/python bench/dra.py --node [--levels 10,1000,5000] [--calls 200] [--idle 30] [--restarts 5]
        [--peer 'CMD {registry} {plugins} {state} {cdi} {kubeconfig} {driver} {node} {pool}']

Each driver runs as its own process on its own temp kubelet directories (registry, plugins, state,
CDI) with 8 simulated devices, and reads ResourceClaims from a minimal API server in this process
(plain HTTP, ``GET .../resourceclaims/NAME`` only; a claim ``cN`` is allocated device ``sim-(N % 8)``),
through a kubeconfig like any driver would. This process plays the kubelet over the driver's unix
socket (sync gRPC client, the kubelet's ``v1`` protos). For kubeaccel the process is
``kubeaccel dra run --no-publish``. Measured per driver:

* prepare latency, one new claim per call, p50 / p99, with 10, 1,000 and 5,000 claims already
  prepared and checkpointed (each timed claim is unprepared again, also timed, so the level holds);
* idle CPU over ``--idle`` seconds with 5,000 claims checkpointed, as % of a core, and RSS;
* restart time with 5,000 claims: SIGTERM, start, until a checkpointed claim is answered again
  without an API read (interpreter start-up, checkpoint load, CDI restore, sockets), median of
  ``--restarts``.

``--baseline SRC`` runs kubeaccel a second time from another checkout's ``src`` (before / after).

``--peer`` adds another driver measured in the same run, interleaved level by level so a busy
host slows both alike: a command template filled with the directories, the kubeconfig, the driver
name (``dra.kubeaccel.io``) and the node name. It must serve that driver name on those directories
and read claims from the API server it is given. The intended peer is the Go driver built on the
kubelet-plugin helper (``tests/dra/godriver``, built by ``scripts/bootstrap.d/35-go-references.sh``)
with a checkpoint rewritten whole on every change, as dra-example-driver's is::

    --peer 'GODRIVER -driver {driver} -node {node} -kubeconfig {kubeconfig} -registry-dir {registry}
            -plugin-dir {plugins}/{driver} -cdi-dir {cdi} -devices 8 -pool {pool} -device-prefix sim-
            -publish=false -checkpoint {state}/checkpoint.json -kube-api-qps 1000 -kube-api-burst 1000'

(client-go's default rate limit, which dra-example-driver keeps, would pace its claim reads at
200 ms each.) The helper reads every claim from the API server, checkpointed or not; the restart figure of the
peer counts those reads instead of refusing them.

Goals (issue 23): prepare p99 <= 1.5x the peer and flat in the number of
claims; idle CPU <= 2x the peer + 0.2 % of a core; restart with 5,000 claims <= 2 s.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import yaml

from kubeaccel.dra._generated import dra_v1_pb2 as pb
from kubeaccel.dra._generated import dra_v1_pb2_grpc as pb_grpc
from kubeaccel.dra.model import DEFAULT_DRIVER, pool_name
from kubeaccel.dra.registration import registration_socket_name
from kubeaccel.sockets import serving

SIM = "example.com/sim"
NODE = "bench-node"
DEVICES = 8
NAMESPACE = "bench"
FILL_BATCH = 500
_CLAIM_PATH = re.compile(r"/apis/resource\.k8s\.io/v1/namespaces/([^/]+)/resourceclaims/([^/?]+)")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def claim_uid(name: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"kubeaccel-bench/{name}"))


def claim_body(namespace: str, name: str) -> dict[str, Any]:
    index = int(re.sub(r"\D", "", name) or 0) % DEVICES
    return {
        "apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaim",
        "metadata": {"name": name, "namespace": namespace, "uid": claim_uid(name), "resourceVersion": "1"},
        "spec": {"devices": {"requests": [{"name": "dev", "exactly": {"deviceClassName": "sim.example.com"}}]}},
        "status": {"allocation": {"devices": {"results": [
            {"request": "dev", "driver": DEFAULT_DRIVER, "pool": pool_name(NODE, SIM), "device": f"sim-{index}"}]}}},
    }


class _ClaimHandler(BaseHTTPRequestHandler):
    gets = 0  # ResourceClaim reads served (a restart must answer checkpointed claims without one)
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in two writes: no 40 ms delayed-ACK stall

    def do_GET(self) -> None:
        match = _CLAIM_PATH.fullmatch(self.path.split("?")[0])
        if match:
            type(self).gets += 1
            self._send(200, claim_body(match[1], match[2]))
        else:
            self._send(404, {"apiVersion": "v1", "kind": "Status", "status": "Failure", "reason": "NotFound",
                             "code": 404, "message": f"{self.path} not found"})

    def _send(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class ClaimServer:
    """The part of an API server a node driver needs: GET ResourceClaim, over plain HTTP."""

    def __init__(self) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _ClaimHandler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def kubeconfig(self, path: Path) -> Path:
        path.write_text(yaml.safe_dump({
            "apiVersion": "v1", "kind": "Config", "current-context": "bench",
            "clusters": [{"name": "bench", "cluster": {"server": self.url}}],
            "users": [{"name": "bench", "user": {"token": "bench"}}],
            "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": "bench"}}]}))
        return path

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@dataclass
class Driver:
    """One driver under test: its directories, its command, its process and what was measured."""

    name: str
    base: Path
    command: list[str]
    proc: subprocess.Popen[bytes] | None = None
    channel: grpc.Channel | None = None
    env: dict[str, str] | None = None
    filled: int = 0
    results: dict[str, float] = field(default_factory=dict)

    @property
    def registration(self) -> Path:
        return self.base / "registry" / registration_socket_name(DEFAULT_DRIVER)

    @property
    def endpoint(self) -> Path:
        return self.base / "plugins" / DEFAULT_DRIVER / "dra.sock"

    def start(self) -> float:
        """Start the process; seconds until a checkpointed claim (or, with none, registration) answers."""
        t0 = time.perf_counter()
        with self.base.joinpath("log").open("ab") as log:
            self.proc = subprocess.Popen(self.command, stdout=subprocess.DEVNULL, stderr=log, env=self.env)
        while not (self.registration.exists() and serving(self.registration) and self.endpoint.exists()):
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.name} exited with {self.proc.returncode}: see {self.base / 'log'}")
            time.sleep(0.005)
        self.channel = grpc.insecure_channel(f"unix://{self.endpoint}")
        if self.filled:
            gets = _ClaimHandler.gets
            while True:
                try:
                    answer = self.prepare(["f0"])
                except grpc.RpcError:
                    time.sleep(0.005)
                    continue
                assert not answer.claims[claim_uid("f0")].error, answer
                if self.name == "peer":  # the kubelet-plugin helper reads every claim, checkpointed or not
                    self.results["API reads to answer a checkpointed claim"] = _ClaimHandler.gets - gets
                else:
                    assert _ClaimHandler.gets == gets, "a checkpointed claim was read from the API server"
                break
        return time.perf_counter() - t0

    def stop(self) -> None:
        if self.channel is not None:
            self.channel.close()
            self.channel = None
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def _refs(self, names: list[str]) -> list[pb.Claim]:
        return [pb.Claim(namespace=NAMESPACE, name=n, uid=claim_uid(n)) for n in names]

    def prepare(self, names: list[str]) -> pb.NodePrepareResourcesResponse:
        assert self.channel is not None
        request = pb.NodePrepareResourcesRequest(claims=self._refs(names))
        return pb_grpc.DRAPluginStub(self.channel).NodePrepareResources(request, timeout=120)

    def unprepare(self, names: list[str]) -> pb.NodeUnprepareResourcesResponse:
        assert self.channel is not None
        request = pb.NodeUnprepareResourcesRequest(claims=self._refs(names))
        return pb_grpc.DRAPluginStub(self.channel).NodeUnprepareResources(request, timeout=120)

    def fill(self, level: int) -> None:
        while self.filled < level:
            names = [f"f{i}" for i in range(self.filled, min(level, self.filled + FILL_BATCH))]
            answer = self.prepare(names)
            errors = [r.error for r in answer.claims.values() if r.error]
            assert not errors, errors[:3]
            self.filled += len(names)

    def timed(self, level: int, calls: int) -> None:
        prepares, unprepares = [], []
        for i in range(calls):
            name = [f"t{level}x{i}"]
            t0 = time.perf_counter()
            answer = self.prepare(name)
            prepares.append(time.perf_counter() - t0)
            assert not answer.claims[claim_uid(name[0])].error, answer
            t0 = time.perf_counter()
            self.unprepare(name)
            unprepares.append(time.perf_counter() - t0)
        self.results[f"prepare p50 ms @{level}"] = percentile(prepares, 50) * 1000
        self.results[f"prepare p99 ms @{level}"] = percentile(prepares, 99) * 1000
        self.results[f"unprepare p99 ms @{level}"] = percentile(unprepares, 99) * 1000


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def make_base(prefix: str) -> Path:
    base = Path(tempfile.mkdtemp(prefix=prefix))
    for sub in ("registry", "plugins", "state", "cdi"):
        (base / sub).mkdir()
    (base / "config.yaml").write_text(yaml.safe_dump({"resources": [
        {"name": SIM, "backend": "simulated", "count": DEVICES, "numaNodes": 2}]}))
    return base


def kubeaccel_command(base: Path, kubeconfig: Path) -> list[str]:
    return [sys.executable, "-m", "kubeaccel.cli", "dra", "run", "--config", str(base / "config.yaml"),
            "--no-publish", "--node-name", NODE, "--registry-dir", str(base / "registry"),
            "--plugins-dir", str(base / "plugins"), "--state-dir", str(base / "state"),
            "--cdi-dir", str(base / "cdi"), "--kubeconfig", str(kubeconfig), "--log-level", "warning"]


def peer_command(template: str, base: Path, kubeconfig: Path) -> list[str]:
    return shlex.split(template.format(registry=base / "registry", plugins=base / "plugins", state=base / "state",
                                       cdi=base / "cdi", kubeconfig=kubeconfig, driver=DEFAULT_DRIVER, node=NODE,
                                       pool=pool_name(NODE, SIM)))


def run(levels: list[int], calls: int, idle: float, restarts: int, peer: str | None,
        baseline: Path | None = None) -> list[Driver]:
    server = ClaimServer()
    drivers: list[Driver] = []
    try:
        for name in ("kubeaccel", "baseline", "peer"):
            if (name == "peer" and not peer) or (name == "baseline" and baseline is None):
                continue
            base = make_base(f"kdbench-{name}-")
            kubeconfig = server.kubeconfig(base / "kubeconfig")
            argv = peer_command(peer or "", base, kubeconfig) if name == "peer" else kubeaccel_command(base, kubeconfig)
            env = {**os.environ, "PYTHONPATH": str(baseline)} if name == "baseline" else None
            drivers.append(Driver(name, base, argv, env=env))
        for driver in drivers:
            driver.start()
        for level in levels:  # interleaved: both drivers at one level before the next
            for driver in drivers:
                driver.fill(level)
                driver.timed(level, calls)
                print(f"{driver.name:10s} @{level:5d}: prepare p50 {driver.results[f'prepare p50 ms @{level}']:6.2f} ms"
                      f"  p99 {driver.results[f'prepare p99 ms @{level}']:6.2f} ms", flush=True)
        time.sleep(2)  # settle after the last calls
        before = {d.name: cpu_seconds(d.proc.pid) for d in drivers if d.proc}
        t0 = time.monotonic()
        time.sleep(idle)
        elapsed = time.monotonic() - t0
        for driver in drivers:
            assert driver.proc is not None
            spent = cpu_seconds(driver.proc.pid) - before[driver.name]
            driver.results["idle CPU % of a core"] = 100 * spent / elapsed
            driver.results["RSS MiB"] = rss_mib(driver.proc.pid)
        for driver in drivers:
            times = []
            for _ in range(restarts):
                driver.stop()
                times.append(driver.start())
            driver.results[f"restart s @{driver.filled}"] = statistics.median(times)
    finally:
        for driver in drivers:
            driver.stop()
            shutil.rmtree(driver.base, ignore_errors=True)
        server.close()
    return drivers


def main(argv: list[str]) -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--levels", default="10,1000,5000", help="claims checkpointed while prepares are timed")
    parser.add_argument("--calls", type=int, default=200, help="timed prepares (and unprepares) per level")
    parser.add_argument("--idle", type=float, default=30.0, help="seconds of idle time to measure CPU over")
    parser.add_argument("--restarts", type=int, default=5)
    parser.add_argument("--peer", default=None, help="command template of another driver (see above)")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="also run kubeaccel from this src directory (another checkout: before / after)")
    args = parser.parse_args(argv)
    levels = [int(x) for x in args.levels.split(",")]
    drivers = run(levels, args.calls, args.idle, args.restarts, args.peer, args.baseline)
    keys = list(drivers[0].results)
    print(f"\n{'':28s}" + "".join(f"{d.name:>12s}" for d in drivers))
    for key in keys:
        print(f"{key:28s}" + "".join(f"{d.results.get(key, float('nan')):12.2f}" for d in drivers))
    print(json.dumps({d.name: d.results for d in drivers}))
