"""How fast is `kubeaccel cluster up/down`? Goals: tier 1 warm <= 10 s, tier 2 <= 20 s, down < 10 s.

The peer, measured in the same run on the same machine: the floor that any local cluster pays, i.e.
etcd plus a bare kube-apiserver started by hand until /readyz answers 200 (no controllers, no nodes).
`up` is reported against that floor; each figure is the median of --runs fresh state dirs.
"up repair (X dead)" is `up` on the tier-1 cluster after its supervisor and X were killed (the in-place
repair: same ports and data, only the dead parts restarted, until the cluster is usable again).

    .venv/bin/python bench/cluster.py [--runs 3] [--real-node]
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from kubeaccel.cluster import api, commands, process, supervisor
from kubeaccel.cluster.binaries import locate
from kubeaccel.cluster.layout import Layout
from kubeaccel.cluster.lifecycle import down, up
from kubeaccel.cluster.ports import pick_free
from kubeaccel.cluster.spec import ClusterSpec, node_resources
from kubeaccel.cluster.state import write_control_plane_files

# The real-node test fixture's machine-wide lock: one real node per machine, so wait for the tests' turn.
REAL_NODE_LOCK = Path("/run/lock/kubeaccel-real-node.lock")
REPAIRS = {"up repair (CM dead)": "kube-controller-manager", "up repair (apiserver dead)": "kube-apiserver"}
GOALS = {"up tier 1": 10.0, "up tier 2": 20.0, **{name: 10.0 for name in REPAIRS}, "down": 10.0}


def _bare_apiserver(state_dir: Path) -> float:
    layout = Layout(state_dir)
    etcd_port, peer_port, api_port = pick_free(3)
    ports = commands.Ports(etcd_port, peer_port, api_port)
    bins = locate(("etcd", "kube-apiserver"))
    write_control_plane_files(layout, ports, "localhost")
    start = time.perf_counter()
    try:
        process.start(layout, "etcd", commands.etcd(bins, layout, ports))
        process.start(layout, "kube-apiserver", commands.apiserver(bins, layout, ports))
        context = api.ssl_context(layout)
        api.wait_until("bare apiserver", lambda: api.readyz(layout, api_port, context), 120, lambda: None)
        return time.perf_counter() - start
    finally:
        process.stop_all(layout, grace=1.0)


@contextlib.contextmanager
def _real_node_turn(wanted: bool) -> Iterator[None]:
    if not wanted:
        yield
        return
    REAL_NODE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(REAL_NODE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _wait_unclaimed(layout: Layout, timeout: float = 900.0) -> None:
    """Another cluster's real node (a test session, a demo) may hold the machine's one real node: wait."""
    from kubeaccel.cluster.realnode import check_unclaimed
    from kubeaccel.errors import KubeaccelError

    deadline = time.monotonic() + timeout
    while True:
        try:
            check_unclaimed(layout)
            return
        except KubeaccelError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def _repair(spec: ClusterSpec, dead: str) -> float:
    layout = Layout(spec.state_dir)
    for name in (supervisor.NAME, dead):
        record = process.read_record(layout, name)
        assert record is not None
        os.kill(record.pid, signal.SIGKILL)
        while record.alive():
            process.reap(record.pid)
            time.sleep(0.01)
    start = time.perf_counter()
    info = up(spec)
    assert dead in info.repaired, info.repaired
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--real-node", action="store_true", help="also time tier 2 (root only)")
    args = parser.parse_args()
    # Stopped by `timeout` or kill: the finally blocks still `down` the clusters started so far.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    samples: dict[str, list[float]] = {"bare apiserver (floor)": [], "up tier 1": [], **{n: [] for n in REPAIRS},
                                       "down": []}
    if args.real_node:
        samples["up tier 2"] = []
    with _real_node_turn(args.real_node):
        _measure(args.runs, args.real_node, samples)
    _report(samples)


def _measure(runs: int, real_node: bool, samples: dict[str, list[float]]) -> None:
    resources = node_resources(["nec.com/ve=8"])
    for _ in range(runs):
        tmp = Path(tempfile.mkdtemp(prefix="kubeaccel-bench-"))
        try:
            samples["bare apiserver (floor)"].append(_bare_apiserver(tmp / "bare"))
            for tier in ["up tier 1", *(["up tier 2"] if real_node else [])]:
                state = tmp / tier.replace(" ", "-")
                spec = ClusterSpec(state_dir=state, nodes=2, node_resources=resources,
                                   real_node=tier == "up tier 2")
                if spec.real_node:
                    _wait_unclaimed(Layout(state))
                try:
                    start = time.perf_counter()
                    up(spec)
                    samples[tier].append(time.perf_counter() - start)
                    if tier == "up tier 1":
                        for name, component in REPAIRS.items():
                            samples[name].append(_repair(spec, component))
                    start = time.perf_counter()
                    down(state)
                    samples["down"].append(time.perf_counter() - start)
                finally:
                    down(state)  # after a failure too: never a cluster left running (a no-op after a timed down)
        finally:
            # Only the bare run's files are left (down removed the rest); a dir with a mount point is kept.
            _remove_unmounted(tmp)


def _remove_unmounted(tmp: Path) -> None:
    from kubeaccel.cluster.hostclean import mounts_under

    mounted = mounts_under(Path("/proc/self/mountinfo").read_text(), [tmp])
    if mounted:
        print(f"kept {tmp}: mount points under it: {', '.join(mounted)}")
        return
    shutil.rmtree(tmp, ignore_errors=True)


def _report(samples: dict[str, list[float]]) -> None:
    floor = statistics.median(samples["bare apiserver (floor)"])
    print(f"{'measure':<30}{'median s':>10}{'min s':>8}{'vs floor':>10}{'goal s':>8}  verdict")
    for name, values in samples.items():
        median = statistics.median(values)
        goal = GOALS.get(name)
        verdict = "" if goal is None else ("ok" if median <= goal else "MISSED")
        ratio = f"{median / floor:.2f}x" if name.startswith("up") else ""
        goal_text = f"{goal:.0f}" if goal else ""
        print(f"{name:<30}{median:>10.2f}{min(values):>8.2f}{ratio:>10}{goal_text:>8}  {verdict}")


if __name__ == "__main__":
    main()
