"""``kubeaccel_device_allocated`` from the DRA driver: the real daemon over real gRPC on its unix socket,
its real metrics endpoint scraped and parsed by prometheus-client's own parser.

The series are the device plugin's (same name, same labels, plus ``app``): one per prepared device and
pod the claim is reserved for; gone on unprepare; back after a restart from the checkpoint alone.
"""

from __future__ import annotations

import shutil
import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from dra.node import SIM, DraNode, claim_json, make_node
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families

from kubeaccel.dra.checkpoint import PreparedClaim, PreparedDevice
from kubeaccel.dra.metrics import MAX_LABEL_CHARS, MAX_PODS_PER_CLAIM, MAX_SERIES, allocated_series, holders

Labels = tuple[str, str, str, str, str, str]


@pytest.fixture
def node() -> Iterator[DraNode]:
    n = make_node(metrics_port=0, metrics_addr="127.0.0.1").start()
    try:
        yield n
    finally:
        n.stop()
        shutil.rmtree(n.base, ignore_errors=True)


def scrape(node: DraNode) -> set[Labels]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{node.daemon.metrics_port}/metrics", timeout=5).read().decode()
    out: set[Labels] = set()
    for family in text_string_to_metric_families(text):
        if family.name == "kubeaccel_device_allocated":
            for s in family.samples:
                assert s.value == 1.0
                ll = s.labels
                out.add((ll["resource"], ll["device"], ll["namespace"], ll["pod"], ll["container"], ll["app"]))
    return out


def held(claim: dict[str, Any], *pods: str, app: str | None = None) -> dict[str, Any]:
    """The claim as the API server shows it once the scheduler reserved it for ``pods``."""
    claim["status"]["reservedFor"] = [{"resource": "pods", "name": p, "uid": str(uuid.uuid4())} for p in pods]
    if app is not None:
        claim["metadata"]["labels"] = {"spark-app-selector": app}
    return claim


def test_prepare_sets_unprepare_removes_restart_restores(node: DraNode) -> None:
    a = node.add_claim(held(claim_json("a", ["sim-0", "sim-1"], namespace="team-a"), "etl-exec-1", app="spark-7f"))
    b = node.add_claim(held(claim_json("b", ["sim-2"], namespace="team-b"), "pi-exec-2"))
    assert scrape(node) == set()
    for claim in (a, b):
        assert not node.prepare(claim).claims[claim.uid].error
    both = {
        (SIM, "sim-0", "team-a", "etl-exec-1", "", "spark-7f"),
        (SIM, "sim-1", "team-a", "etl-exec-1", "", "spark-7f"),
        (SIM, "sim-2", "team-b", "pi-exec-2", "", ""),
    }
    assert scrape(node) == both
    node.prepare(a)  # idempotent: the same series, not twice
    assert scrape(node) == both

    # A restart with the API server down: the series come back from the checkpoint alone.
    node.access.down = True
    reads = node.access.reads
    node.restart()
    assert scrape(node) == both
    assert node.access.reads == reads

    assert not node.unprepare(a).claims[a.uid].error
    assert scrape(node) == {(SIM, "sim-2", "team-b", "pi-exec-2", "", "")}
    node.restart()
    assert scrape(node) == {(SIM, "sim-2", "team-b", "pi-exec-2", "", "")}
    node.unprepare(b)
    assert scrape(node) == set()


def test_a_shared_claim_is_one_series_per_pod_and_an_unreserved_one_has_no_pod(node: DraNode) -> None:
    shared = node.add_claim(held(claim_json("s", ["sim-3"]), "p1", "p2"))
    lone = node.add_claim(claim_json("l", ["sim-0"]))  # no status.reservedFor (a kubelet never does this; be safe)
    node.prepare(shared, lone)
    assert scrape(node) == {(SIM, "sim-3", "ns", "p1", "", ""), (SIM, "sim-3", "ns", "p2", "", ""),
                            (SIM, "sim-0", "ns", "", "", "")}


def test_a_failed_prepare_exports_nothing(node: DraNode) -> None:
    bad = node.add_claim(held(claim_json("x", ["no-such-device"]), "p"))
    assert node.prepare(bad).claims[bad.uid].error
    assert scrape(node) == set()


hostile = st.text(min_size=1, max_size=600)


def test_hostile_names_stay_bounded_over_grpc(node: DraNode) -> None:
    """Pod names, namespaces and app labels from a hostile API server: quotes, newlines, braces, NULs,
    huge; the scrape parses and every value is cut to 253 characters."""

    @settings(max_examples=25, deadline=None)
    @given(namespace=hostile, pods=st.lists(hostile, min_size=1, max_size=40), app=hostile)
    def check(namespace: str, pods: list[str], app: str) -> None:
        claim = node.add_claim(held(claim_json("h", ["sim-1"], namespace=namespace), *pods, app=app))
        assert not node.prepare(claim).claims[claim.uid].error
        got = scrape(node)
        assert 1 <= len(got) <= MAX_PODS_PER_CLAIM
        for labels in got:
            assert all(len(v) <= MAX_LABEL_CHARS for v in labels)
        assert {g[2] for g in got} == {namespace[:MAX_LABEL_CHARS]}
        assert {g[5] for g in got} == {app[:MAX_LABEL_CHARS]}
        node.unprepare(claim)
        assert scrape(node) == set()

    check()


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=300),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5),
    max_leaves=30,
)


@settings(max_examples=300)
@given(status=json_values, metadata=json_values, reserved=st.lists(json_values | st.fixed_dictionaries(
    {"resource": st.sampled_from(["pods", "jobs", 3]), "name": json_values}), max_size=60))
def test_holders_never_fail_on_odd_claims(status: Any, metadata: Any, reserved: list[Any]) -> None:
    for claim in ({"status": status, "metadata": metadata},
                  {"status": {"reservedFor": reserved}, "metadata": {"labels": metadata}}):
        pods, app = holders(claim)
        assert len(pods) <= MAX_PODS_PER_CLAIM and len(set(pods)) == len(pods)
        assert all(isinstance(p, str) and 0 < len(p) <= MAX_LABEL_CHARS for p in pods)
        assert isinstance(app, str) and len(app) <= MAX_LABEL_CHARS


def test_series_are_capped() -> None:
    devices = tuple(PreparedDevice(("r",), "pool", f"d{i}", ("x",)) for i in range(8))
    claims = [PreparedClaim(f"u{i}", "ns", f"c{i}", devices, {}, tuple(f"p{j}" for j in range(32)))
              for i in range(100)]
    series = allocated_series(claims, {"pool": SIM})
    assert len(series) == MAX_SERIES
    assert series[0] == (SIM, "d0", "ns", "p0", "", "")
    assert allocated_series(claims[:1], {})[0][0] == "pool"  # a pool no longer configured: its name
