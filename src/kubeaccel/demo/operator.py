"""``kubeaccel demo --operator``: the Pi app as a SparkApplication, run by the Helm-installed controller.

The device plugin serves simulated ``nec.com/ve`` devices to the real node (as ``kubeaccel demo``); the
controller is installed as users install it, with ``deploy/helm/kubeaccel-operator`` (its Deployment runs
``kubeaccel operator run`` from the plugin image, on the host network: the local API server listens on
127.0.0.1 only), watching the demo's tenant. The app is applied as kubeflow-shaped YAML, with the same
confs as ``kubeaccel demo`` expressed as spec fields (``executor.gpu: {name: nec.com/ve, quantity: 1}``)
plus ``sparkConf`` for the rest, and followed through ``status.applicationState.state`` with a watch until
COMPLETED. Steps: images → cluster → import → device-plugin chart → operator chart → tenant → app → tables.
"""

from __future__ import annotations

import queue
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kubeaccel.cliopts import console, print_table
from kubeaccel.demo.common import (
    APP_IN_IMAGE,
    PLUGIN_NAMESPACE,
    RELEASE,
    RESOURCE,
    SPARK_RESOURCE,
    DemoOptions,
    PluginPod,
    Report,
    Session,
    allocations,
    allocations_table,
    build_images,
    helm,
    import_images,
    install_release,
    pi_value,
    pod_table,
    print_outcome,
    ready_release_pods,
    release_exists,
    repo_root,
    run_steps,
    start_cluster,
    task_reports,
    wait_until,
)
from kubeaccel.demo.deviceplugin import plugin_values, wait_for_plugin
from kubeaccel.errors import NotFoundError, UnavailableError

OPERATOR_RELEASE = "kubeaccel-operator"
OPERATOR_CHART = Path("deploy/helm/kubeaccel-operator")
TENANT = "kubeaccel-demo-operator"
APP_NAME = "spark-pi-ve"
ENDED = ("COMPLETED", "FAILED", "SUBMISSION_FAILED")


@dataclass
class ExecutorRow:
    pod: str
    state: str


@dataclass
class OperatorDemoResult:
    kubeconfig: Path
    submission_id: str  # the app's namespace/name (what `kubectl get sparkapplication` takes)
    phase: str  # "Succeeded" when the app ended COMPLETED, else its state and message
    state: str
    states_seen: list[str]
    pi: float | None
    driver: str
    spark_app_id: str
    executors: list[ExecutorRow]
    plugin_pod: PluginPod
    operator_pod: PluginPod
    allocations: dict[str, list[str]]
    tasks: list[dict[str, Any]]
    driver_log_tail: str
    kept: bool
    cleanup_hint: str = ""
    timings: dict[str, float] = field(default_factory=dict)


def operator_values(image: str, node: str, server: str, namespace: str, port: int) -> dict[str, Any]:
    """The operator chart's values: one replica on the real node, on the host network at ``server``."""
    repository, _, tag = image.rpartition(":")
    return {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},  # imported, never pulled
        "replicas": 1,  # one node, host network: a second replica would want the same port
        "namespaces": [namespace],
        "apiServer": server,
        "metrics": {"port": port, "service": False},
        "nodeSelector": {"kubernetes.io/hostname": node},
    }


def spark_application(
    *, name: str, image: str, node: str, server: str, executors: int, partitions: int
) -> dict[str, Any]:
    """The demo's Pi app as a SparkApplication: `common.app_confs` as spec fields, the rest in sparkConf."""
    small = {"cores": 1, "coreRequest": "100m", "memory": "512m"}
    return {
        "apiVersion": "sparkoperator.k8s.io/v1beta2",
        "kind": "SparkApplication",
        "metadata": {"name": name},
        "spec": {
            "type": "Python",
            "pythonVersion": "3",
            "mode": "cluster",
            "image": image,
            "imagePullPolicy": "Never",
            "mainApplicationFile": APP_IN_IMAGE,
            "arguments": [str(partitions), SPARK_RESOURCE],
            "sparkVersion": "4.3.0",
            "nodeSelector": {"kubernetes.io/hostname": node},
            "restartPolicy": {"type": "Never"},
            "sparkConf": {
                f"spark.task.resource.{SPARK_RESOURCE}.amount": "1",
                "spark.scheduler.minRegisteredResourcesRatio": "1.0",
                "spark.scheduler.maxRegisteredResourcesWaitingTime": "300s",
            },
            "driver": {
                **small,
                "serviceAccount": "spark",
                # No cluster DNS here and the API server on 127.0.0.1: the driver on the host network.
                "hostNetwork": True,
                "kubernetesMaster": server,
                "envVars": {"KUBEACCEL_DRIVER_HOST": "pod-ip"},
                "template": {"spec": {"dnsPolicy": "ClusterFirstWithHostNet"}},
            },
            "executor": {**small, "instances": executors, "gpu": {"name": RESOURCE, "quantity": 1}},
        },
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def install_operator(session: Session, values: dict[str, Any]) -> bool:
    """``helm upgrade --install`` the operator chart; True when the demo installed it (so it removes it)."""
    import yaml

    existed = release_exists(session.kubeconfig, OPERATOR_RELEASE)
    session.report(f"{'upgrading' if existed else 'installing'} the operator chart (Helm release {OPERATOR_RELEASE})")
    helm(session.kubeconfig, "upgrade", "--install", OPERATOR_RELEASE, str(repo_root() / OPERATOR_CHART),
         "-n", PLUGIN_NAMESPACE, "--values", "-", stdin=yaml.safe_dump(values))  # fmt: skip
    return not existed


def wait_for_operator(api: Any, node: str, image: str, timeout: float = 180) -> PluginPod:
    """Until the release's controller pod on ``node`` is ready (a pod that cannot start is reported at once)."""
    seen: dict[str, Any] = {"rows": []}

    def ready() -> PluginPod | None:
        seen["rows"] = rows = ready_release_pods(api, node, OPERATOR_RELEASE, image)
        return next((r for r in rows if r.ready), None)

    def failed() -> UnavailableError:
        state = ", ".join(f"{r.name} ready={r.ready}" for r in seen["rows"]) or "no controller pod on the node"
        return UnavailableError(
            f"the SparkApplication controller did not become ready within {timeout:.0f}s ({state})",
            hint=f"kubectl -n {PLUGIN_NAMESPACE} logs -l app.kubernetes.io/instance={OPERATOR_RELEASE}",
        )

    return wait_until(ready, timeout, failed)


def _state(app: Any) -> str:
    status = app.get("status") if isinstance(app, dict) else getattr(app, "status", None)
    return str(((status or {}).get("applicationState") or {}).get("state") or "")


def wait_for_state(
    kube: Any, namespace: str, name: str, report: Report, timeout: float
) -> tuple[dict[str, Any], list[str]]:
    """Watch the app until its state ends (COMPLETED, FAILED, SUBMISSION_FAILED); (the app, states seen)."""
    from kubeaccel.operator.kinds import apps

    events: queue.Queue[dict[str, Any] | BaseException] = queue.Queue()

    def watch() -> None:  # a daemon thread: the deadline below bounds the wait, not the watch
        try:
            for _, app in kube.watch(apps(), namespace, fields={"metadata.name": name}):
                events.put(app.to_dict() if hasattr(app, "to_dict") else dict(app))
        except BaseException as exc:
            events.put(exc)

    threading.Thread(target=watch, name="demo-app-watch", daemon=True).start()
    deadline = time.monotonic() + timeout
    states: list[str] = []
    last: dict[str, Any] = {}
    while (left := deadline - time.monotonic()) > 0:
        try:
            got = events.get(timeout=left)
        except queue.Empty:
            break
        if isinstance(got, BaseException):
            raise got
        last = got
        state = _state(got)
        if state and (not states or states[-1] != state):
            states.append(state)
            report(f"{name}: {state}")
        if state in ENDED:
            return last, states
    raise UnavailableError(
        f"SparkApplication {namespace}/{name} did not end within {timeout:.0f}s (states seen: {states or 'none'})",
        hint=f"kubectl -n {namespace} describe sparkapplication {name}; "
        f"kubectl -n {PLUGIN_NAMESPACE} logs -l app.kubernetes.io/instance={OPERATOR_RELEASE}",
    )


def _steps(session: Session, installed: list[str]) -> OperatorDemoResult:
    from kubeaccel.cluster.spec import DEFAULT_NODE_RESOURCES
    from kubeaccel.kube.tenancy import create_tenant

    options = session.options
    images = build_images(session)
    start_cluster(session, {**DEFAULT_NODE_RESOURCES, RESOURCE: "8"})
    import_images(session, images)
    api = session.api()
    with session.timed("plugin"):
        install_release(session, RELEASE, plugin_values(options.devices, images.plugin, session.node),
                        "the device-plugin chart")  # fmt: skip
        plugin_pod = wait_for_plugin(api, session.node, options.devices, images.plugin)
    session.report(f"node {session.node} advertises {RESOURCE}: {options.devices} (plugin pod {plugin_pod.name})")
    kube = session.kube()
    create_tenant(kube, TENANT, {RESOURCE: str(options.devices)}, pod_security="privileged")
    with session.timed("operator"):
        values = operator_values(images.plugin, session.node, session.info.server, TENANT, _free_port())
        if install_operator(session, values):
            installed.append(OPERATOR_RELEASE)
        operator_pod = wait_for_operator(api, session.node, images.plugin)
    session.report(f"controller ready (pod {operator_pod.name})")
    from kubeaccel.operator.kinds import apps

    app = spark_application(name=APP_NAME, image=images.spark, node=session.node, server=session.info.server,
                            executors=options.executors, partitions=options.partitions)  # fmt: skip
    # apps() also registers the kind with lightkube's codecs, which `kube.create` below needs.
    kube.delete(apps(), APP_NAME, TENANT, missing_ok=True)  # a kept earlier run's app: start afresh
    with session.timed("app"):
        wait_until(lambda: _gone(kube, APP_NAME) or None, 60,
                   lambda: UnavailableError(f"the previous {APP_NAME} is still being deleted"))  # fmt: skip
        kube.create(app, TENANT)
        session.report(f"applied SparkApplication {TENANT}/{APP_NAME}")
        ended, states = wait_for_state(kube, TENANT, APP_NAME, session.report, options.timeout)
    status = ended.get("status") or {}
    driver = str((status.get("driverInfo") or {}).get("podName") or f"{APP_NAME}-driver")
    driver_log = "".join(line if line.endswith("\n") else line + "\n" for line in kube.logs(driver, TENANT))
    reports = task_reports(driver_log)
    state = _state(ended)
    message = str((status.get("applicationState") or {}).get("errorMessage") or "")
    return OperatorDemoResult(
        kubeconfig=session.kubeconfig, submission_id=f"{TENANT}/{APP_NAME}",
        phase="Succeeded" if state == "COMPLETED" else f"{state}: {message}".rstrip(": "),
        state=state, states_seen=states, pi=pi_value(driver_log), driver=driver,
        spark_app_id=str(status.get("sparkApplicationId") or ""),
        executors=[ExecutorRow(pod, str(s)) for pod, s in sorted((status.get("executorState") or {}).items())],
        plugin_pod=plugin_pod, operator_pod=operator_pod, allocations=allocations(reports), tasks=reports,
        driver_log_tail="\n".join(driver_log.splitlines()[-20:]), kept=options.keep, timings=session.timings,
    )  # fmt: skip


def _gone(kube: Any, name: str) -> bool:
    from kubeaccel.operator.kinds import apps

    try:
        kube.get(apps(), name, TENANT)
    except NotFoundError:
        return True
    return False


def run_demo_operator(options: DemoOptions, report: Report) -> OperatorDemoResult:
    """Bring everything up, run the Pi SparkApplication through the controller; clean up unless ``keep``."""
    session = Session(options, report)
    installed: list[str] = []
    try:
        result, hint = run_steps(session, lambda s: _steps(s, installed), RELEASE)
    except BaseException:
        if not options.keep:
            _uninstall(session, installed)
        raise
    if options.keep:
        result.cleanup_hint = (
            f"helm uninstall {OPERATOR_RELEASE} -n {PLUGIN_NAMESPACE} --kubeconfig {result.kubeconfig}; {hint}"
        )
    else:
        _uninstall(session, installed)
    return result


def _uninstall(session: Session, installed: list[str]) -> None:
    """The operator release, when the demo installed it on a cluster it did not start (else the cluster went)."""
    if session.info is None or session.started_cluster:
        return
    for release in installed:
        session.report(f"uninstalling the Helm release {release}")
        helm(session.kubeconfig, "uninstall", release, "-n", PLUGIN_NAMESPACE, "--wait")


def render_operator(result: OperatorDemoResult) -> None:
    """The closing tables: the app, its driver and executors, the two release pods, the VEs tasks saw."""
    from rich.table import Table

    app = Table(title=f"SparkApplication {result.submission_id}")
    for column in ("state", "states seen", "driver", "spark app id"):
        app.add_column(column)
    app.add_row(result.state, " -> ".join(result.states_seen), result.driver, result.spark_app_id or "-")
    executors = Table(title="Executors (status.executorState)")
    for column in ("pod", "state"):
        executors.add_column(column)
    for row in result.executors:
        executors.add_row(row.pod, row.state)
    for table in (
        app,
        executors,
        pod_table(
            f"Controller: Deployment pod in {PLUGIN_NAMESPACE} (Helm release {OPERATOR_RELEASE})", result.operator_pod
        ),
        pod_table(f"Device plugin: DaemonSet pod in {PLUGIN_NAMESPACE} (Helm release {RELEASE})", result.plugin_pod),
        allocations_table(result.allocations, result.tasks),
    ):
        print_table(table)
    print_outcome(console(), result)
