"""``kubeaccel demo``: the README's main job on embedded defaults.

Orchestrates both halves from above (it is the only module besides the CLI allowed to): a local
cluster with a real node; the device plugin deployed as users deploy it, through the Helm chart
(``deploy/helm/kubeaccel-device-plugin``) as a DaemonSet pod serving simulated ``nec.com/ve``
devices to that node's kubelet; the plugin and Spark images built and imported without a
registry; and the example app (``deploy/spark/examples/accel_pi.py``) submitted with executor VE
requests, whose tasks report the devices they received. Ends with tables of nodes, the plugin
pod, devices and allocations.

``run_demo`` is the core (a ``report`` callback for progress, a ``DemoResult`` back); ``demo`` is
the click command that adds rich output. A cluster that was already running is reused and left
running; one the demo started is taken down again unless ``--keep`` (likewise the Helm release).
"""

from __future__ import annotations

import json
import re
import shutil
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

from kubeaccel.cliopts import PathParam, console, log_line, print_table
from kubeaccel.errors import KubeaccelError, NotFoundError, UnavailableError

RESOURCE = "nec.com/ve"
SPARK_RESOURCE = "ve"
RELEASE = "kubeaccel"  # the Helm release of the device-plugin chart
PLUGIN_NAMESPACE = "kube-system"
CHART = Path("deploy/helm/kubeaccel-device-plugin")  # in the repository
HELM_VERSION = "4.3.1"  # scripts/bootstrap.d/40-helm.sh builds it into the cache
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
class PluginPod:
    """The DaemonSet pod serving the real node's devices."""

    name: str
    node: str
    ready: bool
    restarts: int
    image: str


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


def _repo_root() -> Path:
    """The kubeaccel checkout this package runs from (the image builders and the chart live there)."""
    import kubeaccel

    root = Path(kubeaccel.__file__).resolve().parents[2]
    if not (root / CHART / "Chart.yaml").exists():
        raise NotFoundError(
            f"the device-plugin chart ({CHART}) and the image builders are not next to this kubeaccel",
            hint="run the demo from a clone of the kubeaccel repository (pip install -e .)",
        )
    return root


def build_image(report: Report, which: str = "spark") -> tuple[Path, str]:
    """Build (or find cached) ``deploy/<which>/build_image.py``'s image archive; returns (archive, image name)."""
    report(f"building the kubeaccel {which} image (cached after the first time)")
    builder = _repo_root() / "deploy" / which / "build_image.py"
    done = subprocess.run(
        [sys.executable, str(builder), "--json"], capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise KubeaccelError(
            f"building the {which} image failed: {done.stderr.strip()[-1500:]}",
            hint="it needs root, apt-get and dpkg-deb (a Debian host); see docs/deploy.md",
        )
    built = json.loads(done.stdout)
    return Path(built["archive"]), str(built["image"])


def helm_binary() -> str:
    """The Helm that scripts/bootstrap.d/40-helm.sh built, else one on PATH."""
    built = Path.home() / ".cache" / "kubeaccel" / "helm" / f"v{HELM_VERSION}" / "bin" / "helm"
    found = str(built) if built.exists() else shutil.which("helm")
    if found is None:
        raise NotFoundError("helm is not installed", hint="run scripts/bootstrap.d/40-helm.sh (builds it from Go)")
    return found


def helm(kubeconfig: Path, *args: str, timeout: float = 300, stdin: str | None = None) -> str:
    """Run ``helm`` against the cluster of ``kubeconfig``; a failure raises with helm's own message."""
    done = subprocess.run(
        [helm_binary(), f"--kubeconfig={kubeconfig}", *args],
        capture_output=True, text=True, input=stdin, timeout=timeout, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise KubeaccelError(f"helm {args[0]} failed: {done.stderr.strip()[-1500:]}", hint="see docs/deploy.md")
    return done.stdout


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


def plugin_pod_problem(pod: Any, image: str) -> KubeaccelError | None:
    """Why the plugin pod cannot serve (its image missing on the node, crash looping), or None."""
    status = pod.status
    for container in (status.containerStatuses or []) if status else []:
        waiting = container.state.waiting if container.state else None
        if waiting is None:
            continue
        reason = waiting.reason
        if reason in {"ErrImageNeverPull", "ErrImagePull", "ImagePullBackOff", "InvalidImageName"}:
            return UnavailableError(
                f"the device-plugin image {image} is not on node {pod.spec.nodeName} ({reason})",
                hint="build it with `python deploy/plugin/build_image.py` (or scripts/bootstrap.d/55-plugin-image.sh) "
                "and import the archive it prints: `ctr -n k8s.io images import ARCHIVE` on the node",
            )
        if reason == "CrashLoopBackOff":
            return UnavailableError(
                f"the device-plugin pod {pod.metadata.name} keeps crashing: {waiting.message or ''}".strip(),
                hint=f"kubectl -n {PLUGIN_NAMESPACE} logs {pod.metadata.name} --previous",
            )
    return None


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


def _plugin_pods(api: Any, node: str, release: str) -> list[Any]:
    from lightkube.resources.core_v1 import Pod

    pods = api.list(Pod, namespace=PLUGIN_NAMESPACE, labels={"app.kubernetes.io/instance": release},
                    fields={"spec.nodeName": node})  # fmt: skip
    return [p for p in pods if not p.metadata.deletionTimestamp]


def _pod_row(pod: Any) -> PluginPod:
    statuses = (pod.status.containerStatuses or []) if pod.status else []
    return PluginPod(
        name=pod.metadata.name,
        node=pod.spec.nodeName or "-",
        ready=bool(statuses) and all(c.ready for c in statuses),
        restarts=sum(c.restartCount for c in statuses),
        image=pod.spec.containers[0].image,
    )


def wait_for_plugin(
    api: Any, node: str, want: int, image: str, *, release: str = RELEASE, timeout: float = 180
) -> PluginPod:
    """Until the node advertises ``want`` devices from a ready pod of ``release`` running ``image``."""
    from lightkube.resources.core_v1 import Node

    deadline = time.monotonic() + timeout
    while True:
        found = api.get(Node, node)
        allocatable = (found.status.allocatable or {}).get(RESOURCE, "0") if found.status else "0"
        pods = [p for p in _plugin_pods(api, node, release) if p.spec.containers[0].image == image]
        for pod in pods:
            if (problem := plugin_pod_problem(pod, image)) is not None:
                raise problem
        rows = [_pod_row(p) for p in pods]
        if str(allocatable) == str(want) and any(r.ready for r in rows):
            return next(r for r in rows if r.ready)
        if time.monotonic() > deadline:
            state = ", ".join(f"{r.name} ready={r.ready}" for r in rows) or "no plugin pod on the node"
            raise UnavailableError(
                f"node {node} did not show {RESOURCE}={want} within {timeout:.0f}s (has {allocatable}; {state})",
                hint=f"kubectl -n {PLUGIN_NAMESPACE} describe daemonset -l app.kubernetes.io/instance={release}",
            )
        time.sleep(0.5)


def _devices(config: dict[str, Any]) -> list[tuple[str, str, str, str]]:
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


def install_plugin(kubeconfig: Path, values: dict[str, Any], report: Report) -> bool:
    """``helm upgrade --install`` the chart; True when the release is new (so the demo removes it again)."""
    import yaml

    listed = json.loads(helm(kubeconfig, "list", "-n", PLUGIN_NAMESPACE, "-o", "json", "--filter", f"^{RELEASE}$"))
    report(f"{'upgrading' if listed else 'installing'} the device-plugin chart (Helm release {RELEASE})")
    helm(kubeconfig, "upgrade", "--install", RELEASE, str(_repo_root() / CHART), "-n", PLUGIN_NAMESPACE,
         "--values", "-", stdin=yaml.safe_dump(values))  # fmt: skip
    return not listed


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
        archive, image = build_image(report, "spark")
        plugin_archive, plugin_image = build_image(report, "plugin")
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
    installed = False
    try:
        report(f"importing {plugin_image} and {image} into the node's containerd")
        with _timed(timings, "import"):
            for path in (plugin_archive, archive):
                import_archive(path, containerd_address(Layout(options.state_dir)))
        values = plugin_values(options.devices, plugin_image, info.real_node)
        api = cluster_api.client(info.kubeconfig)
        with _timed(timings, "plugin"):
            installed = install_plugin(info.kubeconfig, values, report)
            plugin_pod = wait_for_plugin(api, info.real_node, options.devices, plugin_image)
        report(f"node {info.real_node} advertises {RESOURCE}: {options.devices} (plugin pod {plugin_pod.name})")

        kube = Kube.connect(kubeconfig=str(info.kubeconfig))
        # Privileged Pod Security: the driver runs on the host network (see app_confs), which baseline forbids.
        create_tenant(kube, TENANT, {RESOURCE: str(options.devices)}, pod_security="privileged")
        work.mkdir(parents=True, exist_ok=True)
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
            plugin_pod=plugin_pod,
            devices=_devices(values["config"]),
            allocations=allocations(reports),
            tasks=reports,
            driver_log_tail="\n".join(driver_log.splitlines()[-20:]),
            kept=options.keep,
            timings=timings,
        )
    except BaseException:
        if not options.keep:
            cleanup(RELEASE, info.kubeconfig if installed else None, down if started_cluster else None,
                    options.state_dir, report)  # fmt: skip
        raise
    if options.keep:
        result.cleanup_hint = keep_hint(RELEASE, info.kubeconfig, options.state_dir)
    else:
        cleanup(RELEASE, info.kubeconfig if installed else None, down if started_cluster else None, options.state_dir,
                report)  # fmt: skip
    return result


def keep_hint(release: str, kubeconfig: Path, state_dir: Path) -> str:
    """What stops what a kept demo left: its Helm release, then the cluster."""
    return (
        f"helm uninstall {release} -n {PLUGIN_NAMESPACE} --kubeconfig {kubeconfig}; "
        f"kubeaccel cluster down --state-dir {state_dir}"
    )


def cleanup(
    release: str, release_of: Path | None, down: Callable[[Path], Any] | None, state_dir: Path, report: Report
) -> None:
    """Uninstall the release the demo installed (one a kept demo left stays), take down a cluster it started."""
    if release_of is not None and down is None:  # with the cluster going down, the release goes with it
        report(f"uninstalling the Helm release {release}")
        helm(release_of, "uninstall", release, "-n", PLUGIN_NAMESPACE, "--wait")
    if down is not None:
        report("taking the cluster down")
        down(state_dir)


def nodes_table(title: str, rows: list[NodeRow]) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in ("node", "kind", "ready", f"{RESOURCE} capacity", "allocatable"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.name, row.kind, "yes" if row.ready else "no", row.capacity, row.allocatable)
    return table


def pod_table(title: str, pod: PluginPod) -> Any:
    from rich.table import Table

    table = Table(title=title)
    for column in ("pod", "node", "ready", "restarts", "image"):
        table.add_column(column)
    table.add_row(pod.name, pod.node, "yes" if pod.ready else "no", str(pod.restarts), pod.image)
    return table


def allocations_table(allocated: dict[str, list[str]], tasks: list[dict[str, Any]]) -> Any:
    """Per executor: the device addresses its tasks held and how many tasks ran there."""
    from rich.table import Table

    table = Table(title="Allocations seen by Spark tasks")
    for column in ("executor", f"{SPARK_RESOURCE} addresses", "tasks"):
        table.add_column(column)
    for executor, addresses in allocated.items():
        count = sum(1 for t in tasks if str(t.get("executor")) == executor)
        table.add_row(executor, ", ".join(addresses) or "-", str(count))
    return table


def print_outcome(console: Any, result: Any) -> None:
    """The app's result, the timings and, for a kept demo, how to stop it (both demos' results have these)."""
    pi = f"{result.pi:.5f}" if result.pi is not None else "?"
    console.print(f"[bold]{result.submission_id}[/bold]: {result.phase}; Pi is roughly {pi}")
    console.print("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in result.timings.items()))
    if result.kept:
        console.print(f"left running; kubeconfig: {result.kubeconfig}\nto stop: {result.cleanup_hint}")


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


@click.command("demo")
@click.option("--keep", is_flag=True, help="Leave the cluster, the plugin's Helm release and the app afterwards.")
@click.option(
    "--state-dir",
    type=PathParam(file_okay=False, path_type=Path),
    default=None,
    help="Cluster state dir (default: kubeaccel cluster's own default).",
)
@click.option("--devices", default=4, show_default=True, type=click.IntRange(1, 64), help="Simulated VEs.")
@click.option("--executors", default=2, show_default=True, type=click.IntRange(1, 8), help="Spark executors.")
@click.option("--dra", is_flag=True, help="Serve the VEs through the DRA driver instead of the device plugin.")
def demo(keep: bool, state_dir: Path | None, devices: int, executors: int, dra: bool) -> None:
    """Bring everything up on simulated devices and run an example app.

    A local cluster with a real node, the device plugin installed with its Helm chart (a
    DaemonSet pod) on simulated nec.com/ve devices, the kubeaccel Spark image, and a Pi app
    whose tasks report the VEs they were given.
    """
    from kubeaccel.cluster.spec import default_state_dir

    if executors > devices:
        raise click.BadParameter(f"{executors} executors need at least as many devices", param_hint="--executors")
    progress = console(stderr=True)
    options = DemoOptions(state_dir=state_dir or default_state_dir(), keep=keep, devices=devices, executors=executors)
    with progress.status("kubeaccel demo") as status:

        def report(message: str) -> None:
            status.update(message)
            log_line(progress, message)

        if dra:  # the same demo through DRA: kubeaccel.demo_dra
            from kubeaccel.demo_dra import render_dra, run_demo_dra

            dra_result = run_demo_dra(options, report)
        else:
            result = run_demo(options, report)
    if dra:
        render_dra(dra_result)
        phase, tail = dra_result.phase, dra_result.driver_log_tail
    else:
        render(result)
        phase, tail = result.phase, result.driver_log_tail
    if not phase.startswith("Succeeded"):
        raise KubeaccelError(
            f"the app did not succeed: {phase}",
            hint=f"driver log tail:\n{tail}",
        )
