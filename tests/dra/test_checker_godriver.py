"""``dra check`` agrees with the kubelet (v1.37.2): a driver written the way helper-based drivers are
passes, with WARN where its answers are legal but weaker, in either start order.

The driver is ``tests/dra/godriver``, on the upstream kubelet-plugin helper
(``k8s.io/dynamic-resource-allocation/kubeletplugin`` v0.37.2), built by
``scripts/bootstrap.d/35-go-references.sh`` (a missing binary FAILS the test). What the helper does,
and what the checker must take as a kubelet does:
- ResourceSlices are published after registration (here 2 s later): waited for;
- an unknown claim fails the whole NodePrepareResources call: WARN (the kubelet never sends one);
- the registration socket is never re-created: the kubelet restart re-dials it, deleting nothing;
- a driver-wide CDI spec ("common", written at start) is named in every claim's CDI IDs and stays
  after unprepare: not a leftover of the claim;
- health as ``v1alpha1`` only (what helper-based drivers of v0.36 advertise) and as ``v1``;
  ``unsupported`` (UNIMPLEMENTED stream) is a SKIP.
Matrix: checker first (v1alpha1 health, publish delay) and driver first (v1 health), then the
``unsupported`` health variant; all against the real API server of the local cluster.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from fixtures.cluster import LocalCluster
from fixtures.goref import go_binary

from kubeaccel.cli import cli
from kubeaccel.conformance import Result
from kubeaccel.dra.checker import Report, run_checks

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

GO_DRIVER = "godriver.example.com"


@contextmanager
def _godriver(cluster: LocalCluster, base: Path, *flags: str) -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen([
        str(go_binary("tests/dra/godriver", "godriver")), "-driver", GO_DRIVER, "-node", cluster.nodes[0],
        "-kubeconfig", str(cluster.kubeconfig), "-registry-dir", str(base / "registry"),
        "-plugin-dir", str(base / "plugins"), "-cdi-dir", str(base / "cdi"), *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _base() -> Path:
    base = Path(tempfile.mkdtemp(prefix="kgd-"))  # short: unix socket paths
    for sub in ("registry", "plugins", "cdi"):
        (base / sub).mkdir()
    return base


def _table(report: Report) -> str:
    return "\n".join(f"{s.name}: {s.result} {s.detail}" for s in report.steps)


def _check(cluster: LocalCluster, base: Path, ns: str) -> Coroutine[Any, Any, Report]:
    return run_checks(base / "registry", node=cluster.nodes[0], namespace=ns, kubeconfig=cluster.kubeconfig,
                      cdi_dir=base / "cdi", timeout=15)


def _assert_helper_verdicts(report: Report, health: str) -> None:
    table = _table(report)
    verdicts = {s.name: s.result for s in report.steps}
    detail = {s.name: s.detail for s in report.steps}
    assert report.passed, table
    assert report.warned == ["unknown claim"], table
    assert "whole call failed" in detail["unknown claim"], table
    assert verdicts["kubelet restart: re-register"] is Result.PASS, table
    assert verdicts["health stream"] is Result.PASS and detail["health stream"].startswith(health), table
    assert "common" in detail["NodePrepareResources"], table  # the driver-wide spec is named ...
    assert verdicts["NodeUnprepareResources, twice"] is Result.PASS, table  # ... and not counted as a leftover
    assert report.driver == GO_DRIVER and report.service == "v1.DRAPlugin"


def test_helper_driver_started_after_the_checker(cluster: LocalCluster) -> None:
    base, ns = _base(), cluster.create_namespace("gdr")

    async def scenario() -> Report:
        checking = asyncio.ensure_future(_check(cluster, base, ns))
        await asyncio.sleep(1.0)  # the checker waits for a socket that is not there yet
        with _godriver(cluster, base, "-publish-delay", "2s", "-health", "v1alpha1"):
            return await checking

    try:
        report = asyncio.run(scenario())
    finally:
        shutil.rmtree(base, ignore_errors=True)
    _assert_helper_verdicts(report, "v1alpha1.DRAResourceHealth")
    left = json.loads(cluster.kubectl("get", "resourceclaims", "-n", ns, "-o", "json").stdout)["items"]
    assert left == []


def _wait_for_socket(base: Path, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while not any(p.is_socket() for p in (base / "registry").glob("*.sock")):
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert time.monotonic() < deadline, "the Go driver never registered"
        time.sleep(0.05)


def test_helper_driver_started_before_the_checker(cluster: LocalCluster) -> None:
    base, ns = _base(), cluster.create_namespace("gdr")
    try:
        with _godriver(cluster, base, "-health", "v1") as proc:
            _wait_for_socket(base, proc)
            report = asyncio.run(_check(cluster, base, ns))
            assert proc.poll() is None  # still serving after the checker's kubelet restart
    finally:
        shutil.rmtree(base, ignore_errors=True)
    _assert_helper_verdicts(report, "v1.DRAResourceHealth")


def test_helper_driver_without_health_support_skips_the_health_step(cluster: LocalCluster) -> None:
    base, ns = _base(), cluster.create_namespace("gdr")
    try:
        with _godriver(cluster, base, "-health", "unsupported") as proc:
            _wait_for_socket(base, proc)
            report = asyncio.run(_check(cluster, base, ns))
    finally:
        shutil.rmtree(base, ignore_errors=True)
    health = next(s for s in report.steps if s.name == "health stream")
    assert report.passed, _table(report)
    assert health.result is Result.SKIP and "UNIMPLEMENTED" in health.detail, _table(report)


def test_dra_check_json_carries_the_warning_and_exits_zero(cluster: LocalCluster) -> None:
    base, ns = _base(), cluster.create_namespace("gdr")
    try:
        with _godriver(cluster, base) as proc:
            _wait_for_socket(base, proc)
            result = CliRunner().invoke(cli, [
                "dra", "check", "--registry-dir", str(base / "registry"), "--node-name", cluster.nodes[0],
                "--namespace", ns, "--kubeconfig", str(cluster.kubeconfig), "--cdi-dir", str(base / "cdi"),
                "--timeout", "15", "--json"])
    finally:
        shutil.rmtree(base, ignore_errors=True)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["passed"] is True and data["failed"] == [] and data["warned"] == ["unknown claim"], data
    assert data["driver"] == GO_DRIVER
