"""Real Spark: a standalone master and worker from ``pyspark`` whose worker discovers its devices
with ``kubeaccel-discover``, and an app whose tasks must receive exactly those addresses.

The worker's environment is what our plugin daemon's ``Allocate`` returned for a container, asked
over its real unix socket by a kubelet stand-in; the allocated devices (sim-1 and sim-3, indices 1
and 3) are deliberately not the first ones, so a discovery that guessed or enumerated would be caught.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path

import pytest
from e2e.apps import EXAMPLE_APP, pi_estimate, task_reports
from fixtures.plugin import PluginDaemon

from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.kubelet import KubeletStandIn
from kubeaccel.spark.discover import write_script

pytestmark = [pytest.mark.spark, pytest.mark.slow]

ALLOCATED = ["1", "3"]


def allocate(plugin: PluginDaemon, device_ids: list[str]) -> dict[str, str]:
    """The env the daemon's Allocate returns for one container holding ``device_ids``."""

    async def main() -> dict[str, str]:
        async with KubeletStandIn(plugin.socket_dir) as kubelet:
            _, registration = await kubelet.next_registration(timeout=10)
            async with kubelet.plugin_channel(registration.endpoint) as channel:
                request = pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=device_ids)])
                response = await pb_grpc.DevicePluginStub(channel).Allocate(request, timeout=5)
        return dict(response.container_responses[0].envs)

    return asyncio.run(main())


def test_tasks_receive_exactly_the_allocated_devices(  # type: ignore[no-untyped-def]
    spark_standalone, plugin_daemon: PluginDaemon, tmp_path: Path
) -> None:
    allocated_env = allocate(plugin_daemon, ["sim-3", "sim-1"])
    assert allocated_env["KUBEACCEL_DEVICES_EXAMPLE_COM_SIM"] == ",".join(ALLOCATED)
    script = tmp_path / "discover-sim.sh"
    write_script(str(script), "example.com/sim")
    cluster = spark_standalone.start(
        worker_env=allocated_env,
        worker_confs={
            "spark.worker.resource.sim.amount": str(len(ALLOCATED)),
            "spark.worker.resource.sim.discoveryScript": str(script),
        },
        cores=2,
    )
    out = cluster.submit(
        EXAMPLE_APP,
        ["8", "sim"],
        {
            "spark.executor.cores": "1",
            "spark.cores.max": "2",
            "spark.executor.memory": "512m",
            "spark.executor.resource.sim.amount": "1",
            "spark.task.resource.sim.amount": "1",
            # Both executors must be up before tasks run, so both devices get used.
            "spark.scheduler.minRegisteredResourcesRatio": "1.0",
            "spark.scheduler.maxRegisteredResourcesWaitingTime": "120s",
        },
    )
    assert abs(pi_estimate(out) - 3.14159) < 0.05
    reports = task_reports(out)
    assert sorted(r["partition"] for r in reports) == list(range(8))
    by_executor: dict[str, set[str]] = defaultdict(set)
    for report in reports:
        assert list(report["resources"]) == ["sim"], report
        (address,) = report["resources"]["sim"]  # exactly one per task
        assert address in ALLOCATED, report
        by_executor[report["executor"]].add(address)
    # Two executors, each pinned to one of the two allocated devices, together using both.
    assert len(by_executor) == 2, dict(by_executor)
    assert all(len(addresses) == 1 for addresses in by_executor.values()), dict(by_executor)
    assert sorted(set().union(*by_executor.values())) == ALLOCATED
    # And the worker advertised exactly what the discovery script printed.
    assert "sim -> [name: sim, addresses: 1,3]" in cluster.daemons[-1].text()


def test_worker_with_nothing_allocated_fails_with_our_message(spark_standalone, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    script = tmp_path / "discover-sim.sh"
    write_script(str(script), "example.com/sim")
    worker = spark_standalone.start_failing_worker(
        worker_env={},
        worker_confs={
            "spark.worker.resource.sim.amount": "1",
            "spark.worker.resource.sim.discoveryScript": str(script),
        },
    )
    log = worker.text()
    assert "no example.com/sim devices allocated to this container" in log, log[-4000:]
