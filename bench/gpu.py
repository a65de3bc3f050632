"""kubeaccel on a real NVIDIA GPU, side by side with NVIDIA's own device plugin, in one run.

    python3 bench/gpu.py --nvidia-plugin PATH --nvidia-ctk PATH [--out DIR] [--calls 3000] [--starts 3]

Run by ``bench/gpu.sh`` on a machine with an NVIDIA GPU and its driver (it carries this checkout,
the wheels kubeaccel needs and NVIDIA/k8s-device-plugin built from source; nothing is downloaded).
Every step runs even when an earlier one fails; each ends as one row of the closing table, and the
raw outputs (device listings, Allocate answers, CDI specs, checker reports) are written to ``--out``.

Steps:

* facts: driver, GPUs, MIG mode, device nodes, the driver's files (what CDI must mount);
* ``kubeaccel plugin devices`` and ``kubeaccel dra devices -o yaml`` over the nvidia backend, and
  the same with each MIG strategy (MIG off: the same GPUs, no MIG devices, no error);
* side by side, each against its own kubelet stand-in (``KubeletStandIn``): time from process start
  to the first ``Register``; Allocate p50/p99 over the unix socket (one GPU per call, blocks of 100
  calls taken in turn so host load hits all alike, with a no-op Python gRPC server as the floor);
  RSS with NVML loaded;
* ``kubeaccel plugin check`` against kubeaccel's plugin, and against NVIDIA's in both start orders;
* CDI: kubeaccel's spec against ``nvidia-ctk cdi generate`` on the real driver root;
* one tiny CUDA computation (PyTorch) on the device that kubeaccel's Allocate handed out, and the
  discovery script's answer for Spark.

Goals (issue 19): Allocate p50 and p99 <= 1.5x NVIDIA's, RSS <= 1.2x NVIDIA's, first registration
<= 0.3 s after start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import yaml

from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.kubelet import KubeletStandIn

HERE = Path(__file__).resolve().parent
NVIDIA_DIR = Path("/var/lib/kubelet/device-plugins")  # NVIDIA's plugin always serves here
RESOURCE = "nvidia.com/gpu"
# --simulate: check this script on a machine without a GPU (simulated devices stand in for the GPU
# and kubeaccel's simulated plugin for NVIDIA's); no figure from such a run means anything.
SIMULATE = False


def _load_bench_plugin() -> Any:
    spec = importlib.util.spec_from_file_location("bench_plugin", HERE / "plugin.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is made
    spec.loader.exec_module(module)
    return module


bench_plugin = _load_bench_plugin()


def kubeaccel_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "kubeaccel.cli", *args]


@dataclass
class Report:
    out: Path
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # step, result, figures, detail
    figures: dict[str, Any] = field(default_factory=dict)

    def save(self, name: str, text: str | bytes) -> None:
        path = self.out / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)

    def row(self, step: str, result: str, figures: str = "", detail: str = "") -> None:
        self.rows.append((step, result, figures, detail))
        print(f"[gpu] {step}: {result} {figures} {detail}", flush=True)


def sh(command: str, timeout: float = 60) -> str:
    done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=timeout, check=False)
    return f"$ {command}\n{done.stdout}{done.stderr}(exit {done.returncode})\n"


@contextlib.contextmanager
def step(report: Report, name: str) -> Iterator[None]:
    start = time.monotonic()
    try:
        yield
    except Exception as exc:  # one failed step must not hide the others
        report.row(name, "ERROR", f"{time.monotonic() - start:.1f} s", f"{type(exc).__name__}: {exc}"[:300])
        report.save(f"error-{name.replace(' ', '_')}.txt", traceback.format_exc())


# -- facts ------------------------------------------------------------------------------------

def facts(report: Report, ctk: Path) -> None:
    text = "".join(sh(c) for c in (
        "uname -a; nproc; cat /proc/driver/nvidia/version",
        "nvidia-smi --query-gpu=index,name,uuid,memory.total,driver_version,compute_cap,mig.mode.current,"
        "pci.bus_id --format=csv",
        "ls -la /dev/nvidia* /dev/nvidia-caps 2>&1",
        "ldconfig -p | grep -E 'nvidia|cuda|libnv' ",
        "ls -la /usr/local/nvidia /usr/local/nvidia/* 2>&1 | head -200",
        "ls -laR /lib/firmware/nvidia 2>&1 | head -40",
        "which nvidia-smi nvidia-debugdump nvidia-persistenced nvidia-cuda-mps-control nvidia-cuda-mps-server",
        "ls /proc/driver/nvidia/capabilities /proc/driver/nvidia/capabilities/* 2>&1 | head -40",
        "ls /etc/cdi /var/run/cdi 2>&1",
    ))
    report.save("facts.txt", text)
    specs = report.out
    generated = "".join(sh(f"{ctk} cdi generate --output={specs}/nvidia-ctk{suffix}.yaml {extra} 2>&1 | tail -30")
                        for suffix, extra in (("", ""), ("-management", "--mode=management")))
    report.save("nvidia-ctk.txt", generated)
    ok = (specs / "nvidia-ctk.yaml").exists()
    report.row("facts", "ok" if ok else "partial", "", "nvidia-ctk spec " + ("written" if ok else "NOT written"))


# -- listings ---------------------------------------------------------------------------------

def config_file(root: Path, name: str, **keys: Any) -> Path:
    path = root / f"{name}.yaml"
    entry = {"name": RESOURCE, "backend": "simulated", "count": 1} if SIMULATE else \
        {"name": RESOURCE, "backend": "nvidia", **keys}
    path.write_text(yaml.safe_dump({"resources": [entry]}))
    return path


def listings(report: Report, root: Path) -> None:
    config = config_file(root, "nvidia")
    outputs = []
    for args in (["plugin", "devices", "--config", str(config)],
                 ["dra", "devices", "--config", str(config), "-o", "yaml"]):
        done = subprocess.run(kubeaccel_argv(*args), capture_output=True, text=True, timeout=60, check=False)
        outputs.append(f"$ kubeaccel {' '.join(args)}\n{done.stdout}{done.stderr}(exit {done.returncode})\n")
        if done.returncode != 0:
            report.save("listings.txt", "".join(outputs))
            raise RuntimeError(f"kubeaccel {args[0]} {args[1]} exited {done.returncode}: {done.stderr[-200:]}")
    mig = []
    for strategy in ("none", "single", "mixed"):
        cfg = config_file(root, f"mig-{strategy}", migStrategy=strategy)
        done = subprocess.run(kubeaccel_argv("plugin", "devices", "--config", str(cfg)), capture_output=True,
                              text=True, timeout=60, check=False)
        outputs.append(f"$ kubeaccel plugin devices (migStrategy {strategy})\n{done.stdout}{done.stderr}"
                       f"(exit {done.returncode})\n")
        mig.append(f"{strategy}:{done.returncode}")
    report.save("listings.txt", "".join(outputs))
    slices = outputs[1]
    wanted = ("productName", "architecture", "cudaComputeCapability", "driverVersion", "memory")
    missing = [w for w in wanted if w not in slices]
    report.row("devices + dra slices", "ok" if not missing else "partial", f"MIG exits {' '.join(mig)}",
               f"slice lacks {missing}" if missing else "slice has product, arch, CC, driver, memory")


# -- side by side -----------------------------------------------------------------------------

@dataclass
class Started:
    proc: subprocess.Popen[bytes]
    kubelet: KubeletStandIn
    endpoint: str
    to_register_s: float


async def start_plugin(argv: list[str], socket_dir: Path, log: Path, env: dict[str, str] | None = None) -> Started:
    socket_dir.mkdir(parents=True, exist_ok=True)
    kubelet = KubeletStandIn(socket_dir)
    await kubelet.start()
    t0 = time.monotonic()
    proc = subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT, env=env)
    try:
        arrived, request = await kubelet.next_registration(timeout=60)
    except BaseException:
        await stop_plugin(Started(proc, kubelet, "", 0.0))
        raise
    return Started(proc, kubelet, request.endpoint, arrived - t0)


async def stop_plugin(s: Started) -> None:
    s.proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.to_thread(s.proc.wait, 10)
    except subprocess.TimeoutExpired:
        s.proc.kill()
    await s.kubelet.stop()


def first_gpu_uuid() -> str:
    if SIMULATE:
        return "sim-0"
    done = subprocess.run(["nvidia-smi", "--query-gpu=uuid", "--format=csv,noheader"], capture_output=True,
                          text=True, check=True, timeout=30)
    return done.stdout.split()[0]


def nvidia_argv(binary: Path) -> list[str]:
    if SIMULATE:
        cfg = Path(tempfile.gettempdir()) / "gpu-bench-simulated-nvidia.yaml"
        cfg.write_text(yaml.safe_dump({"resources": [{"name": RESOURCE, "backend": "simulated", "count": 1}]}))
        return kubeaccel_argv("plugin", "run", "--config", str(cfg), "--socket-dir", str(NVIDIA_DIR))
    return [str(binary), "--kubelet-socket", str(NVIDIA_DIR / "kubelet.sock"), "--device-list-strategy=envvar",
            "--pass-device-specs=true", "--fail-on-init-error=true"]


# Floors: what any Python plugin pays on this machine before doing anything. The sync one is
# bench/plugin.py's FLOOR (grpc's thread-pool server, as kubeaccel's); these two tell whether the
# asyncio side of grpc (kubeaccel registers with grpc.aio) or an aio server changes the figure.
SYNC_FLOOR_WITH_AIO = """
import asyncio, os, sys
from concurrent import futures
import grpc
from kubeaccel.plugin._generated import api_pb2 as pb, api_pb2_grpc as pb_grpc
path = os.path.join(sys.argv[1], "floor.sock")
handler = grpc.method_handlers_generic_handler("v1beta1.DevicePlugin", {"Allocate": grpc.unary_unary_rpc_method_handler(
    lambda r, c: b"", pb.AllocateRequest.FromString, lambda b: b)})
server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
server.add_generic_rpc_handlers((handler,))
server.add_insecure_port("unix://" + path)
server.start()
async def main():
    async with grpc.aio.insecure_channel("unix://" + path) as ch:
        await pb_grpc.DevicePluginStub(ch).Allocate(pb.AllocateRequest(), timeout=5)
    await asyncio.Event().wait()
asyncio.run(main())
"""
AIO_FLOOR = """
import asyncio, os, sys
import grpc
from kubeaccel.plugin._generated import api_pb2 as pb
async def allocate(request, context):
    return b""
async def main():
    unary = grpc.unary_unary_rpc_method_handler
    handler = grpc.method_handlers_generic_handler("v1beta1.DevicePlugin", {"Allocate": unary(
        allocate, pb.AllocateRequest.FromString, lambda b: b)})
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((handler,))
    server.add_insecure_port("unix://" + os.path.join(sys.argv[1], "floor.sock"))
    await server.start()
    await server.wait_for_termination()
asyncio.run(main())
"""


async def side_by_side(report: Report, root: Path, nvdp: Path, calls: int, starts: int) -> None:
    config = config_file(root, "bench")
    sim = root / "sim.yaml"
    sim.write_text(yaml.safe_dump({"resources": [{"name": "example.com/sim", "backend": "simulated", "count": 1}]}))

    def ours(directory: Path, cfg: Path = config) -> list[str]:
        return kubeaccel_argv("plugin", "run", "--config", str(cfg), "--socket-dir", str(directory),
                              "--log-level", "warning")

    uuid = first_gpu_uuid()
    # Start-up: alternate the two, each started afresh, time from exec to the first Register.
    to_register: dict[str, list[float]] = {"kubeaccel": [], "nvidia": []}
    for _ in range(starts):
        for name, argv, directory in (("kubeaccel", ours(root / "ours"), root / "ours"),
                                      ("nvidia", nvidia_argv(nvdp), NVIDIA_DIR)):
            s = await start_plugin(argv, directory, report.out / f"{name}.log")
            to_register[name].append(s.to_register_s)
            await stop_plugin(s)
    plugins = {
        "kubeaccel": await start_plugin(ours(root / "ours"), root / "ours", report.out / "kubeaccel.log"),
        "nvidia": await start_plugin(nvidia_argv(nvdp), NVIDIA_DIR, report.out / "nvidia.log"),
        # The same daemon over one simulated device: tells the backend's share from the daemon's.
        "kubeaccel-sim": await start_plugin(ours(root / "sim", sim), root / "sim", report.out / "sim.log"),
        # The same daemon with glibc's malloc arenas capped (16 CPUs: up to 128 arenas by default).
        "kubeaccel-arena2": await start_plugin(ours(root / "arena"), root / "arena", report.out / "arena.log",
                                               env={**os.environ, "MALLOC_ARENA_MAX": "2"}),
    }
    devices = {"kubeaccel": uuid, "nvidia": uuid, "kubeaccel-sim": "sim-0", "kubeaccel-arena2": uuid}
    floors = {"floor": bench_plugin.FLOOR, "floor-aio-client": SYNC_FLOOR_WITH_AIO, "floor-aio-server": AIO_FLOOR}
    floor_procs = []
    try:
        sockets = {name: (s.kubelet.socket_dir / s.endpoint, devices[name]) for name, s in plugins.items()}
        for name, program in floors.items():
            directory = root / name
            directory.mkdir()
            args = [str(directory), "1", "1"] if name == "floor" else [str(directory)]
            floor_procs.append(subprocess.Popen([sys.executable, "-c", program, *args]))
            await bench_plugin._wait_for(directory / "floor.sock")
            sockets[name] = (directory / "floor.sock", "sim-0")
        answers = []
        for name in ("kubeaccel", "nvidia"):
            path = sockets[name][0]
            with grpc.insecure_channel(f"unix://{path}") as ch:
                response = pb_grpc.DevicePluginStub(ch).Allocate(
                    pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[uuid])]),
                    timeout=10)
            answers.append(f"== {name}\n{response}")
            report.figures.setdefault("allocate_envs", {})[name] = dict(response.container_responses[0].envs)
        report.save("allocate-answers.txt", "\n".join(answers))
        await asyncio.sleep(1.0)  # lazily started threads settle before memory is read
        lat = await asyncio.to_thread(bench_plugin._allocate_latencies, sockets, calls)
        memory = {name: bench_plugin._memory_mb(s.proc.pid) for name, s in plugins.items()}
        threads = {name: len(os.listdir(f"/proc/{s.proc.pid}/task")) for name, s in plugins.items()}
        report.save("smaps-kubeaccel.txt", Path(f"/proc/{plugins['kubeaccel'].proc.pid}/smaps").read_text())
    finally:
        for proc in floor_procs:
            proc.terminate()
            proc.wait(timeout=10)
        for s in plugins.values():
            await stop_plugin(s)

    def pct(times: list[float], q: float) -> float:
        ordered = sorted(times)
        return ordered[max(int(len(ordered) * q) - 1, 0)] * 1000

    fig: dict[str, dict[str, Any]] = {
        name: {"p50_ms": statistics.median(times) * 1000, "p99_ms": pct(times, 0.99)} for name, times in lat.items()
    }
    for name in plugins:
        fig[name].update(rss_mib=memory[name][0], pss_mib=memory[name][1], threads=threads[name])
    for name, times in to_register.items():
        fig[name].update(register_s=statistics.median(times), register_all_s=times)
    report.figures["side_by_side"] = fig
    a, b = fig["kubeaccel"], fig["nvidia"]
    report.save("allocate-all.txt", json.dumps(fig, indent=1))
    for label, key, goal in (("Allocate p50", "p50_ms", 1.5), ("Allocate p99", "p99_ms", 1.5)):
        ratio = a[key] / b[key]
        report.row(label, "met" if ratio <= goal else "NOT met",
                   f"{a[key]:.3f} ms vs {b[key]:.3f} ms = {ratio:.2f}x (goal <= {goal}x)",
                   "; ".join(f"{n} {fig[n][key]:.3f}" for n in fig if n not in ("kubeaccel", "nvidia")))
    ratio = a["rss_mib"] / b["rss_mib"]
    report.row("RSS", "met" if ratio <= 1.2 else "NOT met",
               f"{a['rss_mib']:.1f} MiB vs {b['rss_mib']:.1f} MiB = {ratio:.2f}x (goal <= 1.2x)",
               f"PSS {a['pss_mib']:.1f} vs {b['pss_mib']:.1f}; threads {a['threads']} vs {b['threads']}; "
               f"sim {fig['kubeaccel-sim']['rss_mib']:.1f}, arena2 {fig['kubeaccel-arena2']['rss_mib']:.1f}")
    report.row("first registration", "met" if a["register_s"] <= 0.3 else "NOT met",
               f"{a['register_s']:.3f} s vs {b['register_s']:.3f} s (goal <= 0.3 s)",
               f"all: {[round(x, 3) for x in a['register_all_s']]} vs {[round(x, 3) for x in b['register_all_s']]}")


# -- start-up profile -------------------------------------------------------------------------

async def startup_profile(report: Report, root: Path) -> None:
    """Where kubeaccel's start-up goes on this machine: imports, and a profile up to the first Register."""
    config = config_file(root, "profile")
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", "import kubeaccel.cli, kubeaccel.plugin.cli, "
                           "kubeaccel.plugin.daemon, kubeaccel.devices.backends.nvidia, pynvml"],
                          capture_output=True, text=True, timeout=60, check=False)
    lines = sorted((ln for ln in done.stderr.splitlines() if "|" in ln and "import time:" in ln),
                   key=lambda ln: int(ln.split("|")[1]) if ln.split("|")[1].strip().isdigit() else 0)
    report.save("importtime.txt", "\n".join(lines[-60:]))
    prof = report.out / "startup.prof"
    s = await start_plugin([sys.executable, "-m", "cProfile", "-o", str(prof), "-m", "kubeaccel.cli", "plugin", "run",
                            "--config", str(config), "--socket-dir", str(root / "prof"), "--log-level", "debug"],
                           root / "prof", report.out / "profile.log")
    await asyncio.sleep(0.5)
    await stop_plugin(s)
    if prof.exists():
        import pstats
        from io import StringIO
        buf = StringIO()
        pstats.Stats(str(prof), stream=buf).sort_stats("cumulative").print_stats(45)
        report.save("startup-profile.txt", buf.getvalue())
    report.row("start-up profile", "ok", f"{s.to_register_s:.3f} s to Register under cProfile",
               "importtime.txt, startup-profile.txt")


# -- the checker ------------------------------------------------------------------------------

async def checks(report: Report, root: Path, nvdp: Path) -> None:
    config = config_file(root, "check")
    results = []
    check_dir = root / "check"
    check_dir.mkdir()
    checker = kubeaccel_argv("plugin", "check", "--socket-dir", str(check_dir), "--timeout", "20", "--json")
    proc = subprocess.Popen(checker, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    await asyncio.sleep(1.0)
    plugin = subprocess.Popen(kubeaccel_argv("plugin", "run", "--config", str(config), "--socket-dir", str(check_dir)),
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    out, _ = await asyncio.to_thread(proc.communicate, timeout=240)
    plugin.terminate()
    plugin.wait(timeout=10)
    results.append(("kubeaccel", proc.returncode, out))
    nv_checker = kubeaccel_argv("plugin", "check", "--socket-dir", str(NVIDIA_DIR), "--timeout", "20", "--json")
    for order in ("checker first", "plugin first"):
        plugin_first = order == "plugin first"
        nv = None
        if plugin_first:
            nv = subprocess.Popen(nvidia_argv(nvdp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await asyncio.sleep(2.0)
        proc = subprocess.Popen(nv_checker, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        if not plugin_first:
            await asyncio.sleep(1.0)
            nv = subprocess.Popen(nvidia_argv(nvdp), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out, _ = await asyncio.to_thread(proc.communicate, timeout=240)
        assert nv is not None
        nv.terminate()
        nv.wait(timeout=10)
        results.append((f"nvidia, {order}", proc.returncode, out))
    report.save("checks.txt", "\n".join(f"== {name}: exit {rc}\n{out}" for name, rc, out in results))
    for name, rc, out in results:
        try:
            graded = json.loads(out[out.index("{"):])
            failed, warned = graded.get("failed", []), graded.get("warned", [])
        except ValueError:
            failed, warned = ["(no JSON report)"], []
        report.row(f"plugin check: {name}", "pass" if rc == 0 else f"exit {rc}",
                   f"{len(failed)} FAIL, {len(warned)} WARN", f"failed {failed}; warned {warned}"[:200])


# -- CDI --------------------------------------------------------------------------------------

def _edits(spec: dict[str, Any]) -> dict[str, set[str]]:
    """What a spec's edits give a container: mounts (container path and options), nodes, hooks, env."""
    edits = [spec.get("containerEdits") or {}] + [d.get("containerEdits") or {} for d in spec.get("devices", [])]
    out: dict[str, set[str]] = {"mounts": set(), "deviceNodes": set(), "hooks": set(), "env": set()}
    for e in edits:
        out["mounts"] |= {f"{m.get('containerPath')} {','.join(m.get('options') or [])}" for m in e.get("mounts") or []}
        out["deviceNodes"] |= {d.get("path", "") for d in e.get("deviceNodes") or []}
        out["hooks"] |= {" ".join(h.get("args", [])) for h in e.get("hooks") or []}
        out["env"] |= set(e.get("env") or [])
    return out


async def cdi_step(report: Report, root: Path, ctk: Path) -> None:
    """kubeaccel's own spec (no NVIDIA spec on this node) against nvidia-ctk's compute spec
    (--mode=management: no graphics files, which kubeaccel leaves out too), same hook binary."""
    hook = str(ctk.resolve())
    theirs_path = report.out / "nvidia-ctk-compute.yaml"
    argv = [str(ctk), "--quiet", "cdi", "generate", "--mode=management", f"--nvidia-cdi-hook-path={hook}",
            f"--output={theirs_path}"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0 or not theirs_path.exists():
        raise RuntimeError(f"nvidia-ctk cdi generate failed: {done.stderr[-300:]}")
    theirs = yaml.safe_load(theirs_path.read_text())
    cdi_dir = root / "cdi"
    config = config_file(root, "cdi", cdi=True, nvidiaCdiHookPath=hook)
    sock = root / "cdi-sock"
    s = await start_plugin(kubeaccel_argv("plugin", "run", "--config", str(config), "--socket-dir", str(sock),
                                          "--cdi-dir", str(cdi_dir), "--log-level", "info"),
                           sock, report.out / "cdi-plugin.log")
    try:
        uuid = first_gpu_uuid()
        with grpc.insecure_channel(f"unix://{sock / s.endpoint}") as ch:
            answer = pb_grpc.DevicePluginStub(ch).Allocate(
                pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=[uuid])]), timeout=10)
        written = sorted(cdi_dir.glob("*.json")) if cdi_dir.exists() else []
        ours = json.loads(written[0].read_text()) if written else None
    finally:
        await stop_plugin(s)
    names = list(answer.container_responses[0].cdi_devices)
    report.save("cdi-allocate.txt", str(answer))
    if ours is None:
        report.row("CDI vs nvidia-ctk", "no spec", "", f"Allocate names {[n.name for n in names]}")
        return
    report.save("cdi-kubeaccel.yaml", yaml.safe_dump(ours))
    a, b = _edits(ours), _edits(theirs)
    diff = {k: {"only nvidia-ctk": sorted(b[k] - a[k]), "only kubeaccel": sorted(a[k] - b[k])} for k in a}
    report.save("cdi-diff.json", json.dumps(diff, indent=1))
    same = all(not v["only nvidia-ctk"] and not v["only kubeaccel"] for k, v in diff.items() if k != "env")
    report.row("CDI vs nvidia-ctk", "agree" if same else "differ",
               f"{len(a['mounts'])} vs {len(b['mounts'])} mounts, {len(a['hooks'])} vs {len(b['hooks'])} hooks, "
               f"{len(a['deviceNodes'])} vs {len(b['deviceNodes'])} nodes",
               f"Allocate names {[n.name for n in names]}" + ("" if same else "; see cdi-diff.json"))


# -- CUDA on the allocated device -------------------------------------------------------------

CUDA_PROGRAM = (
    "import torch; x = torch.randn(1024, 1024, device='cuda'); y = (x @ x).sum().item(); "
    "print(torch.cuda.get_device_name(0), torch.cuda.device_count(), 'ok' if y == y else 'nan')"
)


def cuda_step(report: Report) -> None:
    envs = report.figures.get("allocate_envs", {}).get("kubeaccel")
    if envs is None:
        raise RuntimeError("no Allocate answer from kubeaccel (side-by-side failed)")
    visible = envs.get("NVIDIA_VISIBLE_DEVICES", "")
    env = {**os.environ, **envs, "CUDA_VISIBLE_DEVICES": visible}
    done = subprocess.run([sys.executable, "-c", CUDA_PROGRAM], env=env, capture_output=True, text=True, timeout=180,
                          check=False)
    discover = subprocess.run([sys.executable, "-m", "kubeaccel.spark.discover"], env=env, capture_output=True,
                              text=True, timeout=60, check=False)
    report.save("cuda.txt", f"envs {envs}\n{done.stdout}{done.stderr}\ndiscover: {discover.stdout}{discover.stderr}")
    report.row("CUDA on the allocated GPU", "ok" if done.returncode == 0 and "ok" in done.stdout else "FAILED",
               done.stdout.strip()[:80], f"NVIDIA_VISIBLE_DEVICES={visible}; discover: {discover.stdout.strip()[:80]}")


# -- main -------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nvidia-plugin", type=Path, required=True)
    parser.add_argument("--nvidia-ctk", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "/tmp/gpu-bench")))
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--only", default="", help="comma list of steps to run (default: all)")
    parser.add_argument("--simulate", action="store_true", help="check the script itself without a GPU")
    args = parser.parse_args()
    global SIMULATE
    SIMULATE = args.simulate
    args.out.mkdir(parents=True, exist_ok=True)
    NVIDIA_DIR.mkdir(parents=True, exist_ok=True)
    report = Report(args.out)
    wanted = set(filter(None, args.only.split(",")))
    steps: list[tuple[str, Callable[[Path], Any]]] = [
        ("facts", lambda root: facts(report, args.nvidia_ctk)),
        ("listings", lambda root: listings(report, root)),
        ("side-by-side", lambda root: asyncio.run(side_by_side(report, root, args.nvidia_plugin, args.calls,
                                                               args.starts))),
        ("cuda", lambda root: cuda_step(report)),
        ("profile", lambda root: asyncio.run(startup_profile(report, root))),
        ("check", lambda root: asyncio.run(checks(report, root, args.nvidia_plugin))),
        ("cdi", lambda root: asyncio.run(cdi_step(report, root, args.nvidia_ctk))),
    ]
    for name, run in steps:
        if wanted and name not in wanted:
            continue
        with tempfile.TemporaryDirectory(prefix=f"gpu-{name}-") as tmp, step(report, name):
            run(Path(tmp))
    report.save("figures.json", json.dumps(report.figures, indent=1, default=str))
    width = max(len(r[0]) for r in report.rows) if report.rows else 10
    table = [f"{'step':{width}}  {'result':8}  figures / detail"]
    table += [f"{s:{width}}  {r:8}  {f}{'  | ' + d if d else ''}" for s, r, f, d in report.rows]
    report.save("table.txt", "\n".join(table) + "\n")
    print("\n".join(table))


if __name__ == "__main__":
    main()
