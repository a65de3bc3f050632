"""kubeaccel's own DRA driver passes ``dra check`` with no WARN when the checker starts first (the
driver-first order is ``test_cluster.py::test_checker_passes_our_driver``): the checker waits for
the registration socket and for the slices, as the kubelet and the scheduler would."""

from __future__ import annotations

import asyncio
import shutil

import pytest
from dra.node import DRIVER, make_node
from fixtures.cluster import LocalCluster

from kubeaccel.conformance import Result
from kubeaccel.dra.checker import Report, run_checks
from kubeaccel.dra.daemon import KubeAccess

pytestmark = [pytest.mark.cluster, pytest.mark.slow]


def test_our_driver_started_after_the_checker_passes_with_no_warning(cluster: LocalCluster) -> None:
    node_name = cluster.nodes[-1]
    node = make_node(publish=True, access=KubeAccess(cluster.kubeconfig), node=node_name, withdraw=True)
    ns = cluster.create_namespace("drafirst")

    async def scenario() -> Report:
        checking = asyncio.ensure_future(run_checks(
            node.options.registry_dir, node=node_name, namespace=ns, kubeconfig=cluster.kubeconfig,
            cdi_dir=node.options.cdi_dir, timeout=20))
        await asyncio.sleep(1.0)
        await asyncio.to_thread(node.start)
        return await checking

    try:
        report = asyncio.run(scenario())
    finally:
        node.stop()
        shutil.rmtree(node.base, ignore_errors=True)
    table = "\n".join(f"{s.name}: {s.result} {s.detail}" for s in report.steps)
    assert report.driver == DRIVER
    assert [s.result for s in report.steps] == [Result.PASS] * len(report.steps), table
