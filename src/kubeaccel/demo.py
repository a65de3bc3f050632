"""``kubeaccel demo``: the README's main job on embedded defaults.

Orchestrates both halves from above (it is the only module besides the CLI allowed to): a local
cluster with a real node, the device plugin on simulated ``nec.com/ve`` devices registered with
that node's kubelet, the kubeaccel Spark image built and imported without a registry, and the
example app (``deploy/spark/examples/accel_pi.py``) submitted with executor VE requests, whose
tasks report the devices they received. Ends with tables of nodes, devices and allocations.

``run_demo`` is the core (a ``report`` callback for progress, a ``DemoResult`` back); ``demo`` is
the click command that adds rich output. A cluster that was already running is reused and left
running; one the demo started is taken down again unless ``--keep``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from kubeaccel.cluster import process
from kubeaccel.cluster.layout import Layout
from kubeaccel.errors import KubeaccelError, NotFoundError, UnavailableError

RESOURCE = "nec.com/ve"
SPARK_RESOURCE = "ve"
PLUGIN = "device-plugin"  # its PID file and log under <state dir>/demo/{run,logs}/
TENANT = "kubeaccel-demo"
REPORT_PREFIX = "kubeaccel-task-resources "
APP_IN_IMAGE = "local:///opt/kubeaccel/examples/accel_pi.py"
DISCOVERY_IN_IMAGE = "/usr/local/bin/kubeaccel-discover"
_PI_RE = re.compile(r"Pi is roughly (\d+\.\d+)")

Report = Callable[[str], None]


@dataclass(frozen=True)
class DemoOptions:
    state_dir: Path
    keep: bool = False
    devices: int = 4
    executors: int = 2
    partitions: int = 8
    kwok_nodes: int = 1
    timeout: float = 600.0


@dataclass
class NodeRow:
    name: str
    kind: str  # "real" or "simulated (kwok)"
    ready: bool
    capacity: str
    allocatable: str


@dataclass
class DemoResult:
    kubeconfig: Path
    submission_id: str
    phase: str
    pi: float | None
    nodes: list[NodeRow]
    devices: list[tuple[str, str, str, str]]  # id, index, NUMA node, health
    allocations: dict[str, list[str]]  # executor -> VE addresses its tasks held
    tasks: list[dict[str, Any]]
    driver_log_tail: str
    kept: bool
    cleanup_hint: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def task_reports(driver_log: str) -> list[dict[str, Any]]:
    """The example app's per-task reports, from its driver log."""
    for line in driver_log.splitlines():
        if line.startswith(REPORT_PREFIX):
            reports: list[dict[str, Any]] = json.loads(line[len(REPORT_PREFIX) :])
            return reports
    return []


def pi_value(driver_log: str) -> float | None:
    found = _PI_RE.search(driver_log)
    return float(found.group(1)) if found else None


def allocations(reports: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Executor -> the VE addresses its tasks held (sorted, unique)."""
    by_executor: dict[str, set[str]] = {}
    for report in reports:
        addresses = report.get("resources", {}).get(SPARK_RESOURCE, [])
        by_executor.setdefault(str(report.get("executor", "?")), set()).update(addresses)
    return {executor: sorted(addresses) for executor, addresses in sorted(by_executor.items())}


def app_confs(*, namespace: str, image: str, node: str, server: str, template: Path, executors: int) -> dict[str, str]:
    """The Spark confs of the demo app: VEs per executor, discovery by kubeaccel, pinned to the real node.

    The local control plane has no cluster DNS and serves on 127.0.0.1, so the driver runs on the
    host network and advertises its pod IP to executors (the image's entrypoint handles that).
    """
    return {
        "spark.kubernetes.namespace": namespace,
        "spark.kubernetes.authenticate.driver.serviceAccountName": "spark",
        "spark.kubernetes.container.image": image,
        "spark.kubernetes.container.image.pullPolicy": "Never",
        "spark.kubernetes.node.selector.kubernetes.io/hostname": node,
        "spark.kubernetes.driver.master": server,
        "spark.kubernetes.driver.podTemplateFile": str(template),
        "spark.kubernetes.driverEnv.KUBEACCEL_DRIVER_HOST": "pod-ip",
        "spark.kubernetes.driver.request.cores": "100m",
        "spark.kubernetes.executor.request.cores": "100m",
        "spark.driver.memory": "512m",
        "spark.executor.memory": "512m",
        "spark.executor.instances": str(executors),
        "spark.executor.cores": "1",
        f"spark.executor.resource.{SPARK_RESOURCE}.amount": "1",
        f"spark.executor.resource.{SPARK_RESOURCE}.vendor": RESOURCE.split("/", 1)[0],
        f"spark.executor.resource.{SPARK_RESOURCE}.discoveryScript": DISCOVERY_IN_IMAGE,
        f"spark.task.resource.{SPARK_RESOURCE}.amount": "1",
        "spark.scheduler.minRegisteredResourcesRatio": "1.0",
        "spark.scheduler.maxRegisteredResourcesWaitingTime": "300s",
    }


def _kubeaccel_command() -> list[str]:
    beside = Path(sys.executable).with_name("kubeaccel")
    return [str(beside)] if beside.exists() else [sys.executable, "-c", "from kubeaccel.cli import main; main()"]


def _image_builder() -> Path:
    import kubeaccel

    builder = Path(kubeaccel.__file__).resolve().parents[2] / "deploy" / "spark" / "build_image.py"
    if not builder.exists():
        raise NotFoundError(
            "the Spark image builder (deploy/spark/build_image.py) is not next to this kubeaccel",
            hint="run the demo from a clone of the kubeaccel repository (pip install -e .)",
        )
    return builder


def build_image(report: Report) -> tuple[Path, str]:
    """Build (or find cached) the kubeaccel Spark image archive; returns (archive, image name)."""
    report("building the kubeaccel Spark image (cached after the first time)")
    done = subprocess.run(
        [sys.executable, str(_image_builder()), "--json"], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise KubeaccelError(
            f"building the Spark image failed: {done.stderr.strip()[-1500:]}",
            hint="it needs root, apt-get and dpkg-deb (a Debian host); see docs/loop.md",
        )
    built = json.loads(done.stdout)
    return Path(built["archive"]), str(built["image"])


@dataclass
class PluginProcess:
    """The demo's ``kubeaccel plugin run``, supervised like the cluster's own processes (PID + start time)."""

    layout: Layout
    config: Path
    started: bool  # False when one left running by a ``--keep`` demo is reused

    @property
    def log(self) -> Path:
        return self.layout.log(PLUGIN)

    def running(self) -> bool:
        record = process.read_record(self.layout, PLUGIN)
        return record is not None and record.alive()

    def stop(self) -> None:
        process.stop_all(self.layout, grace=10, names=[PLUGIN])


def plugin_config(devices: int, state_file: Path) -> dict[str, Any]:
    resource = {"name": RESOURCE, "backend": "simulated", "count": devices, "numaNodes": 2}
    return {"resources": [{**resource, "stateFile": str(state_file)}]}


def start_plugin(work: Path, devices: int, report: Report) -> PluginProcess:
    """``kubeaccel plugin run`` on simulated VEs in the kubelet's device-plugin dir (reused if running)."""
    import yaml

    work.mkdir(parents=True, exist_ok=True)
    layout, config = Layout(work), work / "plugin.yaml"
    running = process.read_record(layout, PLUGIN)
    if running is not None and running.alive():
        report(f"device plugin already running (pid {running.pid})")
        return PluginProcess(layout, config, started=False)
    config.write_text(yaml.safe_dump(plugin_config(devices, work / "device-states.json")))
    report(f"starting the device plugin: {devices} simulated {RESOURCE} devices")
    process.start(layout, PLUGIN, [*_kubeaccel_command(), "plugin", "run", "--config", str(config)])
    return PluginProcess(layout, config, started=True)


def _node_rows(api: Any, real_node: str | None) -> list[NodeRow]:
    from lightkube.resources.core_v1 import Node

    rows = []
    for node in api.list(Node):
        status = node.status
        ready = any(c.type == "Ready" and c.status == "True" for c in (status.conditions or [])) if status else False
        capacity = (status.capacity or {}).get(RESOURCE, "0") if status else "0"
        allocatable = (status.allocatable or {}).get(RESOURCE, "0") if status else "0"
        kind = "real" if node.metadata.name == real_node else "simulated (kwok)"
        rows.append(NodeRow(node.metadata.name, kind, ready, str(capacity), str(allocatable)))
    return sorted(rows, key=lambda r: (r.kind != "real", r.name))


def _wait_for_allocatable(api: Any, node: str, want: int, plugin: PluginProcess, timeout: float = 90) -> None:
    from lightkube.resources.core_v1 import Node

    deadline = time.monotonic() + timeout
    while True:
        found = api.get(Node, node)
        allocatable = (found.status.allocatable or {}).get(RESOURCE, "0") if found.status else "0"
        if str(allocatable) == str(want):
            return
        if not plugin.running():
            raise UnavailableError(
                f"the device plugin exited: {plugin.log.read_text()[-1500:]}",
                hint=f"see {plugin.log}",
            )
        if time.monotonic() > deadline:
            raise UnavailableError(
                f"node {node} did not show {RESOURCE}={want} within {timeout:.0f}s (has {allocatable})",
                hint=f"see the plugin log {plugin.log} and the kubelet log in the cluster state dir",
            )
        time.sleep(1)


def _devices(config: Path) -> list[tuple[str, str, str, str]]:
    from kubeaccel.devices.config import build_backends, load_config

    rows = []
    for backend in build_backends(load_config(config)):
        try:
            for device in backend.scan().values():
                numa = "-" if device.numa_node is None else str(device.numa_node)
                rows.append((device.id, device.index, numa, str(device.health)))
        finally:
            backend.close()
    return rows


@contextmanager
def _timed(timings: dict[str, float], name: str) -> Iterator[None]:
    started = time.monotonic()
    try:
        yield
    finally:
        timings[name] = time.monotonic() - started


def run_demo(options: DemoOptions, report: Report) -> DemoResult:
    """Bring everything up, run the example app, collect what it saw; clean up unless ``keep``."""
    import yaml

    from kubeaccel.cluster import api as cluster_api
    from kubeaccel.cluster.images import import_archive
    from kubeaccel.cluster.layout import Layout
    from kubeaccel.cluster.lifecycle import down, up
    from kubeaccel.cluster.realnode import containerd_address
    from kubeaccel.cluster.spec import DEFAULT_NODE_RESOURCES, ClusterSpec
    from kubeaccel.kube.client import Kube
    from kubeaccel.kube.tenancy import create_tenant
    from kubeaccel.spark.conf import SubmitRequest
    from kubeaccel.spark.manage import logs
    from kubeaccel.spark.submit import submit, wait

    timings: dict[str, float] = {}
    with _timed(timings, "image"):
        archive, image = build_image(report)
    report("bringing up the local cluster with a real node")
    spec = ClusterSpec(
        state_dir=options.state_dir,
        nodes=options.kwok_nodes,
        node_resources={**DEFAULT_NODE_RESOURCES, RESOURCE: "8"},
        real_node=True,
    )
    with _timed(timings, "cluster"):
        info = up(spec, progress=report)
    if not info.real_node:
        raise UnavailableError("the cluster came up without its real node", hint="see `kubeaccel cluster status`")
    started_cluster = not info.already_running
    work = options.state_dir / "demo"
    plugin: PluginProcess | None = None
    try:
        report(f"importing {image} into the node's containerd")
        with _timed(timings, "import"):
            import_archive(archive, containerd_address(Layout(options.state_dir)))
        plugin = start_plugin(work, options.devices, report)
        api = cluster_api.client(info.kubeconfig)
        with _timed(timings, "plugin"):
            _wait_for_allocatable(api, info.real_node, options.devices, plugin)
        report(f"node {info.real_node} advertises {RESOURCE}: {options.devices}")

        kube = Kube.connect(kubeconfig=str(info.kubeconfig))
        create_tenant(kube, TENANT, {RESOURCE: str(options.devices)})
        template = work / "driver-template.yaml"
        pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}}
        template.write_text(yaml.safe_dump(pod))
        confs = app_confs(
            namespace=TENANT,
            image=image,
            node=info.real_node,
            server=info.server,
            template=template,
            executors=options.executors,
        )
        request = SubmitRequest(
            app_resource=APP_IN_IMAGE,
            master=f"k8s://{info.server}",
            app_args=(str(options.partitions), SPARK_RESOURCE),
            name=f"accel-pi-{uuid.uuid4().hex[:4]}",
            conf=confs,
        )
        with _timed(timings, "app"):
            sid = submit(request, kube=kube)
            report(f"submitted {sid}")
            code = wait(kube, sid, on_change=lambda phase: report(f"driver {phase}"), timeout=options.timeout)
        driver_log = "".join(line if line.endswith("\n") else line + "\n" for line in logs(kube, str(sid)))
        reports = task_reports(driver_log)
        result = DemoResult(
            kubeconfig=info.kubeconfig,
            submission_id=str(sid),
            phase="Succeeded" if code == 0 else f"Failed (exit {code})",
            pi=pi_value(driver_log),
            nodes=_node_rows(api, info.real_node),
            devices=_devices(plugin.config),
            allocations=allocations(reports),
            tasks=reports,
            driver_log_tail="\n".join(driver_log.splitlines()[-20:]),
            kept=options.keep,
            timings=timings,
        )
    except BaseException:
        if not options.keep:
            _cleanup(plugin, down if started_cluster else None, options.state_dir, report)
        raise
    if options.keep:
        result.cleanup_hint = (
            f"pkill -f 'plugin run --config {work / 'plugin.yaml'}'; "
            f"kubeaccel cluster down --state-dir {options.state_dir}"
        )
    else:
        _cleanup(plugin, down if started_cluster else None, options.state_dir, report)
    return result


def _cleanup(plugin: PluginProcess | None, down: Callable[[Path], Any] | None, state_dir: Path, report: Report) -> None:
    if plugin is not None and plugin.started:  # one a kept demo left running stays
        report("stopping the device plugin")
        plugin.stop()
    if down is not None:
        report("taking the cluster down")
        down(state_dir)


def render(result: DemoResult) -> None:
    """The closing tables: nodes, devices, allocations, and the app's result."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    nodes = Table(title="Nodes")
    for column in ("node", "kind", "ready", f"{RESOURCE} capacity", "allocatable"):
        nodes.add_column(column)
    for row in result.nodes:
        nodes.add_row(row.name, row.kind, "yes" if row.ready else "no", row.capacity, row.allocatable)
    devices = Table(title=f"Devices on the real node ({RESOURCE}, simulated)")
    for column in ("device ID", "index", "NUMA", "health"):
        devices.add_column(column)
    for device in result.devices:
        devices.add_row(*device)
    allocated = Table(title="Allocations seen by Spark tasks")
    for column in ("executor", f"{SPARK_RESOURCE} addresses", "tasks"):
        allocated.add_column(column)
    for executor, addresses in result.allocations.items():
        count = sum(1 for t in result.tasks if str(t.get("executor")) == executor)
        allocated.add_row(executor, ", ".join(addresses) or "-", str(count))
    for table in (nodes, devices, allocated):
        console.print(table)
    pi = f"{result.pi:.5f}" if result.pi is not None else "?"
    console.print(f"[bold]{result.submission_id}[/bold]: {result.phase}; Pi is roughly {pi}")
    console.print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    if result.kept:
        console.print(f"left running; kubeconfig: {result.kubeconfig}\nto stop: {result.cleanup_hint}")


@click.command("demo")
@click.option("--keep", is_flag=True, help="Leave the cluster, plugin and app running afterwards.")
@click.option(
    "--state-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Cluster state dir (default: kubeaccel cluster's own default).",
)
@click.option("--devices", default=4, show_default=True, type=click.IntRange(1, 64), help="Simulated VEs.")
@click.option("--executors", default=2, show_default=True, type=click.IntRange(1, 8), help="Spark executors.")
def demo(keep: bool, state_dir: Path | None, devices: int, executors: int) -> None:
    """Bring everything up on simulated devices and run an example app.

    A local cluster with a real node, the device plugin on simulated nec.com/ve devices,
    the kubeaccel Spark image, and a Pi app whose tasks report the VEs they were given.
    """
    from rich.console import Console

    from kubeaccel.cluster.spec import default_state_dir

    if executors > devices:
        raise click.BadParameter(f"{executors} executors need at least as many devices", param_hint="--executors")
    console = Console(stderr=True)
    options = DemoOptions(state_dir=state_dir or default_state_dir(), keep=keep, devices=devices, executors=executors)
    with console.status("kubeaccel demo") as status:

        def report(message: str) -> None:
            status.update(message)
            console.log(message)

        result = run_demo(options, report)
    render(result)
    if not result.phase.startswith("Succeeded"):
        raise KubeaccelError(
            f"the app did not succeed: {result.phase}",
            hint=f"driver log tail:\n{result.driver_log_tail}",
        )
