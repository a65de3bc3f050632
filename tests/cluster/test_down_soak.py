"""Soak: cycles of `cluster up --real-node` → a pod with an emptyDir and a projected service-account token
(and, in the `dra` cycles, a DRA claim served by `kubeaccel dra run`, its CDI spec in the node's dir) →
`cluster down`; and cycles whose `up --real-node` is killed (SIGKILL, with the supervisor) once the kubelet
started, then `down`; each in a fresh state dir; after each cycle nothing is left: no process whose command line
names the state dir, no mount under it, and no veth link, network namespace, KUBE-*/CNI-* iptables chain,
`kubeaccel` cgroup or `kubeaccel0` bridge that was not there before.

One real node per machine: the cycles hold the machine-wide lock the `real_node` fixture uses
(tests/fixtures/cluster.py). This module sorts before test_real_node.py, so in a whole-suite run it goes
before the session's own real node exists; a session that already holds the lock cannot run a second real
node, and the test says so instead of waiting.

Cycles: $KUBEACCEL_SOAK_CYCLES (default SOAK_CYCLES).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fixtures.cluster import KUBECTL, REAL_NODE_LOCK, REAL_NODE_LOCK_WAIT, processes_of

from kubeaccel.cluster import hostclean, lifecycle
from kubeaccel.cluster.realnode import BRIDGE, CGROUP_NAME

pytestmark = [pytest.mark.cluster, pytest.mark.real_node, pytest.mark.slow]
KUBEACCEL = str(Path(sys.executable).with_name("kubeaccel"))
# The bar: at least 10 cycles of each kind that runs a workload (~12 s each here); the
# killed kind repeats one path (kill, then down), so 3 of those.
SOAK_CYCLES = 10
KILLED_CYCLES = 3

POD = {
    "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "soak", "namespace": "default"},
    "spec": {
        "tolerations": [{"operator": "Exists"}],
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "c", "image": "kubeaccel.local/busybox:1.0", "imagePullPolicy": "Never",
            "command": ["sh", "-c", "echo x > /scratch/x && cat /token/token > /dev/null && sleep 3600"],
            "volumeMounts": [{"name": "scratch", "mountPath": "/scratch"}, {"name": "token", "mountPath": "/token"}],
        }],
        "volumes": [
            {"name": "scratch", "emptyDir": {"medium": "Memory"}},
            {"name": "token", "projected": {"sources": [{"serviceAccountToken": {"path": "token",
                                                                                  "expirationSeconds": 3600}}]}},
        ],
    },
}  # fmt: skip


def _held_by_us() -> bool:
    """Whether this process already holds the real-node lock (a `real_node` fixture earlier in the session)."""
    if not REAL_NODE_LOCK.exists():
        return False
    inode = os.stat(REAL_NODE_LOCK).st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        ours = len(fields) > 5 and fields[1] == "FLOCK" and fields[4] == str(os.getpid())
        if ours and fields[5].endswith(f":{inode}"):
            return True
    return False


@contextlib.contextmanager
def _real_node_slot() -> Iterator[None]:
    assert not _held_by_us(), (
        "this session already runs the real node (the real_node fixture); run the soak in a session of its own: "
        "pytest tests/cluster/test_down_soak.py"
    )
    REAL_NODE_LOCK.parent.mkdir(parents=True, exist_ok=True)
    with open(REAL_NODE_LOCK, "a") as lock:
        deadline = time.monotonic() + REAL_NODE_LOCK_WAIT
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                assert time.monotonic() < deadline, f"another session held {REAL_NODE_LOCK} for {REAL_NODE_LOCK_WAIT} s"
                time.sleep(1)
        yield


def _host() -> dict[str, set[str]]:
    chains = {
        f"{tool}/{table}/{chain}"
        for tool, tables in hostclean.snapshot_iptables().items()
        for table, names in tables.items()
        for chain in names
        if chain.startswith(("KUBE-", "CNI-"))
    }
    return {
        "veth": {n for n in hostclean.link_names() if n.startswith("veth")},
        "netns": set(hostclean.netns_names()),
        "chains": chains,
        "ours": {str(d) for d in hostclean.cgroup_dirs(CGROUP_NAME) if d.exists()}
        | ({BRIDGE} if Path("/sys/class/net", BRIDGE).exists() else set()),
    }


def _mounts_under(path: Path) -> list[str]:
    return hostclean.mounts_under(Path("/proc/self/mountinfo").read_text(), [path])


DRIVER = "dra.kubeaccel.io"
SIM = "example.com/sim"


def _start_dra_driver(state: Path, node: str, scratch: Path) -> subprocess.Popen[bytes]:
    """`kubeaccel dra run` for the real node, on simulated devices: the claim's CDI spec goes in the node's dir."""
    (scratch / "dev").mkdir()
    config = scratch / "config.yaml"
    config.write_text(json.dumps({"resources": [{"name": SIM, "backend": "simulated", "count": 2, "numaNodes": 1,
                                                 "deviceDir": str(scratch / "dev")}]}))  # fmt: skip
    kubelet = state / "node" / "kubelet"
    return subprocess.Popen(
        [KUBEACCEL, "dra", "run", "--config", str(config), "--driver", DRIVER, "--node-name", node,
         "--registry-dir", str(kubelet / "plugins_registry"), "--plugins-dir", str(kubelet / "plugins"),
         "--state-dir", str(scratch / "dra-state"), "--cdi-dir", str(state / "node" / "cdi"),
         "--kubeconfig", str(state / "kubeconfig"), "--device-classes"],
        stdout=subprocess.DEVNULL, stderr=(scratch / "dra.log").open("wb"),
    )  # fmt: skip


def _claim(kubectl: list[str], pod: dict[str, object]) -> None:
    template = {"apiVersion": "resource.k8s.io/v1", "kind": "ResourceClaimTemplate",
                "metadata": {"name": "soak", "namespace": "default"},
                "spec": {"spec": {"devices": {"requests": [{"name": "sim", "exactly": {
                    "deviceClassName": "sim.example.com", "count": 1}}]}}}}  # fmt: skip
    for _ in range(60):  # the DeviceClass and the ResourceSlice appear once the driver has started
        classes = subprocess.run([*kubectl, "get", "deviceclass", "sim.example.com"], capture_output=True, check=False)
        if classes.returncode == 0:
            break
        time.sleep(1)
    subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps(template), text=True, check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    spec = pod["spec"]
    assert isinstance(spec, dict)
    spec["resourceClaims"] = [{"name": "dev", "resourceClaimTemplateName": "soak"}]
    spec["containers"][0]["resources"] = {"claims": [{"name": "dev"}]}


def _killed_cycle(state: Path) -> dict[str, float]:
    """`up --real-node` killed (SIGKILL) once the kubelet is started, and the supervisor with it: `down` finishes."""
    from kubeaccel.cluster import process
    from kubeaccel.cluster.layout import Layout

    layout = Layout(state)
    start = time.monotonic()
    up = subprocess.Popen([KUBEACCEL, "cluster", "up", "--state-dir", str(state), "--nodes", "0", "--real-node"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while not layout.pid_file("kubelet").exists() and up.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert up.poll() is None, "`up` ended before the kubelet started"
    finally:
        up.kill()
        up.wait()
    record = process.read_record(layout, "supervisor")
    if record is not None:
        os.kill(record.pid, 9)
    assert processes_of(state), "nothing was left running: the crash did not happen mid-flight"
    times = {"up killed": time.monotonic() - start}
    mark = time.monotonic()
    down = subprocess.run([KUBEACCEL, "cluster", "down", "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert down.returncode == 0, down.stderr
    times["down"] = time.monotonic() - mark
    return times


def _cycle(state: Path, kind: str) -> dict[str, float]:
    if kind == "killed":
        return _killed_cycle(state)
    times: dict[str, float] = {}
    start = time.monotonic()
    up = subprocess.run([KUBEACCEL, "cluster", "up", "--state-dir", str(state), "--nodes", "0", "--real-node"],
                        capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert up.returncode == 0, up.stderr
    times["up"] = time.monotonic() - start
    kubectl = [KUBECTL, f"--kubeconfig={state / 'kubeconfig'}"]
    node = json.loads((state / "state.json").read_text())["real_node"]
    pod = json.loads(json.dumps(POD))
    pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node}
    driver = _start_dra_driver(state, node, state.parent) if kind == "dra" else None
    try:
        if kind == "dra":
            _claim(kubectl, pod)
        subprocess.run([*kubectl, "apply", "-f", "-"], input=json.dumps(pod), text=True, check=True,
                       capture_output=True, timeout=60)  # fmt: skip
        waited = subprocess.run([*kubectl, "wait", "pod/soak", "--for=condition=Ready", "--timeout=120s"],
                                capture_output=True, text=True, timeout=150, check=False)  # fmt: skip
        assert waited.returncode == 0, waited.stderr + subprocess.run(
            [*kubectl, "describe", "pod", "soak"], capture_output=True, text=True, check=False).stdout
        mounted = _mounts_under(state)
        assert any("empty-dir" in m for m in mounted) and any("projected" in m for m in mounted), mounted
        if kind == "dra":
            assert list((state / "node" / "cdi").iterdir()), "the claim's CDI spec was not written"
    finally:
        if driver is not None:  # the driver is the user's own process (here), not one `up` started
            driver.terminate()
            driver.wait(timeout=30)
    times["pod"] = time.monotonic() - start - times["up"]
    mark = time.monotonic()
    down = subprocess.run([KUBEACCEL, "cluster", "down", "--state-dir", str(state)],
                          capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert down.returncode == 0, down.stderr
    times["down"] = time.monotonic() - mark
    return times


@pytest.mark.parametrize("kind", ["pod", "dra", "killed"])
def test_up_pod_down_cycles_leave_nothing_behind(kind: str) -> None:
    cycles = int(os.environ.get("KUBEACCEL_SOAK_CYCLES", KILLED_CYCLES if kind == "killed" else SOAK_CYCLES))
    with _real_node_slot():
        before = _host()
        assert not before["ours"], f"a real node's cgroups or bridge are already there: {before['ours']}"
        for cycle in range(cycles):
            state = Path(tempfile.mkdtemp(prefix="kubeaccel-soak-")) / "state"
            try:
                times = _cycle(state, kind)
            finally:
                with contextlib.suppress(Exception):
                    lifecycle.down(state)
            after = _host()
            left = {k: sorted(after[k] - before[k]) for k in after if after[k] - before[k]}
            assert processes_of(state) == [], f"cycle {cycle}: processes survived `down`"
            assert _mounts_under(state) == [], f"cycle {cycle}: mounts survived `down`"
            assert not state.exists(), f"cycle {cycle}: the state dir survived `down`"
            assert left == {}, f"cycle {cycle}: left on the host: {left}"
            print(f"{kind} cycle {cycle}: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()))
            shutil.rmtree(state.parent)
