"""Device-plugin benchmark: kubeaccel's daemon against a minimal Python plugin, same run, same host.

    .venv/bin/python bench/plugin.py [--calls 5000] [--flips 30] [--restarts 15]

Both plugins run at once as separate processes, each on its own temp socket dir with 8
simulated devices and a state file; this process plays both kubelets (``KubeletStandIn``) and
interleaves the measurements (blocks of 100 calls, one flip, one restart each in turn), so a
busy host slows both alike. Measured for each:

* Allocate latency over the unix socket (sync gRPC client, one device per call): p50 / p99;
* health-change propagation: state file written → the new list arrives on ListAndWatch;
* re-registration after a kubelet restart: ``kubelet.sock`` served anew (all sockets deleted)
  → ``Register`` received;
* RSS of the plugin process at the end.

Targets: p99 < 1 ms, propagation < 50 ms, re-registration < 100 ms, RSS < 40 MB. The peer is the
plugin most people write first: a threaded ``grpc.server``, the state file polled every 10 ms,
the socket dir polled every 10 ms for a kubelet restart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import yaml

from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.kubelet import KubeletStandIn

DEVICES = 8
KUBEACCEL = Path(sys.executable).parent / "kubeaccel"

# The peer: a minimal, conventional Python device plugin (about what a first plugin looks like).
PEER = textwrap.dedent(
    '''
    import json, os, sys, threading, time
    from concurrent import futures
    import grpc
    from kubeaccel.plugin._generated import api_pb2 as pb, api_pb2_grpc as pb_grpc

    socket_dir, state_file, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    endpoint, resource = "peer.sock", "example.com/peer"

    def read_states():
        try:
            with open(state_file) as f:
                return json.load(f)
        except (OSError, ValueError):
            return {}

    def devices():
        states = read_states()
        return [pb.Device(ID=f"dev-{i}", health=states.get(f"dev-{i}", "Healthy")) for i in range(count)]

    class Plugin(pb_grpc.DevicePluginServicer):
        def GetDevicePluginOptions(self, request, context):
            return pb.DevicePluginOptions()

        def ListAndWatch(self, request, context):
            last = devices()
            yield pb.ListAndWatchResponse(devices=last)
            while context.is_active():
                time.sleep(0.01)
                now = devices()
                if now != last:
                    last = now
                    yield pb.ListAndWatchResponse(devices=now)

        def Allocate(self, request, context):
            out = pb.AllocateResponse()
            for c in request.container_requests:
                ids = sorted(c.devices_ids)
                out.container_responses.add(envs={"PEER_DEVICES": ",".join(i.split("-")[1] for i in ids)})
            return out

    def serve():
        path = os.path.join(socket_dir, endpoint)
        if os.path.exists(path):
            os.unlink(path)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        pb_grpc.add_DevicePluginServicer_to_server(Plugin(), server)
        server.add_insecure_port("unix://" + path)
        server.start()
        return server

    def register():
        with grpc.insecure_channel("unix://" + os.path.join(socket_dir, "kubelet.sock")) as ch:
            pb_grpc.RegistrationStub(ch).Register(
                pb.RegisterRequest(version="v1beta1", endpoint=endpoint, resource_name=resource), timeout=5)

    server = serve()
    registered = False
    while True:
        if not os.path.exists(os.path.join(socket_dir, endpoint)):
            server.stop(0)
            server = serve()
            registered = False
        if not registered and os.path.exists(os.path.join(socket_dir, "kubelet.sock")):
            try:
                register()
                registered = True
            except grpc.RpcError:
                pass
        time.sleep(0.01)
    '''
)


@dataclass
class Figures:
    name: str
    p50_ms: float
    p99_ms: float
    propagation_ms: float
    propagation_max_ms: float
    reregister_ms: float
    reregister_max_ms: float
    rss_mb: float
    pss_mb: float


def _memory_mb(pid: int) -> tuple[float, float]:
    """(RSS, PSS) in MB: PSS splits shared library pages among the processes that map them."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value, *_ = line.split()
        fields[key.rstrip(":")] = int(value) / 1024
    return fields["Rss"], fields["Pss"]


def _write_states(path: Path, states: dict[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(states))
    os.replace(tmp, path)


def _allocate_latencies(sockets: dict[str, tuple[Path, str]], calls: int, block: int = 100) -> dict[str, list[float]]:
    """Allocate timings per plugin, taken in alternating blocks so both see the same host load."""
    channels = {name: grpc.insecure_channel(f"unix://{socket}") for name, (socket, _) in sockets.items()}
    stubs = {name: pb_grpc.DevicePluginStub(ch) for name, ch in channels.items()}
    requests = {
        name: pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[device])])
        for name, (_, device) in sockets.items()
    }
    out: dict[str, list[float]] = {name: [] for name in sockets}
    try:
        for name, stub in stubs.items():  # warm-up: connection, caches
            for _ in range(200):
                stub.Allocate(requests[name], timeout=5)
        for _ in range(calls // block):
            for name, stub in stubs.items():
                request, times = requests[name], out[name]
                for _ in range(block):
                    start = time.perf_counter()
                    stub.Allocate(request, timeout=5)
                    times.append(time.perf_counter() - start)
    finally:
        for ch in channels.values():
            ch.close()
    return out


@dataclass
class _Target:
    name: str
    argv: list[str]
    socket_dir: Path
    state: Path
    device: str
    proc: subprocess.Popen[bytes] | None = None
    kubelet: KubeletStandIn | None = None
    endpoint: str = ""


async def _propagation(t: _Target, health: str, stream: grpc.aio.UnaryStreamCall) -> float:  # type: ignore[type-arg]
    start = time.perf_counter()
    _write_states(t.state, {t.device: health})
    while True:
        response = await asyncio.wait_for(stream.read(), 5)
        if {d.ID: d.health for d in response.devices}[t.device] == health:
            return time.perf_counter() - start


async def _measure(targets: list[_Target], args: argparse.Namespace) -> list[Figures]:
    """Run every plugin at once and interleave the measurements, so host load hits all alike."""
    for t in targets:
        t.kubelet = KubeletStandIn(t.socket_dir)
        await t.kubelet.start()
        t.proc = subprocess.Popen(t.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for t in targets:
            assert t.kubelet is not None
            t.endpoint = (await t.kubelet.next_registration(timeout=30))[1].endpoint
        lat = await asyncio.to_thread(
            _allocate_latencies, {t.name: (t.socket_dir / t.endpoint, t.device) for t in targets}, args.calls)

        propagation: dict[str, list[float]] = {t.name: [] for t in targets}
        channels = [t.kubelet.plugin_channel(t.endpoint) for t in targets if t.kubelet]
        streams = [pb_grpc.DevicePluginStub(ch).ListAndWatch(pb.Empty()) for ch in channels]
        for stream in streams:
            await stream.read()
        for flip in range(args.flips):
            health = "Unhealthy" if flip % 2 == 0 else "Healthy"
            for t, stream in zip(targets, streams, strict=True):
                await asyncio.sleep(0.02)
                propagation[t.name].append(await _propagation(t, health, stream))
        for stream in streams:
            stream.cancel()
        for ch in channels:
            await ch.close()

        reregister: dict[str, list[float]] = {t.name: [] for t in targets}
        for _ in range(args.restarts):
            for t in targets:
                assert t.kubelet is not None
                served = await t.kubelet.restart()
                arrived, _ = await t.kubelet.next_registration(timeout=10)
                reregister[t.name].append(arrived - served)
                await asyncio.sleep(0.05)
        memory = {t.name: _memory_mb(t.proc.pid) for t in targets if t.proc}
    finally:
        for t in targets:
            if t.proc is not None:
                t.proc.terminate()
                try:
                    t.proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    t.proc.kill()
            if t.kubelet is not None:
                await t.kubelet.stop()
    figures = []
    for t in targets:
        times = sorted(lat[t.name])
        figures.append(Figures(
            t.name,
            p50_ms=statistics.median(times) * 1000,
            p99_ms=times[int(len(times) * 0.99) - 1] * 1000,
            propagation_ms=statistics.median(propagation[t.name]) * 1000,
            propagation_max_ms=max(propagation[t.name]) * 1000,
            reregister_ms=statistics.median(reregister[t.name]) * 1000,
            reregister_max_ms=max(reregister[t.name]) * 1000,
            rss_mb=memory[t.name][0],
            pss_mb=memory[t.name][1],
        ))
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000, help="Allocate calls to time")
    parser.add_argument("--flips", type=int, default=30, help="health flips to time")
    parser.add_argument("--restarts", type=int, default=15, help="kubelet restarts to time")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="kab-") as tmp:
        root = Path(tmp)
        ours_dir, peer_dir = root / "ours", root / "peer"
        ours_dir.mkdir()
        peer_dir.mkdir()
        ours_state, peer_state = root / "ours.json", root / "peer.json"
        config = root / "plugin.yaml"
        config.write_text(yaml.safe_dump({"resources": [{
            "name": "example.com/sim", "backend": "simulated", "count": DEVICES, "numaNodes": 2,
            "stateFile": str(ours_state)}]}))
        ours, peer = await _measure([
            _Target("kubeaccel", [str(KUBEACCEL), "plugin", "run", "--config", str(config), "--socket-dir",
                                  str(ours_dir), "--log-level", "warning"], ours_dir, ours_state, "sim-3"),
            _Target("minimal peer", [sys.executable, "-c", PEER, str(peer_dir), str(peer_state), str(DEVICES)],
                    peer_dir, peer_state, "dev-3"),
        ], args)

    rows = [
        ("Allocate p50 (ms)", "p50_ms", None),
        ("Allocate p99 (ms)", "p99_ms", 1.0),
        ("health propagation, median (ms)", "propagation_ms", 50.0),
        ("health propagation, max (ms)", "propagation_max_ms", None),
        ("re-registration, median (ms)", "reregister_ms", 100.0),
        ("re-registration, max (ms)", "reregister_max_ms", None),
        ("RSS (MB)", "rss_mb", 40.0),
        ("PSS (MB)", "pss_mb", None),
    ]
    print(f"{args.calls} Allocate calls, {args.flips} health flips, {args.restarts} kubelet restarts, "
          f"{DEVICES} simulated devices, {os.cpu_count()} CPUs")
    print(f"{'':34} {'kubeaccel':>10} {'peer':>10} {'ratio':>7} {'target':>8}  ok")
    for label, attr, target in rows:
        a, b = getattr(ours, attr), getattr(peer, attr)
        ok = "" if target is None else ("yes" if a < target else "NO")
        tgt = "" if target is None else f"< {target:g}"
        print(f"{label:34} {a:10.3f} {b:10.3f} {a / b:7.2f} {tgt:>8}  {ok}")


if __name__ == "__main__":
    asyncio.run(main())
