"""The DRA driver as a kubelet and an operator stress it (issue 23).

Matrix, against the real ``kubeaccel dra run`` process, the daemon as its own process
(``filenode.py``: claims from files) or in-process, always over real gRPC on unix sockets:
a second driver on the same directories exits 1 naming the holder and touches nothing; a live
socket of another driver is never taken over, a stale one is; SIGKILL at random points of bursts
of prepares and unprepares loses or changes nothing that was answered; a torn journal tail is cut
and the rest kept; leftover temp files are removed at start; a CDI spec that cannot be removed is
logged, counted, and serving goes on; 1,100 claims in one call are all answered; claims do not
wait for each other and one claim is serialized; an idle driver does nothing; SIGTERM ends it
within a second.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from dra.node import DictAccess, DraNode, claim_json, make_node

from kubeaccel.dra._generated import dra_v1_pb2 as pb
from kubeaccel.dra._generated import dra_v1_pb2_grpc as pb_grpc
from kubeaccel.dra.checkpoint import Checkpoint
from kubeaccel.sockets import serving

KUBEACCEL = Path(sys.executable).parent / "kubeaccel"
FILENODE = Path(__file__).with_name("filenode.py")
# SIGTERM must end the driver within 1 s; the margin is for a loaded 2-core CI machine (as the plugin's).
EXIT_WITHIN_S = 1.5


def _wait(predicate, timeout: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.02)


def _tree(*dirs: Path) -> dict[str, tuple[int, int, int, int]]:
    """Every entry under ``dirs`` with what a write, a replace or a touch would change."""
    out = {}
    for top in dirs:
        for path in [top, *top.rglob("*")]:
            st = path.lstat()
            out[str(path)] = (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)
    return out


def _dead_kubeconfig(base: Path) -> Path:
    path = base / "kubeconfig"
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:9"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}]}))
    return path


def _run_args(node: DraNode, *extra: str) -> list[str]:
    o = node.options
    return [str(KUBEACCEL), "dra", "run", "--config", str(node.config_path), "--no-publish", "--node-name", o.node,
            "--registry-dir", str(o.registry_dir), "--plugins-dir", str(o.plugins_dir), "--state-dir",
            str(o.state_dir), "--cdi-dir", str(o.cdi_dir), "--kubeconfig", str(_dead_kubeconfig(node.base)), *extra]


@pytest.fixture
def node() -> Iterator[DraNode]:
    made = make_node()
    yield made
    made.stop()
    shutil.rmtree(made.base, ignore_errors=True)


# -- ownership -------------------------------------------------------------------------------------


def test_a_second_driver_on_the_same_state_is_refused_and_touches_nothing(node: DraNode) -> None:
    node.start()
    claim = node.add_claim(claim_json("c", ["sim-0"]))
    assert node.prepare(claim).claims[claim.uid].error == ""
    kubeconfig_args = _run_args(node)
    o = node.options
    before = _tree(o.registry_dir, o.plugins_dir, o.state_dir, o.cdi_dir)
    out = subprocess.run(kubeconfig_args, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 1, out.stderr
    assert f"another DRA driver (PID {os.getpid()}) holds the state directory {o.state_dir}" in out.stderr
    assert "Traceback" not in out.stderr
    assert _tree(o.registry_dir, o.plugins_dir, o.state_dir, o.cdi_dir) == before
    assert node.info().name  # the first one still serves, on its own sockets
    assert node.prepare(claim).claims[claim.uid].error == ""


def test_a_live_socket_is_never_taken_over_and_a_stale_one_is(node: DraNode, tmp_path: Path) -> None:
    node.start()
    claim = node.add_claim(claim_json("c", ["sim-1"]))
    assert node.prepare(claim).claims[claim.uid].error == ""
    o = node.options
    before = _tree(o.registry_dir, o.plugins_dir, o.cdi_dir)
    other_state = tmp_path / "other-state"  # another state dir: the lock does not stop it, the probe must
    args = [a if a != str(o.state_dir) else str(other_state) for a in _run_args(node)]
    out = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2, out.stderr
    assert f"another process is serving on {o.endpoint}" in out.stderr
    assert "Traceback" not in out.stderr
    assert _tree(o.registry_dir, o.plugins_dir, o.cdi_dir) == before  # its spec was not taken for an orphan
    node.stop()  # a SIGKILLed driver leaves stale sockets: the next start takes them
    import socket as so

    for path in (o.endpoint, o.registration_socket):
        stale = so.socket(so.AF_UNIX, so.SOCK_STREAM)
        stale.bind(str(path))
        stale.close()
    node.start()
    assert node.prepare(claim).claims[claim.uid].error == ""
    assert node.info().name


def test_something_that_is_not_a_socket_is_never_deleted(node: DraNode) -> None:
    node.options.endpoint.parent.mkdir(parents=True)
    node.options.endpoint.mkdir()
    with pytest.raises(Exception, match="it exists and is a directory"):
        node.start()
    assert node.options.endpoint.is_dir()


# -- the checkpoint under SIGKILL -------------------------------------------------------------------


def _write_claim(base: Path, claim: Mapping[str, Any]) -> pb.Claim:
    meta = claim["metadata"]
    directory = base / "claims"
    directory.mkdir(exist_ok=True)
    tmp = directory / f".{meta['name']}.tmp"
    tmp.write_text(json.dumps(claim))
    tmp.replace(directory / f"{meta['namespace']}_{meta['name']}.json")
    return pb.Claim(namespace=meta["namespace"], name=meta["name"], uid=meta["uid"])


def _start_filenode(base: Path, compact: int) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2] / "src"),
                                                       os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, str(FILENODE), str(base), str(compact)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    sock = base / "registry" / "dra.kubeaccel.io-reg.sock"

    def up() -> bool:  # a killed driver's socket is still there: wait for one that answers
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        return sock.exists() and serving(sock)

    _wait(up, timeout=30)
    return proc


class Kubelet:
    """Plays the kubelet in bursts against a driver that is killed at random: what it saw answered."""

    def __init__(self, base: Path, seed: int) -> None:
        self.base = base
        self.rng = random.Random(seed)
        self.lock = threading.Lock()
        self.prepared: dict[str, tuple[tuple[str, str], ...]] = {}  # answered prepares: uid -> devices
        self.unprepared: set[str] = set()  # answered unprepares
        self.live: list[pb.Claim] = []  # answered prepares the kubelet may unprepare

    def one(self, stub: pb_grpc.DRAPluginStub, name: str) -> None:
        with self.lock:
            ref = self.live.pop(self.rng.randrange(len(self.live))) if self.live and self.rng.random() < 0.4 else None
        if ref is not None:
            try:
                got = stub.NodeUnprepareResources(pb.NodeUnprepareResourcesRequest(claims=[ref]), timeout=20)
            except grpc.RpcError:  # killed before the answer: it may or may not have happened
                with self.lock:
                    self.prepared.pop(ref.uid, None)
                return
            assert got.claims[ref.uid].error == ""
            with self.lock:
                self.prepared.pop(ref.uid, None)
                self.unprepared.add(ref.uid)
            return
        devices = self.rng.sample(["sim-0", "sim-1", "sim-2", "sim-3"], self.rng.randint(1, 2))
        ref = _write_claim(self.base, claim_json(name, devices))
        try:
            got = stub.NodePrepareResources(pb.NodePrepareResourcesRequest(claims=[ref]), timeout=20)
        except grpc.RpcError:
            return
        result = got.claims[ref.uid]
        assert result.error == "", result.error
        (self.base / "claims" / f"ns_{ref.name}.json").unlink()  # from now on only the checkpoint knows it
        with self.lock:  # only now may the kubelet unprepare it
            self.prepared[ref.uid] = tuple((d.pool_name, d.device_name) for d in result.devices)
            self.live.append(ref)

    def check_served(self, stub: pb_grpc.DRAPluginStub, cdi_dir: Path) -> None:
        """After a restart: every answered prepare is answered again the same, from the checkpoint alone."""
        for ref in self.live:
            got = stub.NodePrepareResources(pb.NodePrepareResourcesRequest(claims=[ref]), timeout=20)
            result = got.claims[ref.uid]
            assert result.error == "", result.error
            assert tuple((d.pool_name, d.device_name) for d in result.devices) == self.prepared[ref.uid]
        for uid in self.unprepared:
            assert not (cdi_dir / f"kubeaccel-dra-{uid}.json").exists()


@pytest.mark.slow  # a long property run: in `make test`, not `make unit`
def test_sigkill_during_bursts_loses_nothing_that_was_answered(node: DraNode) -> None:
    """Bursts of 50 prepares and unprepares (one claim a call, 8 at a time), SIGKILL at a random moment,
    restart: every answered prepare is still prepared with the same devices (its claim file is gone,
    so only the checkpoint can answer), every answered unprepare stays unprepared, the CDI specs are
    exactly the checkpoint's, and no temp file is left. A low compaction threshold puts kills inside
    compactions too."""
    kubelet = Kubelet(node.base, seed=23)
    for run in range(12):
        proc = _start_filenode(node.base, compact=16)
        with grpc.insecure_channel(f"unix://{node.options.endpoint}") as channel:
            stub = pb_grpc.DRAPluginStub(channel)
            kubelet.check_served(stub, node.options.cdi_dir)
            with ThreadPoolExecutor(8) as pool:
                futures = [pool.submit(kubelet.one, stub, f"r{run}-{i}") for i in range(50)]
                time.sleep(kubelet.rng.uniform(0.05, 0.6))
                proc.kill()
                proc.wait(10)
                for future in futures:
                    future.result(30)  # an assertion inside a call fails the test here
    proc = _start_filenode(node.base, compact=16)  # the last start checks what the last kill left
    try:
        specs = sorted(p.name for p in node.options.cdi_dir.iterdir())
        assert [p.name for p in node.options.state_dir.iterdir() if p.name.endswith(".tmp")] == []
        assert all(not name.startswith(".") for name in specs), specs
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
        found = Checkpoint.load(node.options.state_dir)
        found.close()
        assert set(kubelet.prepared) <= set(found.claims)
        assert not (kubelet.unprepared & set(found.claims))
        assert specs == sorted(f"kubeaccel-dra-{uid}.json" for uid in found.claims)
        for uid, devices in kubelet.prepared.items():
            assert tuple((d.pool, d.device) for d in found.claims[uid].devices) == devices
        assert len(kubelet.prepared) + len(kubelet.unprepared) > 100  # the bursts did work between the kills
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


# -- start on damaged or half-written state -----------------------------------------------------------


def test_leftover_temp_files_are_removed_at_start_and_others_kept(node: DraNode) -> None:
    o = node.options
    ours = [o.state_dir / ".checkpoint.x1y2.tmp", o.cdi_dir / ".kubeaccel-dra-abc.json.k3j4.tmp"]
    theirs = [o.cdi_dir / ".nvidia.json.tmp", o.cdi_dir / "vendor.json", o.state_dir / "notes.txt"]
    for path in ours + theirs:
        path.write_text("{")
    # Orphans: one of ours (our kind), one of another kubeaccel driver on the node (its own kind).
    mine = o.cdi_dir / "kubeaccel-dra-1111.json"
    mine.write_text(json.dumps({"cdiVersion": "0.5.0", "kind": "dra.kubeaccel.io/claim", "devices": []}))
    other = o.cdi_dir / "kubeaccel-dra-2222.json"
    other.write_text(json.dumps({"cdiVersion": "0.5.0", "kind": "gpu.kubeaccel.io/claim", "devices": []}))
    node.start()
    assert [p.exists() for p in ours] == [False, False]
    assert [p.exists() for p in theirs] == [True, True, True]
    assert (mine.exists(), other.exists()) == (False, True)


def test_a_cdi_spec_that_cannot_be_removed_is_logged_counted_and_serving_goes_on(tmp_path: Path) -> None:
    node = make_node(metrics_port=0)
    try:
        stuck = node.options.cdi_dir / "kubeaccel-dra-orphan.json"
        stuck.mkdir()  # unlink() fails on it (EISDIR), as it would on a read-only CDI dir
        (stuck / "x").write_text("")
        node.start()
        assert node.daemon.driver is not None
        assert node.daemon.driver.unremovable == ["kubeaccel-dra-orphan.json"]
        claim = node.add_claim(claim_json("c", ["sim-2"]))
        assert node.prepare(claim).claims[claim.uid].error == ""
        text = urllib.request.urlopen(f"http://127.0.0.1:{node.daemon.metrics_port}/metrics", timeout=5).read()
        assert b'kubeaccel_dra_cdi_spec_errors_total{op="remove"} 1.0' in text
    finally:
        node.stop()
        shutil.rmtree(node.base, ignore_errors=True)


def _readonly_mount(path: Path) -> bool:
    """A read-only tmpfs at ``path`` (root in a namespace that allows mounts), else False."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(path)],
                          capture_output=True, check=False).returncode == 0


def test_a_read_only_cdi_dir_at_start_does_not_stop_serving(node: DraNode) -> None:
    cdi_dir = node.options.cdi_dir
    if not _readonly_mount(cdi_dir):
        pytest.skip("needs root and mount (a read-only tmpfs)")
    try:
        (cdi_dir / "kubeaccel-dra-orphan.json").write_text("{}")
        subprocess.run(["mount", "-o", "remount,ro", str(cdi_dir)], check=True)
        node.start()
        assert node.daemon.driver is not None and node.daemon.driver.unremovable == ["kubeaccel-dra-orphan.json"]
        claim = node.add_claim(claim_json("c", ["sim-2"]))
        answer = node.prepare(claim).claims[claim.uid]
        assert "cannot write CDI spec" in answer.error  # its own error; the driver serves on
        assert node.info().name
        node.stop()
    finally:
        subprocess.run(["umount", str(cdi_dir)], check=False)


@pytest.mark.parametrize("kind", ["random bytes", "a directory", "non-UTF-8 JSON"])
def test_damaged_state_is_one_clear_error_through_the_cli(node: DraNode, kind: str) -> None:
    path = node.options.state_dir / "checkpoint.json"
    if kind == "random bytes":
        path.write_bytes(random.Random(1).randbytes(4096))
    elif kind == "a directory":
        path.mkdir()
    else:
        path.write_bytes(b'{"version": 2, "claims": {"\xff": 1}}')
    out = subprocess.run(_run_args(node), capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2, out.stderr
    assert f"checkpoint {path} is unreadable" in out.stderr
    assert "Traceback" not in out.stderr


def test_a_lock_that_is_not_a_file_is_one_clear_error(node: DraNode) -> None:
    (node.options.state_dir / "lock").mkdir()
    out = subprocess.run(_run_args(node), capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2, out.stderr
    assert f"cannot use the state directory {node.options.state_dir}" in out.stderr
    assert "Traceback" not in out.stderr
    assert list(node.options.registry_dir.iterdir()) == []


# -- many claims, concurrency ---------------------------------------------------------------------------


def test_1100_claims_in_one_call_are_all_answered(node: DraNode) -> None:
    node.start()
    refs = [node.add_claim(claim_json(f"c{i}", [f"sim-{i % 4}"])) for i in range(1100)]
    refs.append(pb.Claim(namespace="ns", name="nope", uid=str(uuid.uuid4())))
    prepared = node.dra().NodePrepareResources(pb.NodePrepareResourcesRequest(claims=refs), timeout=120).claims
    assert set(prepared) == {r.uid for r in refs}
    assert [r.uid for r in refs if prepared[r.uid].error] == [refs[-1].uid]
    assert len(node.daemon.driver.checkpoint.claims) == 1100
    unprepared = node.dra().NodeUnprepareResources(pb.NodeUnprepareResourcesRequest(claims=refs), timeout=120).claims
    assert set(unprepared) == {r.uid for r in refs}
    assert all(r.error == "" for r in unprepared.values())
    node.stop()
    found = Checkpoint.load(node.options.state_dir)
    found.close()
    assert found.claims == {}
    assert list(node.options.cdi_dir.iterdir()) == []


class GatedAccess(DictAccess):
    """Reads of claims named in ``held`` wait until the test releases them."""

    def __init__(self) -> None:
        super().__init__({})
        self.held: dict[str, threading.Event] = {}
        self.waiting = 0

    async def read_claim(self, namespace: str, name: str) -> Mapping[str, Any]:
        import asyncio

        gate = self.held.get(name)
        if gate is not None:
            self.waiting += 1
            while not gate.is_set():
                await asyncio.sleep(0.01)
        return await super().read_claim(namespace, name)


def test_claims_do_not_wait_for_each_other_and_one_claim_is_serialized() -> None:
    access = GatedAccess()
    node = make_node(access=access).start()
    try:
        slow = node.add_claim(claim_json("slow", ["sim-0"]))
        fast = node.add_claim(claim_json("fast", ["sim-1"]))
        access.held["slow"] = threading.Event()
        stub = node.dra()
        pending = [stub.NodePrepareResources.future(pb.NodePrepareResourcesRequest(claims=[slow]), timeout=30)
                   for _ in range(2)]  # the same claim twice
        _wait(lambda: access.waiting == 1)
        assert node.prepare(fast).claims[fast.uid].error == ""  # not held up by the slow one
        assert node.unprepare(fast).claims[fast.uid].error == ""
        assert not any(p.done() for p in pending)
        access.held["slow"].set()
        answers = [p.result(30).claims[slow.uid] for p in pending]
        assert answers[0] == answers[1] and answers[0].error == ""
        assert access.reads == 2 and access.waiting == 1  # the second call waited and found it prepared
    finally:
        node.stop()
        shutil.rmtree(node.base, ignore_errors=True)


# -- idle and stop --------------------------------------------------------------------------------------


def test_an_idle_driver_sleeps_and_wakes_on_a_socket_event(node: DraNode) -> None:
    node.start()
    passes = node.daemon.passes
    time.sleep(0.5)
    assert node.daemon.passes == passes  # no polling: nothing happened, nothing ran
    node.options.registration_socket.unlink()
    _wait(node.options.registration_socket.exists)
    assert node.daemon.passes > passes
    assert node.info().name


@pytest.mark.parametrize("state", ["idle", "publishing to a dead API server", "after prepares", "serving metrics"])
def test_sigterm_stops_within_a_second(node: DraNode, state: str) -> None:
    args = _run_args(node)
    if state == "publishing to a dead API server":
        args.remove("--no-publish")
    if state == "serving metrics":
        args += ["--metrics-port", "0", "--metrics-addr", "127.0.0.1"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait(lambda: proc.poll() is None and node.options.registration_socket.exists(), timeout=30)
        if state == "after prepares":
            node.access = DictAccess({})
            with grpc.insecure_channel(f"unix://{node.options.endpoint}") as channel:
                stub = pb_grpc.DRAPluginStub(channel)
                gone = pb.Claim(namespace="ns", name="gone", uid=str(uuid.uuid4()))
                stub.NodePrepareResources(pb.NodePrepareResourcesRequest(claims=[gone]), timeout=20)
        time.sleep(0.3)  # settled: the publisher is in its backoff, the supervisor asleep
        start = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=10)
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = proc.stderr.read() if proc.stderr else ""
    assert code == 0, stderr[-2000:]
    assert "Traceback" not in stderr
    assert took < EXIT_WITHIN_S, took
    assert not node.options.registration_socket.exists()
