"""``kubeaccel demo --dra``: the same demo with the VEs served by the DRA driver, not the device plugin.

The Helm chart in ``mode: dra`` runs ``kubeaccel dra run`` (from the plugin image) as a DaemonSet pod
on the real node: it publishes simulated ``nec.com/ve`` devices as ResourceSlices, and the node
itself advertises no ``nec.com/ve``. The example app is submitted with
``spark.kubeaccel.dra.enabled=true`` and a NUMA selector: ``kubeaccel spark submit`` creates the
executors' ResourceClaimTemplate (owned by the driver pod), the scheduler allocates VEs of NUMA node
``numa`` to each executor's claim, the driver prepares them for the kubelet (a CDI spec per claim),
and the discovery script hands the tasks exactly those VEs. The chart's MutatingAdmissionPolicy
removes the ``nec.com/ve`` limit Spark adds to executors, so each gets its VEs once.

Ends with tables of the nodes, the DRA driver pod, the ResourceSlice devices, the claims the
executors got and the allocations Spark tasks saw. Cleanup as ``kubeaccel demo``: what the demo
started goes, unless ``--keep``.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeaccel.cliopts import console, print_table
from kubeaccel.demo.common import (
    PLUGIN_NAMESPACE,
    RELEASE,
    RESOURCE,
    SPARK_RESOURCE,
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
    plugin_pods,
    pod_table,
    print_outcome,
    ready_release_pods,
    release_exists,
    run_app,
    run_steps,
    start_cluster,
    wait_until,
)
from kubeaccel.errors import KubeaccelError, UnavailableError

DRA_RELEASE = "kubeaccel-dra"
DRIVER = "dra.kubeaccel.io"
TENANT = "kubeaccel-demo-dra"
DEVICE_CLASS = "ve.nec.com"
QUOTA_KEY = f"{DEVICE_CLASS}.deviceclass.resource.k8s.io/devices"


@dataclass
class SliceDevice:
    slice: str
    device: str
    index: str
    numa: str
    tainted: bool


@dataclass
class ClaimRow:
    pod: str
    claim: str
    devices: list[str]


@dataclass
class DraDemoResult:
    kubeconfig: Path
    submission_id: str
    phase: str
    pi: float | None
    nodes: list[NodeRow]
    driver_pod: PluginPod
    devices: list[SliceDevice]
    claims: list[ClaimRow]
    allocations: dict[str, list[str]]  # executor -> VE addresses its tasks held
    tasks: list[dict[str, Any]]
    numa: int
    driver_log_tail: str
    kept: bool
    cleanup_hint: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def dra_values(devices: int, image: str, node: str, *, kubelet_dir: Path, cdi_dir: Path, state_dir: Path,
               server: str) -> dict[str, Any]:
    """The chart values: DRA mode, simulated VEs on two NUMA nodes, the real node's kubelet paths.

    The local cluster has no Service network, so the daemon reaches the API server on the host's
    address; its CDI specs go to the node's own CDI dir (containerd reads it) and its checkpoint
    under the cluster's state dir, so nothing of the demo stays on the host."""
    repository, _, tag = image.rpartition(":")
    return {
        "mode": "dra",
        "fullnameOverride": DRA_RELEASE,
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "config": {"resources": [{"name": RESOURCE, "backend": "simulated", "count": devices, "numaNodes": 2}]},
        "kubeletDir": str(kubelet_dir),
        "cdi": {"specDir": str(cdi_dir)},
        "dra": {"driverName": DRIVER, "stateDir": str(state_dir), "apiServer": server},
        "nodeSelector": {"kubernetes.io/hostname": node},
    }


def dra_app_confs(numa: int, **common: Any) -> dict[str, str]:
    """The demo app's confs with the executors' VEs claimed through DRA, from one NUMA node."""
    return {
        **app_confs(**common),
        "spark.kubeaccel.dra.enabled": "true",
        "spark.kubeaccel.dra.driverName": DRIVER,
        f"spark.kubeaccel.dra.executor.{SPARK_RESOURCE}.numaNode": str(numa),
    }


def slice_devices(slices: list[dict[str, Any]]) -> list[SliceDevice]:
    rows = []
    for item in slices:
        for device in item["spec"].get("devices") or []:
            attributes = device.get("attributes") or {}

            def attr(name: str, attributes: dict[str, Any] = attributes) -> str:
                value = attributes.get(name) or {}
                return str(next(iter(value.values()), "-")) if value else "-"

            rows.append(SliceDevice(item["metadata"]["name"], device["name"], attr("index"), attr("numaNode"),
                                    bool(device.get("taints"))))
    return sorted(rows, key=lambda r: r.device)


def claim_rows(claims: list[dict[str, Any]]) -> list[ClaimRow]:
    """Allocated claims: the pod that owns each, and the devices of our driver allocated to it."""
    rows = []
    for claim in claims:
        results = (((claim.get("status") or {}).get("allocation") or {}).get("devices") or {}).get("results") or []
        owners = [o["name"] for o in claim["metadata"].get("ownerReferences") or [] if o.get("kind") == "Pod"]
        devices = sorted(r["device"] for r in results if r.get("driver") == DRIVER)
        if devices:
            rows.append(ClaimRow(owners[0] if owners else "-", claim["metadata"]["name"], devices))
    return rows


class _ClaimWatcher:
    """Records the executors' allocated claims while the app runs (they go with the executor pods)."""

    def __init__(self, kube: Any, namespace: str) -> None:
        self._kube, self._namespace = kube, namespace
        self.seen: dict[str, ClaimRow] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="claims", daemon=True)

    def __enter__(self) -> _ClaimWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        from lightkube.resources.resource_v1 import ResourceClaim

        while not self._stop.wait(1.0):
            try:
                for row in claim_rows(self._kube.list_raw(ResourceClaim, self._namespace)):
                    self.seen[row.claim] = row
            except KubeaccelError:
                continue  # a transient API error: the next round sees the claims again


def wait_for_slices(kube: Any, api: Any, node: str, want: int, image: str, *, timeout: float = 180) -> PluginPod:
    """Until the DRA driver pod is ready and our ResourceSlices on ``node`` carry ``want`` devices."""
    from kubeaccel.kube import dra as kdra

    seen: dict[str, Any] = {"devices": 0, "rows": []}

    def ready() -> PluginPod | None:
        seen["rows"] = rows = ready_release_pods(api, node, DRA_RELEASE, image)
        seen["devices"] = len(slice_devices(kdra.list_slices(kube, driver=DRIVER, node=node)))
        return next((r for r in rows if r.ready), None) if seen["devices"] == want else None

    def failed() -> UnavailableError:
        state = ", ".join(f"{r.name} ready={r.ready}" for r in seen["rows"]) or "no DRA driver pod on the node"
        return UnavailableError(
            f"node {node} did not get {want} devices in ResourceSlices of {DRIVER} within {timeout:.0f}s "
            f"(has {seen['devices']}; {state})",
            hint=f"kubectl -n {PLUGIN_NAMESPACE} logs daemonset/{DRA_RELEASE}",
        )

    return wait_until(ready, timeout, failed)


def refuse_device_plugin(kubeconfig: Path, api: Any, node: str) -> None:
    """A resource is served by one API on a node: the device-plugin release must not serve it too."""
    if release_exists(kubeconfig, RELEASE) or plugin_pods(api, node, RELEASE):
        raise KubeaccelError(
            f"the device plugin (Helm release {RELEASE}) serves {RESOURCE} on node {node}; "
            "the DRA demo serves the same devices through DRA",
            hint=f"helm uninstall {RELEASE} -n {PLUGIN_NAMESPACE} --kubeconfig {kubeconfig}",
        )


def _steps(session: Session, numa: int) -> DraDemoResult:
    from kubeaccel.cluster import nodepaths
    from kubeaccel.cluster.spec import DEFAULT_NODE_RESOURCES
    from kubeaccel.kube import dra as kdra
    from kubeaccel.kube.tenancy import create_tenant

    options = session.options
    images = build_images(session)
    start_cluster(session, DEFAULT_NODE_RESOURCES)
    api = session.api()
    refuse_device_plugin(session.kubeconfig, api, session.node)
    import_images(session, images)
    paths = nodepaths.node_paths(options.state_dir)
    values = dra_values(options.devices, images.plugin, session.node, kubelet_dir=paths.kubelet_root,
                        cdi_dir=paths.cdi, state_dir=paths.root / "kubeaccel-dra", server=session.info.server)
    kube = session.kube()
    with session.timed("driver"):
        install_release(session, DRA_RELEASE, values, "the chart in DRA mode")
        driver_pod = wait_for_slices(kube, api, session.node, options.devices, images.plugin)
    session.report(f"node {session.node}: {options.devices} devices in slices (DRA driver pod {driver_pod.name})")
    devices = slice_devices(kdra.list_slices(kube, driver=DRIVER, node=session.node))
    # Privileged Pod Security: the driver runs on the host network (see app_confs), which baseline forbids.
    create_tenant(kube, TENANT, {QUOTA_KEY: str(options.devices)}, pod_security="privileged")
    confs = dra_app_confs(numa, namespace=TENANT, image=images.spark, node=session.node, server=session.info.server,
                          template=driver_template(session, "demo-dra"), executors=options.executors)  # fmt: skip
    watcher = _ClaimWatcher(kube, TENANT)
    run = run_app(session, kube, confs, "accel-pi-dra", during=watcher)
    return DraDemoResult(
        kubeconfig=session.kubeconfig, submission_id=run.submission_id, phase=run.phase, pi=run.pi,
        nodes=node_rows(api, session.node), driver_pod=driver_pod, devices=devices,
        claims=sorted(watcher.seen.values(), key=lambda r: r.pod), allocations=run.allocations,
        tasks=run.tasks, numa=numa, driver_log_tail=run.driver_log_tail, kept=options.keep, timings=session.timings,
    )  # fmt: skip


def run_demo_dra(options: DemoOptions, report: Report, *, numa: int = 1) -> DraDemoResult:
    """Bring everything up with the DRA driver, run the example app, collect what it saw."""
    result, hint = run_steps(Session(options, report), lambda session: _steps(session, numa), DRA_RELEASE)
    result.cleanup_hint = hint
    return result


def render_dra(result: DraDemoResult) -> None:
    """The closing tables: nodes, the DRA driver pod, slice devices, claims, allocations, the result."""
    from rich.table import Table

    slices = Table(title=f"ResourceSlice devices on the real node ({RESOURCE}, simulated)")
    for column in ("slice", "device", "index", "NUMA", "tainted"):
        slices.add_column(column)
    for device in result.devices:
        slices.add_row(device.slice, device.device, device.index, device.numa, "yes" if device.tainted else "no")
    claims = Table(title=f"Executor claims (DeviceClass {DEVICE_CLASS}, NUMA node {result.numa} selector)")
    for column in ("pod", "claim", "devices"):
        claims.add_column(column)
    for claim in result.claims:
        claims.add_row(claim.pod, claim.claim, ", ".join(claim.devices))
    for table in (
        nodes_table(f"Nodes ({RESOURCE} as an extended resource: none, it is served through DRA)", result.nodes),
        pod_table(f"DRA driver {DRIVER}: DaemonSet pod in {PLUGIN_NAMESPACE} (Helm release {DRA_RELEASE})",
                  result.driver_pod),
        slices,
        claims,
        allocations_table(result.allocations, result.tasks),
    ):
        print_table(table)
    print_outcome(console(), result)
