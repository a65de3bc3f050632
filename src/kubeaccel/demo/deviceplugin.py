"""``kubeaccel demo``: the device plugin serving simulated VEs to the real node, and the Pi app using them.

The device plugin is deployed as users deploy it, through the Helm chart
(``deploy/helm/kubeaccel-device-plugin``) as a DaemonSet pod serving simulated ``nec.com/ve`` devices to
the real node's kubelet; the example app (``deploy/spark/examples/accel_pi.py``) is submitted with
executor VE requests, and its tasks report the devices they received. Steps: images → cluster → import →
chart → plugin ready → tenant + app → tables of nodes, the plugin pod, devices and allocations.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeaccel.cliopts import console, print_table
from kubeaccel.demo.common import (
    PLUGIN_NAMESPACE,
    RELEASE,
    RESOURCE,
    DemoOptions,
    NodeRow,
    PluginPod,
    Report,
    Session,
    allocations_table,
    app_confs,
    build_images,
    driver_template,
    import_images,
    install_release,
    node_rows,
    nodes_table,
    pod_table,
    print_outcome,
    ready_release_pods,
    run_app,
    run_steps,
    start_cluster,
    wait_until,
)
from kubeaccel.errors import UnavailableError

TENANT = "kubeaccel-demo"


@dataclass
class DemoResult:
    kubeconfig: Path
    submission_id: str
    phase: str
    pi: float | None
    nodes: list[NodeRow]
    plugin_pod: PluginPod
    devices: list[tuple[str, str, str, str]]  # id, index, NUMA node, health
    allocations: dict[str, list[str]]  # executor -> VE addresses its tasks held
    tasks: list[dict[str, Any]]
    driver_log_tail: str
    kept: bool
    cleanup_hint: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def plugin_values(devices: int, image: str, node: str) -> dict[str, Any]:
    """The chart values of the demo: simulated VEs (plus the chart's optional nvidia), on the real node only."""
    repository, _, tag = image.rpartition(":")
    resources = [
        {"name": RESOURCE, "backend": "simulated", "count": devices, "numaNodes": 2},
        # As in the chart's default: skipped on a node without the NVIDIA driver (a mixed fleet's config).
        {"name": "nvidia.com/gpu", "backend": "nvidia", "optional": True},
    ]
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},  # imported, never pulled
        "config": {"resources": resources},
        # The kwok nodes are simulated: no kubelet there to register with.
        "nodeSelector": {"kubernetes.io/hostname": node},
    }


def wait_for_plugin(
    api: Any, node: str, want: int, image: str, *, release: str = RELEASE, timeout: float = 180
) -> PluginPod:
    """Until the node advertises ``want`` devices from a ready pod of ``release`` running ``image``."""
    from lightkube.resources.core_v1 import Node

    seen: dict[str, Any] = {"allocatable": "0", "rows": []}

    def ready() -> PluginPod | None:
        found = api.get(Node, node)
        seen["allocatable"] = (found.status.allocatable or {}).get(RESOURCE, "0") if found.status else "0"
        seen["rows"] = rows = ready_release_pods(api, node, release, image)
        if str(seen["allocatable"]) == str(want):
            return next((r for r in rows if r.ready), None)
        return None

    def failed() -> UnavailableError:
        state = ", ".join(f"{r.name} ready={r.ready}" for r in seen["rows"]) or "no plugin pod on the node"
        return UnavailableError(
            f"node {node} did not show {RESOURCE}={want} within {timeout:.0f}s (has {seen['allocatable']}; {state})",
            hint=f"kubectl -n {PLUGIN_NAMESPACE} describe daemonset -l app.kubernetes.io/instance={release}",
        )

    return wait_until(ready, timeout, failed)


def served_devices(config: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """The devices the plugin pod serves, from the same config (the simulated backend is deterministic)."""
    from kubeaccel.devices.config import build_backends, parse_config

    rows = []
    for backend in build_backends(parse_config(config)):
        try:
            for device in backend.scan().values():
                numa = "-" if device.numa_node is None else str(device.numa_node)
                rows.append((device.id, device.index, numa, str(device.health)))
        finally:
            backend.close()
    return rows


def _steps(session: Session) -> DemoResult:
    from kubeaccel.cluster.spec import DEFAULT_NODE_RESOURCES
    from kubeaccel.kube.tenancy import create_tenant

    options = session.options
    images = build_images(session)
    start_cluster(session, {**DEFAULT_NODE_RESOURCES, RESOURCE: "8"})
    import_images(session, images)
    values = plugin_values(options.devices, images.plugin, session.node)
    api = session.api()
    with session.timed("plugin"):
        install_release(session, RELEASE, values, "the device-plugin chart")
        plugin_pod = wait_for_plugin(api, session.node, options.devices, images.plugin)
    session.report(f"node {session.node} advertises {RESOURCE}: {options.devices} (plugin pod {plugin_pod.name})")
    kube = session.kube()
    # Privileged Pod Security: the driver runs on the host network (see app_confs), which baseline forbids.
    create_tenant(kube, TENANT, {RESOURCE: str(options.devices)}, pod_security="privileged")
    confs = app_confs(namespace=TENANT, image=images.spark, node=session.node, server=session.info.server,
                      template=driver_template(session, "demo"), executors=options.executors)  # fmt: skip
    run = run_app(session, kube, confs, "accel-pi")
    return DemoResult(
        kubeconfig=session.kubeconfig, submission_id=run.submission_id, phase=run.phase, pi=run.pi,
        nodes=node_rows(api, session.node), plugin_pod=plugin_pod, devices=served_devices(values["config"]),
        allocations=run.allocations, tasks=run.tasks, driver_log_tail=run.driver_log_tail, kept=options.keep,
        timings=session.timings,
    )  # fmt: skip


def run_demo(options: DemoOptions, report: Report) -> DemoResult:
    """Bring everything up, run the example app, collect what it saw; clean up unless ``keep``."""
    result, hint = run_steps(Session(options, report), _steps, RELEASE)
    result.cleanup_hint = hint
    return result


def render(result: DemoResult) -> None:
    """The closing tables: nodes, the plugin pod, devices, allocations, and the app's result."""
    from rich.table import Table

    devices = Table(title=f"Devices on the real node ({RESOURCE}, simulated)")
    for column in ("device ID", "index", "NUMA", "health"):
        devices.add_column(column)
    for device in result.devices:
        devices.add_row(*device)
    for table in (
        nodes_table("Nodes", result.nodes),
        pod_table(f"Device plugin: DaemonSet pod in {PLUGIN_NAMESPACE} (Helm release {RELEASE})", result.plugin_pod),
        devices,
        allocations_table(result.allocations, result.tasks),
    ):
        print_table(table)
    print_outcome(console(), result)
