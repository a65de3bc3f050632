"""Device-plugin benchmark: kubeaccel's daemon against a Go device plugin and a minimal Python one.

    .venv/bin/python bench/plugin.py [--calls 5000] [--flips 30] [--restarts 15] [--idle 60] [--no-scale]

The Go peer (``bench/goplugin``) is written the way production plugins are: the kubelet's own
v1beta1 stubs from ``k8s.io/kubelet`` v0.37.2, grpc-go, fsnotify. It is built here with the
machine's Go and cached in ``~/.cache/kubeaccel/goplugin/<source hash>/``. The Python peer is the
plugin most people write first (threaded ``grpc.server``, 10 ms polling).

All plugins run at once as separate processes, each on its own temp socket dir with 8 simulated
devices and a state file; this process plays every kubelet (``KubeletStandIn``) and interleaves
the measurements (blocks of 100 calls, one flip, one restart each in turn), so a busy host slows
all alike. Measured for each:

* Allocate latency over the unix socket (sync gRPC client, one device per call): p50 / p99;
* health-change propagation: state file written → the new list arrives on ListAndWatch;
* re-registration after a kubelet restart: ``kubelet.sock`` served anew (all sockets deleted)
  → ``Register`` received;
* idle CPU: user + system time over ``--idle`` seconds with nothing happening, as % of a core;
* RSS and PSS of the plugin process at the end.

Then, for scale, kubeaccel and the Go peer serve 131,072 devices (4,096 x 32 replicas): the size of
the first ListAndWatch message and the time to answer GetPreferredAllocation over all of them.

Goals (issue 12): idle CPU <= 2x Go + 0.2 % of a core, RSS <= 30 MiB, Allocate p99 <= 1.2x Go,
propagation and re-registration <= 50 ms, GetPreferredAllocation at scale < 100 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import random
import shutil
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
GO_SOURCE = Path(__file__).parent / "goplugin"
CACHE = Path.home() / ".cache" / "kubeaccel" / "goplugin"
SCALE_COUNT, SCALE_REPLICAS = 4096, 32


def build_go_peer() -> Path:
    """The Go peer's binary, built once per source version (cached outside the repo)."""
    digest = hashlib.sha256()
    for name in ("go.mod", "go.sum", "main.go"):
        digest.update((GO_SOURCE / name).read_bytes())
    binary = CACHE / digest.hexdigest()[:16] / "goplugin"
    if not binary.exists():
        go = shutil.which("go")
        if go is None:
            sys.exit("bench/plugin.py: Go is needed to build the Go peer (scripts/bootstrap.sh installs it)")
        binary.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0"}
        tmp = binary.with_suffix(".tmp")
        subprocess.run([go, "build", "-o", str(tmp), "."], cwd=GO_SOURCE, env=env, check=True, timeout=900)
        os.replace(tmp, binary)
    return binary


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


# The floor: the same synchronous grpc server as ours with handlers that only decode the request
# and answer an empty message. What any Python plugin pays before doing anything.
FLOOR = textwrap.dedent(
    '''
    import os, sys, time
    from concurrent import futures
    import grpc
    from kubeaccel.plugin._generated import api_pb2 as pb, api_pb2_grpc as pb_grpc

    socket_dir, count, replicas = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    listed = pb.ListAndWatchResponse(devices=[
        pb.Device(ID=f"sim-{i}::{r}" if replicas > 1 else f"sim-{i}", health="Healthy")
        for i in range(count) for r in range(replicas)]).SerializeToString()
    empty = b""

    def listing(request, context):
        yield listed
        while context.is_active():
            time.sleep(1)

    ident = lambda b: b
    unary, stream = grpc.unary_unary_rpc_method_handler, grpc.unary_stream_rpc_method_handler
    handler = grpc.method_handlers_generic_handler("v1beta1.DevicePlugin", {
        "GetDevicePluginOptions": unary(lambda r, c: pb.DevicePluginOptions(), pb.Empty.FromString,
                                        pb.DevicePluginOptions.SerializeToString),
        "ListAndWatch": stream(listing, pb.Empty.FromString, ident),
        "GetPreferredAllocation": unary(lambda r, c: empty, pb.PreferredAllocationRequest.FromString, ident),
        "Allocate": unary(lambda r, c: empty, pb.AllocateRequest.FromString, ident),
    })
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("unix://" + os.path.join(socket_dir, "floor.sock"))
    server.start()
    kubelet = os.path.join(socket_dir, "kubelet.sock")
    if os.path.exists(kubelet):
        with grpc.insecure_channel("unix://" + kubelet) as ch:
            pb_grpc.RegistrationStub(ch).Register(pb.RegisterRequest(
                version="v1beta1", endpoint="floor.sock", resource_name="example.com/floor"), timeout=5)
    server.wait_for_termination()
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
    idle_cpu_pct: float


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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


async def _measure(
    targets: list[_Target], args: argparse.Namespace, floor: Path
) -> tuple[list[Figures], list[float]]:
    """Run every plugin at once and interleave the measurements, so host load hits all alike.

    ``floor`` is a directory for the no-op server (``FLOOR``): timed on Allocate alongside the others.
    """
    for t in targets:
        t.kubelet = KubeletStandIn(t.socket_dir)
        await t.kubelet.start()
        t.proc = subprocess.Popen(t.argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for t in targets:
            assert t.kubelet is not None
            t.endpoint = (await t.kubelet.next_registration(timeout=30))[1].endpoint
        floor_proc = subprocess.Popen([sys.executable, "-c", FLOOR, str(floor), "8", "1"])
        try:
            await _wait_for(floor / "floor.sock")
            sockets = {t.name: (t.socket_dir / t.endpoint, t.device) for t in targets}
            lat = await asyncio.to_thread(_allocate_latencies, {**sockets, "floor": (floor / "floor.sock", "sim-3")},
                                          args.calls)
        finally:
            floor_proc.terminate()
            floor_proc.wait(timeout=10)

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
                try:
                    arrived, _ = await t.kubelet.next_registration(timeout=10)
                except TimeoutError:
                    raise SystemExit(f"{t.name} did not register again after a kubelet restart") from None
                reregister[t.name].append(arrived - served)
                await asyncio.sleep(0.05)
        # Idle: nothing happens for a while (every kubelet connected, no calls, no changes).
        await asyncio.sleep(1.0)
        before = {t.name: _cpu_seconds(t.proc.pid) for t in targets if t.proc}
        start = time.perf_counter()
        await asyncio.sleep(args.idle)
        elapsed = time.perf_counter() - start
        idle = {t.name: 100 * (_cpu_seconds(t.proc.pid) - before[t.name]) / elapsed for t in targets if t.proc}
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
            idle_cpu_pct=idle[t.name],
        ))
    return figures, sorted(lat["floor"])


async def _wait_for(path: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} did not appear within {timeout:g} s")
        await asyncio.sleep(0.05)


@dataclass
class Scale:
    name: str
    devices: int
    list_bytes: int
    first_list_ms: float
    preferred_ms: float
    preferred_max_ms: float
    partial_ms: float
    rss_mb: float


async def _scale(name: str, argv: list[str], socket_dir: Path, calls: int = 7) -> Scale:
    """ListAndWatch size and GetPreferredAllocation time over all of a big device list."""
    kubelet = KubeletStandIn(socket_dir)
    await kubelet.start()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        endpoint = (await kubelet.next_registration(timeout=120))[1].endpoint
        options = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
        async with grpc.aio.insecure_channel(f"unix://{socket_dir / endpoint}", options=options) as channel:
            stub = pb_grpc.DevicePluginStub(channel)
            start = time.perf_counter()
            stream = stub.ListAndWatch(pb.Empty())
            first = await asyncio.wait_for(stream.read(), 60)
            first_ms = (time.perf_counter() - start) * 1000
            stream.cancel()
            ids = [d.ID for d in first.devices]
            # The kubelet sends the available IDs from a Go set (UnsortedList): in no useful order.
            random.Random(12).shuffle(ids)
            request = pb.PreferredAllocationRequest(container_requests=[pb.ContainerPreferredAllocationRequest(
                available_deviceIDs=ids, must_include_deviceIDs=[ids[len(ids) // 2]], allocation_size=8)])
            # After some pods started, the kubelet offers all but the allocated devices: 1 in 1000 taken.
            must = ids[len(ids) // 2]
            partial = pb.PreferredAllocationRequest(container_requests=[pb.ContainerPreferredAllocationRequest(
                available_deviceIDs=[i for n, i in enumerate(ids) if n % 1000 != 7 or i == must],
                must_include_deviceIDs=[must], allocation_size=8)])
            times, partial_times = [], []
            for _ in range(calls):
                t0 = time.perf_counter()
                await stub.GetPreferredAllocation(request, timeout=60)
                times.append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                await stub.GetPreferredAllocation(partial, timeout=60)
                partial_times.append((time.perf_counter() - t0) * 1000)
        rss = _memory_mb(proc.pid)[0]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        await kubelet.stop()
    return Scale(name, len(ids), first.ByteSize(), first_ms, statistics.median(times), max(times),
                 statistics.median(partial_times), rss)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=5000, help="Allocate calls to time")
    parser.add_argument("--flips", type=int, default=30, help="health flips to time")
    parser.add_argument("--restarts", type=int, default=15, help="kubelet restarts to time")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds of idle time to measure CPU over")
    parser.add_argument("--no-scale", action="store_true", help="skip the 131,072-device run")
    args = parser.parse_args()
    goplugin = build_go_peer()

    with tempfile.TemporaryDirectory(prefix="kab-") as tmp:
        root = Path(tmp)
        dirs = {n: root / n for n in ("ours", "go", "peer")}
        (root / "floor").mkdir()
        for d in dirs.values():
            d.mkdir()
        states = {n: root / f"{n}.json" for n in dirs}
        config = root / "plugin.yaml"
        config.write_text(yaml.safe_dump({"resources": [{
            "name": "example.com/sim", "backend": "simulated", "count": DEVICES, "numaNodes": 2,
            "stateFile": str(states["ours"])}]}))
        (ours, go, peer), floor = await _measure([
            _Target("kubeaccel", [str(KUBEACCEL), "plugin", "run", "--config", str(config), "--socket-dir",
                                  str(dirs["ours"]), "--log-level", "warning"], dirs["ours"], states["ours"], "sim-3"),
            _Target("go peer", [str(goplugin), str(dirs["go"]), "example.com/go", str(DEVICES), "1",
                                str(states["go"])], dirs["go"], states["go"], "sim-3"),
            _Target("python peer", [sys.executable, "-c", PEER, str(dirs["peer"]), str(states["peer"]), str(DEVICES)],
                    dirs["peer"], states["peer"], "dev-3"),
        ], args, root / "floor")

        scale: list[Scale] = []
        if not args.no_scale:
            big = root / "big.yaml"
            big.write_text(yaml.safe_dump({"resources": [{
                "name": "example.com/sim", "backend": "simulated", "count": SCALE_COUNT, "numaNodes": 2,
                "replicas": SCALE_REPLICAS, "stateFile": str(root / "big.json")}]}))
            for d in ("bigours", "biggo", "bigfloor"):
                (root / d).mkdir()
            scale.append(await _scale("kubeaccel", [str(KUBEACCEL), "plugin", "run", "--config", str(big),
                                                    "--socket-dir", str(root / "bigours"), "--log-level", "warning"],
                                      root / "bigours"))
            scale.append(await _scale("go peer", [str(goplugin), str(root / "biggo"), "example.com/go",
                                                  str(SCALE_COUNT), str(SCALE_REPLICAS), str(root / "big.json")],
                                      root / "biggo"))
            scale.append(await _scale("python floor", [sys.executable, "-c", FLOOR, str(root / "bigfloor"),
                                                       str(SCALE_COUNT), str(SCALE_REPLICAS)], root / "bigfloor"))

    rows = [
        ("Allocate p50 (ms)", "p50_ms", None),
        ("Allocate p99 (ms)", "p99_ms", "1.2x go"),
        ("health propagation, median (ms)", "propagation_ms", 50.0),
        ("health propagation, max (ms)", "propagation_max_ms", None),
        ("re-registration, median (ms)", "reregister_ms", 50.0),
        ("re-registration, max (ms)", "reregister_max_ms", None),
        (f"idle CPU over {args.idle:g} s (% of a core)", "idle_cpu_pct", "2x go+0.2"),
        ("RSS (MiB)", "rss_mb", 30.0),
        ("PSS (MiB)", "pss_mb", None),
    ]
    print(f"{args.calls} Allocate calls, {args.flips} health flips, {args.restarts} kubelet restarts, "
          f"{DEVICES} simulated devices, {os.cpu_count()} CPUs")
    print(f"{'':36} {'kubeaccel':>10} {'go peer':>10} {'py peer':>10} {'vs go':>7} {'goal':>10}  ok")
    for label, attr, goal in rows:
        a, b, c = getattr(ours, attr), getattr(go, attr), getattr(peer, attr)
        if goal == "1.2x go":
            limit: float | None = 1.2 * b
        elif goal == "2x go+0.2":
            limit = 2 * b + 0.2
        else:
            limit = goal if isinstance(goal, float) else None
        ok = "" if limit is None else ("yes" if a <= limit else "NO")
        shown = "" if limit is None else f"<= {limit:.3g}"
        print(f"{label:36} {a:10.3f} {b:10.3f} {c:10.3f} {a / b if b else float('inf'):7.2f} {shown:>10}  {ok}")
    print(f"python floor (no-op handlers, our grpc server): Allocate p50 {statistics.median(floor) * 1000:.3f} ms, "
          f"p99 {floor[int(len(floor) * 0.99) - 1] * 1000:.3f} ms")
    if scale:
        print(f"\nscale: {SCALE_COUNT} devices x {SCALE_REPLICAS} replicas")
        print(f"{'':36} {'kubeaccel':>10} {'go peer':>10} {'py floor':>10} {'vs go':>7} {'goal':>10}  ok")
        ours_s, go_s, floor_s = scale
        for label, attr, goal in [
            ("devices listed", "devices", None),
            ("ListAndWatch message (MB)", "list_bytes", None),
            ("first list received (ms)", "first_list_ms", None),
            ("GetPreferredAllocation median (ms)", "preferred_ms", 100.0),
            ("GetPreferredAllocation max (ms)", "preferred_max_ms", None),
            ("  ... 0.1 % allocated, median (ms)", "partial_ms", 100.0),
            ("RSS (MiB)", "rss_mb", None),
        ]:
            a, b, c = getattr(ours_s, attr), getattr(go_s, attr), getattr(floor_s, attr)
            if attr == "list_bytes":
                a, b, c = a / 1e6, b / 1e6, c / 1e6
            ok = "" if goal is None else ("yes" if a <= goal else "NO")
            shown = "" if goal is None else f"<= {goal:g}"
            print(f"{label:36} {a:10.3f} {b:10.3f} {c:10.3f} {a / b if b else float('inf'):7.2f} {shown:>10}  {ok}")


if __name__ == "__main__":
    asyncio.run(main())
