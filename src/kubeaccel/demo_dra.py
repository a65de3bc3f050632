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
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeaccel.demo import (
    APP_IN_IMAGE,
    CHART,
    PLUGIN_NAMESPACE,
    RELEASE,
    RESOURCE,
    SPARK_RESOURCE,
    DemoOptions,
    NodeRow,
    PluginPod,
    Report,
    _node_rows,
    _plugin_pods,
    _pod_row,
    _repo_root,
    _timed,
    allocations,
    allocations_table,
    app_confs,
    build_image,
    cleanup,
    helm,
    keep_hint,
    nodes_table,
    pi_value,
    plugin_pod_problem,
    pod_table,
    print_outcome,
    task_reports,
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

    deadline = time.monotonic() + timeout
    while True:
        pods = [p for p in _plugin_pods(api, node, DRA_RELEASE) if p.spec.containers[0].image == image]
        for pod in pods:
            if (problem := plugin_pod_problem(pod, image)) is not None:
                raise problem
        rows = [_pod_row(p) for p in pods]
        devices = slice_devices(kdra.list_slices(kube, driver=DRIVER, node=node))
        if len(devices) == want and any(r.ready for r in rows):
            return next(r for r in rows if r.ready)
        if time.monotonic() > deadline:
            state = ", ".join(f"{r.name} ready={r.ready}" for r in rows) or "no DRA driver pod on the node"
            raise UnavailableError(
                f"node {node} did not get {want} devices in ResourceSlices of {DRIVER} within {timeout:.0f}s "
                f"(has {len(devices)}; {state})",
                hint=f"kubectl -n {PLUGIN_NAMESPACE} logs daemonset/{DRA_RELEASE}",
            )
        time.sleep(0.5)


def _refuse_device_plugin(kubeconfig: Path, api: Any, node: str) -> None:
    """A resource is served by one API on a node: the device-plugin release must not serve it too."""
    import json

    listed = json.loads(helm(kubeconfig, "list", "-n", PLUGIN_NAMESPACE, "-o", "json", "--filter", f"^{RELEASE}$"))
    if listed or _plugin_pods(api, node, RELEASE):
        raise KubeaccelError(
            f"the device plugin (Helm release {RELEASE}) serves {RESOURCE} on node {node}; "
            "the DRA demo serves the same devices through DRA",
            hint=f"helm uninstall {RELEASE} -n {PLUGIN_NAMESPACE} --kubeconfig {kubeconfig}",
        )


def install_dra(kubeconfig: Path, values: dict[str, Any], report: Report) -> bool:
    """``helm upgrade --install`` the chart in DRA mode; True when the release is new."""
    import json

    import yaml

    listed = json.loads(helm(kubeconfig, "list", "-n", PLUGIN_NAMESPACE, "-o", "json", "--filter",
                             f"^{DRA_RELEASE}$"))  # fmt: skip
    report(f"{'upgrading' if listed else 'installing'} the chart in DRA mode (Helm release {DRA_RELEASE})")
    helm(kubeconfig, "upgrade", "--install", DRA_RELEASE, str(_repo_root() / CHART), "-n", PLUGIN_NAMESPACE,
         "--values", "-", stdin=yaml.safe_dump(values))  # fmt: skip
    return not listed


def run_demo_dra(options: DemoOptions, report: Report, *, numa: int = 1) -> DraDemoResult:
    """Bring everything up with the DRA driver, run the example app, collect what it saw."""
    import yaml

    from kubeaccel.cluster import api as cluster_api
    from kubeaccel.cluster import nodepaths
    from kubeaccel.cluster.images import import_archive
    from kubeaccel.cluster.layout import Layout
    from kubeaccel.cluster.lifecycle import down, up
    from kubeaccel.cluster.realnode import containerd_address
    from kubeaccel.cluster.spec import DEFAULT_NODE_RESOURCES, ClusterSpec
    from kubeaccel.kube import dra as kdra
    from kubeaccel.kube.client import Kube
    from kubeaccel.kube.tenancy import create_tenant
    from kubeaccel.spark.conf import SubmitRequest
    from kubeaccel.spark.manage import logs
    from kubeaccel.spark.submit import submit, wait

    timings: dict[str, float] = {}
    with _timed(timings, "image"):
        archive, image = build_image(report, "spark")
        plugin_archive, plugin_image = build_image(report, "plugin")
    report("bringing up the local cluster with a real node")
    spec = ClusterSpec(state_dir=options.state_dir, nodes=options.kwok_nodes, node_resources=DEFAULT_NODE_RESOURCES,
                       real_node=True)  # fmt: skip
    with _timed(timings, "cluster"):
        info = up(spec, progress=report)
    if not info.real_node:
        raise UnavailableError("the cluster came up without its real node", hint="see `kubeaccel cluster status`")
    started_cluster = not info.already_running
    installed = False
    try:
        api = cluster_api.client(info.kubeconfig)
        _refuse_device_plugin(info.kubeconfig, api, info.real_node)
        report(f"importing {plugin_image} and {image} into the node's containerd")
        with _timed(timings, "import"):
            for path in (plugin_archive, archive):
                import_archive(path, containerd_address(Layout(options.state_dir)))
        paths = nodepaths.node_paths(options.state_dir)
        values = dra_values(options.devices, plugin_image, info.real_node, kubelet_dir=paths.kubelet_root,
                            cdi_dir=paths.cdi, state_dir=paths.root / "kubeaccel-dra", server=info.server)
        kube = Kube.connect(kubeconfig=str(info.kubeconfig))
        with _timed(timings, "driver"):
            installed = install_dra(info.kubeconfig, values, report)
            driver_pod = wait_for_slices(kube, api, info.real_node, options.devices, plugin_image)
        report(f"node {info.real_node}: {options.devices} devices in ResourceSlices (DRA driver pod {driver_pod.name})")
        devices = slice_devices(kdra.list_slices(kube, driver=DRIVER, node=info.real_node))

        # Privileged Pod Security: the driver runs on the host network (see app_confs), which baseline forbids.
        create_tenant(kube, TENANT, {QUOTA_KEY: str(options.devices)}, pod_security="privileged")
        work = options.state_dir / "demo-dra"
        work.mkdir(parents=True, exist_ok=True)
        template = work / "driver-template.yaml"
        pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}}
        template.write_text(yaml.safe_dump(pod))
        confs = dra_app_confs(numa, namespace=TENANT, image=image, node=info.real_node, server=info.server,
                              template=template, executors=options.executors)  # fmt: skip
        request = SubmitRequest(app_resource=APP_IN_IMAGE, master=f"k8s://{info.server}",
                                app_args=(str(options.partitions), SPARK_RESOURCE),
                                name=f"accel-pi-dra-{uuid.uuid4().hex[:4]}", conf=confs)  # fmt: skip
        with _timed(timings, "app"), _ClaimWatcher(kube, TENANT) as watcher:
            sid = submit(request, kube=kube)
            report(f"submitted {sid}")
            code = wait(kube, sid, on_change=lambda phase: report(f"driver {phase}"), timeout=options.timeout)
        driver_log = "".join(line if line.endswith("\n") else line + "\n" for line in logs(kube, str(sid)))
        reports = task_reports(driver_log)
        result = DraDemoResult(
            kubeconfig=info.kubeconfig, submission_id=str(sid),
            phase="Succeeded" if code == 0 else f"Failed (exit {code})", pi=pi_value(driver_log),
            nodes=_node_rows(api, info.real_node), driver_pod=driver_pod, devices=devices,
            claims=sorted(watcher.seen.values(), key=lambda r: r.pod), allocations=allocations(reports),
            tasks=reports, numa=numa, driver_log_tail="\n".join(driver_log.splitlines()[-20:]),
            kept=options.keep, timings=timings,
        )  # fmt: skip
    except BaseException:
        if not options.keep:
            cleanup(DRA_RELEASE, info.kubeconfig if installed else None, down if started_cluster else None,
                    options.state_dir, report)  # fmt: skip
        raise
    if options.keep:
        result.cleanup_hint = keep_hint(DRA_RELEASE, info.kubeconfig, options.state_dir)
    else:
        cleanup(DRA_RELEASE, info.kubeconfig if installed else None, down if started_cluster else None,
                options.state_dir, report)  # fmt: skip
    return result


def render_dra(result: DraDemoResult) -> None:
    """The closing tables: nodes, the DRA driver pod, slice devices, claims, allocations, the result."""
    from rich.table import Table

    from kubeaccel.cliopts import console, print_table

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
