"""Per-device allocation labels from the kubelet's PodResources API.

A stand-in PodResources server speaks the real wire protocol (the kubelet's v1 field numbers,
checked in test_proto.py) on a unix socket; the daemon reads it on each scrape of /metrics.
Matrix: allocations of our resource appear as series and others' do not; a changed answer
replaces the series (a finished pod's disappear); a missing socket is silent; a socket nobody
answers on is logged once over many scrapes; the pure reduction is bounded and exact.
"""

from __future__ import annotations

import logging
import re
import shutil
import urllib.request
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from fixtures.plugin import SIM_RESOURCE, short_socket_dir, write_sim_config
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel.devices.config import load_config
from kubeaccel.plugin import podresources
from kubeaccel.plugin._generated import podresources_pb2 as pb
from kubeaccel.plugin._generated import podresources_pb2_grpc as pb_grpc
from kubeaccel.plugin.daemon import BackgroundDaemon, Daemon

SERIES = re.compile(r"^kubeaccel_device_allocated\{(.*)\} 1\.0$", re.MULTILINE)


def pod(namespace: str, name: str, containers: dict[str, list[tuple[str, list[str]]]]) -> pb.PodResources:
    return pb.PodResources(name=name, namespace=namespace, containers=[
        pb.ContainerResources(name=c, devices=[pb.ContainerDevices(resource_name=r, device_ids=ids) for r, ids in devs])
        for c, devs in containers.items()
    ])


class StandInKubelet(pb_grpc.PodResourcesListerServicer):
    """Answers List with whatever ``pods`` holds now (counts the calls)."""

    def __init__(self) -> None:
        self.pods: list[pb.PodResources] = []
        self.calls = 0

    def List(self, request: pb.ListPodResourcesRequest, context: grpc.ServicerContext) -> pb.ListPodResourcesResponse:
        self.calls += 1
        return pb.ListPodResourcesResponse(pod_resources=self.pods)


@pytest.fixture
def pod_resources_dir() -> Iterator[Path]:
    directory = short_socket_dir()
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def stand_in(pod_resources_dir: Path) -> Iterator[StandInKubelet]:
    servicer = StandInKubelet()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_PodResourcesListerServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix://{pod_resources_dir / 'kubelet.sock'}")
    server.start()
    yield servicer
    server.stop(None)


def _daemon(tmp_path: Path, socket: Path) -> Daemon:
    config = write_sim_config(tmp_path / "c.yaml", tmp_path / "s.json", tmp_path / "dev")
    return Daemon(lambda: load_config(config), short_socket_dir(), metrics_port=0, pod_resources_socket=socket)


def _series(port: int) -> set[str]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return set(SERIES.findall(text))


def _labels(resource: str, device: str, namespace: str, pod_name: str, container: str) -> str:
    return (f'container="{container}",device="{device}",namespace="{namespace}",pod="{pod_name}",'
            f'resource="{resource}"')


def test_allocations_become_series_and_follow_the_kubelet(
    tmp_path: Path, pod_resources_dir: Path, stand_in: StandInKubelet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(podresources, "MIN_INTERVAL_S", 0.0)
    stand_in.pods = [
        pod("spark", "driver", {"main": [(SIM_RESOURCE, ["sim-0", "sim-2"]), ("nvidia.com/gpu", ["GPU-1"])]}),
        pod("spark", "exec-1", {"main": [(SIM_RESOURCE, ["sim-1"])], "side": []}),
    ]
    daemon = _daemon(tmp_path, pod_resources_dir / "kubelet.sock")
    with BackgroundDaemon(daemon):
        assert daemon.metrics_port
        assert _series(daemon.metrics_port) == {
            _labels(SIM_RESOURCE, "sim-0", "spark", "driver", "main"),
            _labels(SIM_RESOURCE, "sim-2", "spark", "driver", "main"),
            _labels(SIM_RESOURCE, "sim-1", "spark", "exec-1", "main"),
        }
        stand_in.pods = [pod("spark", "exec-2", {"main": [(SIM_RESOURCE, ["sim-3"])]})]  # the others ended
        assert _series(daemon.metrics_port) == {_labels(SIM_RESOURCE, "sim-3", "spark", "exec-2", "main")}
        stand_in.pods = []
        assert _series(daemon.metrics_port) == set()


def test_scrapes_share_one_list_per_interval(
    tmp_path: Path, pod_resources_dir: Path, stand_in: StandInKubelet, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(podresources, "MIN_INTERVAL_S", 60.0)  # a loaded host may take seconds for 5 scrapes
    stand_in.pods = [pod("a", "p", {"c": [(SIM_RESOURCE, ["sim-0"])]})]
    daemon = _daemon(tmp_path, pod_resources_dir / "kubelet.sock")
    with BackgroundDaemon(daemon):
        assert daemon.metrics_port
        assert stand_in.calls == 0  # nothing is read until someone scrapes
        for _ in range(5):
            assert _series(daemon.metrics_port) == {_labels(SIM_RESOURCE, "sim-0", "a", "p", "c")}
        assert stand_in.calls == 1  # one List within MIN_INTERVAL_S serves every scrape


def test_a_missing_socket_is_silent(
    tmp_path: Path, pod_resources_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = _daemon(tmp_path, pod_resources_dir / "kubelet.sock")  # nothing there
    with caplog.at_level(logging.INFO, logger="kubeaccel.plugin.podresources"), BackgroundDaemon(daemon):
        assert daemon.metrics_port
        assert _series(daemon.metrics_port) == set()
    assert not [r for r in caplog.records if r.name == "kubeaccel.plugin.podresources"]


def test_an_unreachable_socket_is_logged_once(
    tmp_path: Path, pod_resources_dir: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(podresources, "MIN_INTERVAL_S", 0.0)
    dead = pod_resources_dir / "kubelet.sock"
    dead.write_text("")  # exists, but nobody listens: connection refused
    daemon = _daemon(tmp_path, dead)
    with caplog.at_level(logging.INFO, logger="kubeaccel.plugin.podresources"), BackgroundDaemon(daemon):
        assert daemon.metrics_port
        for _ in range(4):
            assert _series(daemon.metrics_port) == set()
    warnings = [r for r in caplog.records if r.name == "kubeaccel.plugin.podresources"]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert str(dead) in warnings[0].getMessage() and "UNAVAILABLE" in warnings[0].getMessage()
    assert len(warnings[0].getMessage()) < 1000


NAMES = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=300)


@settings(max_examples=100, deadline=None)
@given(
    pods=st.lists(st.tuples(NAMES, NAMES, st.dictionaries(NAMES, st.lists(st.tuples(
        st.sampled_from([SIM_RESOURCE, "other.com/x"]), st.lists(NAMES, max_size=4)), max_size=3), max_size=3)),
        max_size=5),
    limit=st.integers(min_value=0, max_value=8),
)
def test_allocations_are_exact_and_bounded(
    pods: list[tuple[str, str, dict[str, list[tuple[str, list[str]]]]]], limit: int
) -> None:
    response = pb.ListPodResourcesResponse(pod_resources=[pod(ns, name, cs) for ns, name, cs in pods])
    found, dropped = podresources.allocations(response, {SIM_RESOURCE}, limit=limit)
    cut = podresources.MAX_LABEL_CHARS
    every = {
        podresources.Allocation(SIM_RESOURCE, d[:cut], ns[:cut], name[:cut], c[:cut])
        for ns, name, cs in pods for c, devs in cs.items() for r, ids in devs if r == SIM_RESOURCE for d in ids
    }
    assert len(found) == len(set(found)) == min(limit, len(every))
    assert set(found) <= every
    assert len(found) + dropped >= len(every)
    assert all(len(v) <= cut for a in found for v in (a.device, a.namespace, a.pod, a.container))
