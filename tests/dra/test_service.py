"""The DRA daemon over real gRPC on unix sockets: registration, prepare/unprepare, checkpoint, CDI, health.

The claims are ResourceClaim JSON as the API server returns it, served from a dict (the cluster
tests read them from a real API server).
"""

from __future__ import annotations

import json
import shutil
import time
import uuid

import grpc
import pytest
from dra.node import DRIVER, POOL, SIM, DraNode, claim_json, make_node

from kubeaccel.dra._generated import dra_v1_pb2, dra_v1beta1_pb2, dra_v1beta1_pb2_grpc
from kubeaccel.dra._generated import health_v1_pb2 as hpb
from kubeaccel.dra._generated import health_v1_pb2_grpc as hpb_grpc
from kubeaccel.dra._generated import pluginregistration_pb2 as reg_pb
from kubeaccel.dra.checkpoint import Checkpoint


def _wait(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.01)


def _on_disk(node: DraNode) -> dict[str, object]:
    """The claims a restart would find: the state dir copied (the running driver holds the original)."""
    copy = node.base / "state-copy"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(node.options.state_dir, copy)
    found = Checkpoint.load(copy)
    found.close()
    return dict(found.claims)


def _spec_files(node: DraNode) -> list[str]:
    return sorted(p.name for p in node.options.cdi_dir.glob("*.json"))


def test_registration_info(dra_node: DraNode) -> None:
    info = dra_node.info()
    assert info.type == "DRAPlugin"
    assert info.name == DRIVER
    assert info.endpoint == str(dra_node.options.endpoint)
    assert list(info.supported_versions) == ["v1.DRAPlugin", "v1beta1.DRAPlugin", "v1.DRAResourceHealth"]
    stub = dra_node.registration()
    stub.NotifyRegistrationStatus(reg_pb.RegistrationStatus(plugin_registered=False, error="x" * 5000), timeout=5)
    assert len(dra_node.daemon.registration.error) == 1024  # bounded
    stub.NotifyRegistrationStatus(reg_pb.RegistrationStatus(plugin_registered=True), timeout=5)
    assert dra_node.daemon.registration.registered.is_set()


def test_prepare_writes_a_cdi_spec_and_is_idempotent(dra_node: DraNode) -> None:
    claim = dra_node.add_claim(claim_json("c1", ["sim-0", "sim-3"]))
    first = dra_node.prepare(claim).claims[claim.uid]
    assert first.error == ""
    assert [(d.pool_name, d.device_name, list(d.request_names)) for d in first.devices] == [
        (POOL, "sim-0", ["req"]), (POOL, "sim-3", ["req"])]
    kind = f"{DRIVER}/claim"
    assert [list(d.cdi_device_ids) for d in first.devices] == [
        [f"{kind}={claim.uid}-sim-0"], [f"{kind}={claim.uid}-sim-3"]]
    (spec_name,) = _spec_files(dra_node)
    spec = json.loads((dra_node.options.cdi_dir / spec_name).read_text())
    assert spec["kind"] == kind
    by_name = {d["name"]: d["containerEdits"] for d in spec["devices"]}
    edits = by_name[f"{claim.uid}-sim-3"]
    assert "KUBEACCEL_DEVICES_EXAMPLE_COM_SIM=0,3" in edits["env"]
    assert [n["path"] for n in edits["deviceNodes"]] == ["/dev/sim-3"]
    assert edits["deviceNodes"][0]["hostPath"] == str(dra_node.base / "dev" / "sim-3")
    reads = dra_node.access.reads
    again = dra_node.prepare(claim).claims[claim.uid]
    assert again == first
    assert dra_node.access.reads == reads  # answered from the checkpoint
    assert list(_on_disk(dra_node)) == [claim.uid]


def test_unprepare_removes_and_is_idempotent(dra_node: DraNode) -> None:
    claim = dra_node.add_claim(claim_json("c1", ["sim-1"]))
    assert dra_node.prepare(claim).claims[claim.uid].error == ""
    for _ in range(2):
        assert dra_node.unprepare(claim).claims[claim.uid].error == ""
        assert _spec_files(dra_node) == []
    never = dra_v1_pb2.Claim(namespace="ns", name="never", uid=str(uuid.uuid4()))
    assert dra_node.unprepare(never).claims[never.uid].error == ""
    assert _on_disk(dra_node) == {}


@pytest.mark.parametrize(
    ("mutate", "expect"),
    [
        (lambda c: c["status"].clear(), "not allocated"),
        (lambda c: c["status"]["allocation"]["devices"]["results"][0].update(device="sim-99"), "not in pool"),
        (lambda c: c["status"]["allocation"]["devices"]["results"][0].update(pool="other-node/example.com/sim"),
         "not published by this node"),
        (lambda c: c["status"]["allocation"]["devices"]["results"][0].update(driver="gpu.example.com"),
         "no devices of driver"),
        (lambda c: c["status"]["allocation"]["devices"].update(results="nope"), "not a list"),
        (lambda c: c["status"]["allocation"]["devices"]["results"][0].pop("request"), "request is missing"),
        (lambda c: c["metadata"].update(uid="someone-else"), "re-created"),
    ],
)
def test_bad_claims_get_their_own_error(dra_node: DraNode, mutate, expect: str) -> None:
    good = dra_node.add_claim(claim_json("good", ["sim-0"]))
    body = claim_json("bad", ["sim-1"])
    uid = body["metadata"]["uid"]
    mutate(body)
    dra_node.access.claims[("ns", "bad")] = body
    bad = dra_v1_pb2.Claim(namespace="ns", name="bad", uid=uid)
    answer = dra_node.prepare(good, bad).claims
    assert answer[good.uid].error == "" and len(answer[good.uid].devices) == 1
    assert expect in answer[bad.uid].error
    assert not answer[bad.uid].devices
    assert _spec_files(dra_node) == [f"kubeaccel-dra-{good.uid}.json"]  # nothing half-written for the bad one


def test_deleted_claim_and_unreachable_api_server(dra_node: DraNode) -> None:
    gone = dra_v1_pb2.Claim(namespace="ns", name="gone", uid=str(uuid.uuid4()))
    assert "does not exist" in dra_node.prepare(gone).claims[gone.uid].error
    prepared = dra_node.add_claim(claim_json("ok", ["sim-2"]))
    assert dra_node.prepare(prepared).claims[prepared.uid].error == ""
    dra_node.access.down = True
    fresh = dra_node.add_claim(claim_json("fresh", ["sim-1"]))
    answer = dra_node.prepare(prepared, fresh).claims
    assert answer[prepared.uid].error == ""  # prepared claims keep being served
    assert "cannot reach the Kubernetes API server" in answer[fresh.uid].error


def test_daemon_restart_keeps_prepared_claims_without_the_api_server() -> None:
    node = make_node().start()
    try:
        claim = node.add_claim(claim_json("c", ["sim-0", "sim-1"]))
        before = node.prepare(claim).claims[claim.uid]
        node.stop()
        shutil.rmtree(node.options.cdi_dir)  # /var/run/cdi is a tmpfs: a reboot empties it
        (node.options.cdi_dir / "kubeaccel-dra-orphan.json").parent.mkdir()
        (node.options.cdi_dir / "kubeaccel-dra-orphan.json").write_text("{}")  # a crash between the writes
        node.access.down = True
        node.start()
        assert _spec_files(node) == [f"kubeaccel-dra-{claim.uid}.json"]  # rewritten; the orphan is gone
        after = node.prepare(claim).claims[claim.uid]
        assert after == before
        assert node.unprepare(claim).claims[claim.uid].error == ""
        node.restart()
        assert node.daemon.driver.checkpoint.claims == {}  # not duplicated, not resurrected
    finally:
        node.stop()
        shutil.rmtree(node.base, ignore_errors=True)


def test_unwritable_cdi_dir_is_a_claim_error_and_nothing_is_recorded(tmp_path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    node = make_node(cdi_dir=blocker / "cdi").start()
    try:
        claim = node.add_claim(claim_json("c", ["sim-0"]))
        answer = node.prepare(claim).claims[claim.uid]
        assert "cannot write CDI specs" in answer.error
        assert node.daemon.driver.checkpoint.claims == {}
    finally:
        node.stop()
        shutil.rmtree(node.base, ignore_errors=True)


def test_v1beta1_is_served_too(dra_node: DraNode) -> None:
    claim = dra_node.add_claim(claim_json("c", ["sim-1"]))
    stub = dra_v1beta1_pb2_grpc.DRAPluginStub(dra_node.channel(dra_node.options.endpoint))
    ref = dra_v1beta1_pb2.Claim(namespace=claim.namespace, name=claim.name, uid=claim.uid)
    answer = stub.NodePrepareResources(dra_v1beta1_pb2.NodePrepareResourcesRequest(claims=[ref]), timeout=10)
    assert [d.device_name for d in answer.claims[claim.uid].devices] == ["sim-1"]
    out = stub.NodeUnprepareResources(dra_v1beta1_pb2.NodeUnprepareResourcesRequest(claims=[ref]), timeout=10)
    assert out.claims[claim.uid].error == ""


def test_registration_socket_is_recreated_when_deleted(dra_node: DraNode) -> None:
    sock = dra_node.options.registration_socket
    sock.unlink()
    _wait(sock.exists)
    assert dra_node.info().name == DRIVER
    dra_node.options.endpoint.unlink()
    _wait(dra_node.options.endpoint.exists)
    claim = dra_node.add_claim(claim_json("c", ["sim-1"]))
    assert dra_node.prepare(claim).claims[claim.uid].error == ""


def test_health_stream_follows_the_devices(dra_node: DraNode) -> None:
    stub = hpb_grpc.DRAResourceHealthStub(dra_node.channel(dra_node.options.endpoint))
    stream = stub.NodeWatchResources(hpb.NodeWatchResourcesRequest(), timeout=20)
    first = next(stream)
    assert {(d.device.pool_name, d.device.device_name, d.health) for d in first.devices} == {
        (POOL, f"sim-{i}", hpb.HEALTHY) for i in range(4)}
    dra_node.set_states({"sim-2": "Unhealthy"})
    second = next(stream)
    states = {d.device.device_name: (d.health, d.message) for d in second.devices}
    assert states["sim-2"][0] == hpb.UNHEALTHY and SIM in states["sim-2"][1]
    assert states["sim-1"][0] == hpb.HEALTHY
    dra_node.set_states({})
    third = next(stream)
    assert all(d.health == hpb.HEALTHY for d in third.devices)
    stream.cancel()


def test_a_request_with_garbage_references_never_fails_as_a_whole(dra_node: DraNode) -> None:
    weird = [dra_v1_pb2.Claim(namespace="", name="", uid="u1"), dra_v1_pb2.Claim(namespace="n", name="x" * 300,
                                                                                 uid="u2")]
    answer = dra_node.prepare(*weird)
    assert set(answer.claims) == {"u1", "u2"}
    assert all(r.error for r in answer.claims.values())
    with pytest.raises(grpc.RpcError):  # a dead endpoint is a transport error, not our answer
        dra_v1beta1_pb2_grpc.DRAPluginStub(grpc.insecure_channel("unix:///nonexistent/x.sock")).NodePrepareResources(
            dra_v1beta1_pb2.NodePrepareResourcesRequest(), timeout=1)


def test_a_checkpoint_that_cannot_be_saved_leaves_nothing_half_done(dra_node: DraNode) -> None:
    kept = dra_node.add_claim(claim_json("kept", ["sim-0"]))
    assert dra_node.prepare(kept).claims[kept.uid].error == ""
    state = dra_node.options.state_dir
    shutil.rmtree(state)  # the checkpoint's directory is gone: every save fails
    fresh = dra_node.add_claim(claim_json("fresh", ["sim-1"]))
    answer = dra_node.prepare(fresh).claims[fresh.uid]
    assert "cannot save the checkpoint" in answer.error
    assert _spec_files(dra_node) == [f"kubeaccel-dra-{kept.uid}.json"]  # the new spec was taken back
    assert "cannot save the checkpoint" in dra_node.unprepare(kept).claims[kept.uid].error
    assert kept.uid in dra_node.daemon.driver.checkpoint.claims  # still prepared, as on disk
    state.mkdir()
    assert dra_node.unprepare(kept).claims[kept.uid].error == ""  # the kubelet's retry succeeds
    assert dra_node.daemon.driver.checkpoint.claims == {}


def test_fuzzed_references_always_get_a_per_claim_answer() -> None:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    node = make_node().start()
    stub = node.dra()
    text = st.text(max_size=300)

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.lists(st.tuples(text, text, text), max_size=5))
    def check(refs: list[tuple[str, str, str]]) -> None:
        claims = [dra_v1_pb2.Claim(namespace=ns, name=name, uid=uid) for ns, name, uid in refs]
        answer = stub.NodePrepareResources(dra_v1_pb2.NodePrepareResourcesRequest(claims=claims), timeout=10)
        assert set(answer.claims) == {uid for _, _, uid in refs}
        assert all(r.error and len(r.error) <= 1024 and not r.devices for r in answer.claims.values())
        out = stub.NodeUnprepareResources(dra_v1_pb2.NodeUnprepareResourcesRequest(claims=claims), timeout=10)
        assert set(out.claims) == {uid for _, _, uid in refs}

    try:
        check()
        assert _spec_files(node) == []
    finally:
        node.stop()
        shutil.rmtree(node.base, ignore_errors=True)


def test_metrics_count_claims_and_devices() -> None:
    import urllib.request

    node = make_node(metrics_port=0).start()
    try:
        claim = node.add_claim(claim_json("m", ["sim-0"]))
        node.prepare(claim)
        gone = dra_v1_pb2.Claim(namespace="ns", name="gone", uid=str(uuid.uuid4()))
        node.prepare(gone)
        node.set_states({"sim-3": "Unhealthy"})
        time.sleep(0.3)
        port = node.daemon.metrics_port
        _wait(lambda: 'kubeaccel_dra_devices{health="Unhealthy",resource="example.com/sim"} 1.0' in
              urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        assert 'kubeaccel_dra_claims_total{call="prepare",result="ok"} 1.0' in text
        assert 'kubeaccel_dra_claims_total{call="prepare",result="error"} 1.0' in text
        assert "kubeaccel_dra_prepared_claims 1.0" in text
    finally:
        node.stop()
        shutil.rmtree(node.base, ignore_errors=True)
