"""What both demos share: options and results, the images, Helm, the cluster and the app, as named steps.

A demo is a `Session` walked through steps: `build_images` → `start_cluster` → `import_images` → the mode's
own install and wait → `run_app` → tables. `run_steps` owns clean-up: whatever the demo started (the Helm
release, the cluster) goes again, on success and on failure alike, unless `--keep`.
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
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from kubeaccel.errors import KubeaccelError, NotFoundError, UnavailableError

RESOURCE = "nec.com/ve"
SPARK_RESOURCE = "ve"
RELEASE = "kubeaccel"  # the Helm release of the device-plugin chart
PLUGIN_NAMESPACE = "kube-system"
CHART = Path("deploy/helm/kubeaccel-device-plugin")  # in the repository
HELM_VERSION = "4.3.1"  # scripts/bootstrap.d/40-helm.sh builds it into the cache
REPORT_PREFIX = "kubeaccel-task-resources "
APP_IN_IMAGE = "local:///opt/kubeaccel/examples/accel_pi.py"
DISCOVERY_IN_IMAGE = "/usr/local/bin/kubeaccel-discover"
_PI_RE = re.compile(r"Pi is roughly (\d+\.\d+)")

Report = Callable[[str], None]
T = TypeVar("T")


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
class AppRun:
    """What the example app did: its submission, outcome and the devices its tasks saw."""

    submission_id: str
    phase: str
    pi: float | None
    allocations: dict[str, list[str]]  # executor -> VE addresses its tasks held
    tasks: list[dict[str, Any]]
    driver_log_tail: str


@dataclass
class Images:
    spark_archive: Path
    spark: str
    plugin_archive: Path
    plugin: str


@dataclass
class Session:
    """One demo run: its options and progress callback, and what the steps found or started so far."""

    options: DemoOptions
    report: Report
    timings: dict[str, float] = field(default_factory=dict)
    info: Any = None  # kubeaccel.cluster.lifecycle.ClusterInfo, once `start_cluster` ran
    started_cluster: bool = False
    release: str | None = None  # the Helm release the demo installed (removed again unless --keep)

    @property
    def node(self) -> str:
        node: str = self.info.real_node
        return node

    @property
    def kubeconfig(self) -> Path:
        path: Path = self.info.kubeconfig
        return path

    @contextmanager
    def timed(self, name: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self.timings[name] = time.monotonic() - started

    def kube(self) -> Any:
        from kubeaccel.kube.client import Kube

        return Kube.connect(kubeconfig=str(self.kubeconfig))

    def api(self) -> Any:
        from kubeaccel.cluster import api as cluster_api

        return cluster_api.client(self.kubeconfig)


# --- the driver log --------------------------------------------------------------------------------------


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


# --- images and Helm -------------------------------------------------------------------------------------


def repo_root() -> Path:
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
    builder = repo_root() / "deploy" / which / "build_image.py"
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


def release_exists(kubeconfig: Path, release: str) -> bool:
    listed = json.loads(helm(kubeconfig, "list", "-n", PLUGIN_NAMESPACE, "-o", "json", "--filter", f"^{release}$"))
    return bool(listed)


def install_release(session: Session, release: str, values: dict[str, Any], what: str) -> None:
    """``helm upgrade --install`` the chart as ``release``; a new release is the session's to remove again."""
    import yaml

    existed = release_exists(session.kubeconfig, release)
    session.report(f"{'upgrading' if existed else 'installing'} {what} (Helm release {release})")
    helm(session.kubeconfig, "upgrade", "--install", release, str(repo_root() / CHART), "-n", PLUGIN_NAMESPACE,
         "--values", "-", stdin=yaml.safe_dump(values))  # fmt: skip
    if not existed:
        session.release = release


# --- pods and nodes --------------------------------------------------------------------------------------


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


def node_rows(api: Any, real_node: str | None) -> list[NodeRow]:
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


def plugin_pods(api: Any, node: str, release: str) -> list[Any]:
    from lightkube.resources.core_v1 import Pod

    pods = api.list(Pod, namespace=PLUGIN_NAMESPACE, labels={"app.kubernetes.io/instance": release},
                    fields={"spec.nodeName": node})  # fmt: skip
    return [p for p in pods if not p.metadata.deletionTimestamp]


def pod_row(pod: Any) -> PluginPod:
    statuses = (pod.status.containerStatuses or []) if pod.status else []
    return PluginPod(
        name=pod.metadata.name,
        node=pod.spec.nodeName or "-",
        ready=bool(statuses) and all(c.ready for c in statuses),
        restarts=sum(c.restartCount for c in statuses),
        image=pod.spec.containers[0].image,
    )


def ready_release_pods(api: Any, node: str, release: str, image: str) -> list[PluginPod]:
    """The release's pods on ``node`` running ``image``; raises at once when one cannot serve."""
    pods = [p for p in plugin_pods(api, node, release) if p.spec.containers[0].image == image]
    for pod in pods:
        if (problem := plugin_pod_problem(pod, image)) is not None:
            raise problem
    return [pod_row(p) for p in pods]


# --- the steps -------------------------------------------------------------------------------------------


def build_images(session: Session) -> Images:
    with session.timed("image"):
        spark_archive, spark = build_image(session.report, "spark")
        plugin_archive, plugin = build_image(session.report, "plugin")
    return Images(spark_archive, spark, plugin_archive, plugin)


def start_cluster(session: Session, node_resources: dict[str, str]) -> None:
    from kubeaccel.cluster.lifecycle import up
    from kubeaccel.cluster.spec import ClusterSpec

    session.report("bringing up the local cluster with a real node")
    spec = ClusterSpec(state_dir=session.options.state_dir, nodes=session.options.kwok_nodes,
                       node_resources=node_resources, real_node=True)  # fmt: skip
    with session.timed("cluster"):
        session.info = up(spec, progress=session.report)
    session.started_cluster = not session.info.already_running
    if not session.info.real_node:
        raise UnavailableError("the cluster came up without its real node", hint="see `kubeaccel cluster status`")


def import_images(session: Session, images: Images) -> None:
    from kubeaccel.cluster.images import import_archive
    from kubeaccel.cluster.layout import Layout
    from kubeaccel.cluster.realnode import containerd_address

    session.report(f"importing {images.plugin} and {images.spark} into the node's containerd")
    with session.timed("import"):
        for path in (images.plugin_archive, images.spark_archive):
            import_archive(path, containerd_address(Layout(session.options.state_dir)))


def driver_template(session: Session, subdir: str) -> Path:
    """The driver's pod template: on the host network (no cluster DNS here, see `app_confs`)."""
    import yaml

    work = session.options.state_dir / subdir
    work.mkdir(parents=True, exist_ok=True)
    template = work / "driver-template.yaml"
    pod = {"apiVersion": "v1", "kind": "Pod", "spec": {"hostNetwork": True, "dnsPolicy": "ClusterFirstWithHostNet"}}
    template.write_text(yaml.safe_dump(pod))
    return template


def run_app(
    session: Session,
    kube: Any,
    confs: dict[str, str],
    name: str,
    during: AbstractContextManager[Any] | None = None,
) -> AppRun:
    """Submit the Pi app, wait for it, and read what its tasks reported from the driver log."""
    from kubeaccel.spark.conf import SubmitRequest
    from kubeaccel.spark.manage import logs
    from kubeaccel.spark.submit import submit, wait

    request = SubmitRequest(
        app_resource=APP_IN_IMAGE,
        master=f"k8s://{session.info.server}",
        app_args=(str(session.options.partitions), SPARK_RESOURCE),
        name=f"{name}-{uuid.uuid4().hex[:4]}",
        conf=confs,
    )
    with session.timed("app"), during or nullcontext():
        sid = submit(request, kube=kube)
        session.report(f"submitted {sid}")
        code = wait(kube, sid, on_change=lambda phase: session.report(f"driver {phase}"),
                    timeout=session.options.timeout)  # fmt: skip
    driver_log = "".join(line if line.endswith("\n") else line + "\n" for line in logs(kube, str(sid)))
    reports = task_reports(driver_log)
    return AppRun(
        submission_id=str(sid),
        phase="Succeeded" if code == 0 else f"Failed (exit {code})",
        pi=pi_value(driver_log),
        allocations=allocations(reports),
        tasks=reports,
        driver_log_tail="\n".join(driver_log.splitlines()[-20:]),
    )


def keep_hint(release: str, kubeconfig: Path, state_dir: Path) -> str:
    """What stops what a kept demo left: its Helm release, then the cluster."""
    return (
        f"helm uninstall {release} -n {PLUGIN_NAMESPACE} --kubeconfig {kubeconfig}; "
        f"kubeaccel cluster down --state-dir {state_dir}"
    )


def cleanup(session: Session) -> None:
    """Uninstall the release the demo installed, take down a cluster it started (the release goes with it)."""
    if session.info is None:
        return
    if session.release is not None and not session.started_cluster:
        session.report(f"uninstalling the Helm release {session.release}")
        helm(session.kubeconfig, "uninstall", session.release, "-n", PLUGIN_NAMESPACE, "--wait")
    if session.started_cluster:
        from kubeaccel.cluster.lifecycle import down

        session.report("taking the cluster down")
        down(session.options.state_dir)


def run_steps(session: Session, steps: Callable[[Session], T], release: str) -> tuple[T, str]:
    """Run a demo's steps; clean up what it started unless --keep. Returns (result, hint to stop a kept demo)."""
    try:
        result = steps(session)
    except BaseException:
        if not session.options.keep:
            cleanup(session)
        raise
    if session.options.keep:
        return result, keep_hint(release, session.kubeconfig, session.options.state_dir)
    cleanup(session)
    return result, ""


def wait_until(what: Callable[[], T | None], timeout: float, fail: Callable[[], KubeaccelError]) -> T:
    """Call ``what`` every half second until it returns something; ``fail()`` is raised at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        got = what()
        if got is not None:
            return got
        if time.monotonic() > deadline:
            raise fail()
        time.sleep(0.5)


# --- tables ----------------------------------------------------------------------------------------------


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
