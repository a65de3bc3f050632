"""The Helm-installed controller on the real node: kubeflow-shaped YAML applied with kubectl runs to COMPLETED.

All real: the chart (CRDs, RBAC, the Deployment with leader election) installed with the real Helm, the
kubeaccel image and the Spark image imported into the node's containerd, the controller in its pod using its
ServiceAccount token (on the host network: the local API server listens on 127.0.0.1 only), drivers and
executors on the real kubelet. The apps are kubeflow/spark-operator's examples/ with the image and
ServiceAccount ours, polled as Airflow's sensor polls status.applicationState.state, two at a time:
spark-pi (Scala) and spark-pi-ttl (COMPLETED, then deleted by its TTL); spark-pi-python and
spark-pi-configmap; spark-pi-dynamic-allocation; spark-pi-scheduled (two runs, each COMPLETED). And
spark-pi with an image the node does not have: SUBMISSION_FAILED. Then `helm uninstall`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy.chart import HELM, yaml_safe_json
from fixtures.cluster import wait_for
from fixtures.sparkapps import (
    SPARK_PI,
    SPARK_PI_CONFIGMAP,
    SPARK_PI_DYNAMIC,
    SPARK_PI_PYTHON,
    SPARK_PI_SCHEDULED,
    SPARK_PI_TTL,
    kubeflow_on_real_node,
    load,
)

pytestmark = [pytest.mark.real_node, pytest.mark.spark, pytest.mark.slow]
CHART = Path(__file__).resolve().parents[2] / "deploy" / "helm" / "kubeaccel-operator"
SELECTOR = "app.kubernetes.io/instance=ops"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def installed(real_node: Any, operator_image: str) -> Iterator[tuple[str, str]]:
    """(the release's namespace, the apps' tenant namespace) with the chart installed and its controller ready."""
    cluster = real_node.cluster
    release_ns = cluster.create_namespace("opsys")
    apps_ns = f"op-helm-{uuid.uuid4().hex[:6]}"
    code = "import sys; from kubeaccel.cli import main; main(sys.argv[1:])"
    subprocess.run(
        [sys.executable, "-c", code, "tenant", "create", apps_ns, "--pod-security", "privileged",
         "--kubeconfig", str(real_node.kubeconfig)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    repository, _, tag = operator_image.rpartition(":")
    values = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
        "replicas": 1,  # one node, host network: a second replica would want the same port
        "namespaces": [apps_ns],
        "apiServer": cluster.server,
        "metrics": {"port": _free_port(), "service": False},
        "nodeSelector": {"kubernetes.io/hostname": real_node.node_name},
        "logLevel": "debug",
    }
    kube_args = [f"--kubeconfig={real_node.kubeconfig}", "-n", release_ns]
    done = subprocess.run(
        [HELM, "install", "ops", str(CHART), *kube_args, "--values", "-"],
        input=yaml_safe_json(values), capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    try:
        ready = "jsonpath={.items[*].status.containerStatuses[*].ready}"
        try:
            wait_for(
                "the controller ready",
                lambda: cluster.kubectl("get", "pods", "-n", release_ns, "-l", SELECTOR, "-o", ready).stdout == "true",
                timeout=180,
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{_describe(cluster, release_ns)}") from None
        yield release_ns, apps_ns
    finally:
        subprocess.run([HELM, "uninstall", "ops", *kube_args, "--wait"], capture_output=True, timeout=180, check=False)
        cluster.kubectl("delete", "namespace", apps_ns, "--wait=false", check=False)


def _describe(cluster: Any, release_ns: str) -> str:
    pods = cluster.kubectl("describe", "pods", "-n", release_ns, "-l", SELECTOR, check=False).stdout
    logs = cluster.kubectl("logs", "-n", release_ns, "-l", SELECTOR, "--tail=60", check=False)
    return f"{pods[-3000:]}\n--- logs ---\n{logs.stdout}{logs.stderr}"


def _poll_states(cluster: Any, namespace: str, names: list[str], timeout: float = 480) -> dict[str, list[str]]:
    """Each app's states as a poller sees them, until every one has ended."""
    seen: dict[str, list[str]] = {name: [] for name in names}
    deadline = time.monotonic() + timeout
    ended = ("COMPLETED", "FAILED", "SUBMISSION_FAILED")
    while time.monotonic() < deadline:
        for name in names:
            if seen[name] and seen[name][-1] in ended:
                continue  # ended: a TTL may delete it now
            state = cluster.kubectl("get", "sparkapplication", name, "-n", namespace, "-o",
                                    "jsonpath={.status.applicationState.state}", check=False).stdout  # fmt: skip
            if not seen[name] or seen[name][-1] != state:
                seen[name].append(state)
        if all(s and s[-1] in ended for s in seen.values()):
            break
        time.sleep(2)
    return seen


def _run_examples(cluster: Any, installed: tuple[str, str], apps: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Apply the apps at once and poll their states to the end; fail with the statuses and the controller's log
    unless every one COMPLETED after being seen RUNNING."""
    release_ns, apps_ns = installed
    names = [app["metadata"]["name"] for app in apps]
    cluster.apply(yaml.safe_dump_all(apps), apps_ns)
    seen = _poll_states(cluster, apps_ns, names)
    if any(s[-1] != "COMPLETED" for s in seen.values()):
        status = cluster.kubectl("get", "sparkapplications", "-n", apps_ns, "-o", "yaml").stdout
        pytest.fail(f"states {seen}\n{status[-4000:]}\n{_describe(cluster, release_ns)}")
    assert all("RUNNING" in states for states in seen.values()), seen
    return seen


def _example(text: str, real_node: Any, spark_image: str) -> dict[str, Any]:
    return kubeflow_on_real_node(load(text), spark_image, real_node.node_name, real_node.cluster.server)


def _status(cluster: Any, namespace: str, name: str) -> dict[str, Any]:
    out = cluster.kubectl("get", "sparkapplication", name, "-n", namespace, "-o", "json").stdout
    status: dict[str, Any] = json.loads(out)["status"]
    return status


def test_spark_pi_scala_and_spark_pi_ttl_complete(
    real_node: Any, installed: tuple[str, str], spark_image: str
) -> None:
    """kubeflow's spark-pi.yaml (type Scala: SparkPi from the image's spark-examples.jar) and spark-pi-ttl.yaml."""
    cluster, (_, apps_ns) = real_node.cluster, installed
    ttl = _example(SPARK_PI_TTL, real_node, spark_image)
    ttl["spec"]["timeToLiveSeconds"] = 20
    _run_examples(cluster, installed, [_example(SPARK_PI, real_node, spark_image), ttl])
    assert "Pi is roughly 3.1" in cluster.kubectl("logs", "spark-pi-driver", "-n", apps_ns).stdout
    args = cluster.kubectl("get", "pod", "spark-pi-driver", "-n", apps_ns, "-o",
                           "jsonpath={.spec.containers[0].args}").stdout  # fmt: skip
    assert "org.apache.spark.examples.SparkPi" in args and "local:///opt/spark/examples/jars/" in args
    executors = _status(cluster, apps_ns, "spark-pi").get("executorState") or {}
    assert len(executors) == 1 and set(executors.values()) <= {"COMPLETED", "FAILED"}, executors
    wait_for("the TTL", lambda: cluster.kubectl("get", "sparkapplication", "spark-pi-ttl", "-n", apps_ns,
                                                check=False).returncode != 0, timeout=60)  # fmt: skip


def test_spark_pi_python_and_spark_pi_configmap_complete(
    real_node: Any, installed: tuple[str, str], spark_image: str
) -> None:
    """kubeflow's spark-pi-python.yaml (pi.py from the image) and spark-pi-configmap.yaml (spec.volumes: a
    ConfigMap mounted into the driver and the executors through pod templates, no webhook)."""
    cluster, (_, apps_ns) = real_node.cluster, installed
    cluster.apply(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "dummy-cm"},
                                  "data": {"key": "value"}}), apps_ns)  # fmt: skip
    apps = [_example(SPARK_PI_PYTHON, real_node, spark_image), _example(SPARK_PI_CONFIGMAP, real_node, spark_image)]
    _run_examples(cluster, installed, apps)
    assert "Pi is roughly 3.1" in cluster.kubectl("logs", "spark-pi-python-driver", "-n", apps_ns).stdout
    driver = json.loads(cluster.kubectl("get", "pod", "spark-pi-configmap-driver", "-n", apps_ns, "-o", "json").stdout)
    volumes = {v["name"]: v for v in driver["spec"]["volumes"]}
    assert volumes["config-vol"]["configMap"]["name"] == "dummy-cm"
    mounts = {m["name"]: m["mountPath"] for m in driver["spec"]["containers"][0]["volumeMounts"]}
    assert mounts["config-vol"] == "/opt/spark/mycm"


def test_spark_pi_dynamic_allocation_completes(real_node: Any, installed: tuple[str, str], spark_image: str) -> None:
    """kubeflow's spark-pi-dynamic-allocation.yaml: initialExecutors 2 (shuffle tracking on, as on Kubernetes
    dynamic allocation needs), so the status lists at least two executors."""
    cluster, (_, apps_ns) = real_node.cluster, installed
    _run_examples(cluster, installed, [_example(SPARK_PI_DYNAMIC, real_node, spark_image)])
    name = "spark-pi-dynamic-allocation"
    assert "Pi is roughly 3.1" in cluster.kubectl("logs", f"{name}-driver", "-n", apps_ns).stdout
    executors = _status(cluster, apps_ns, name).get("executorState") or {}
    assert len(executors) >= 2, executors
    driver = json.loads(cluster.kubectl("get", "pod", f"{name}-driver", "-n", apps_ns, "-o", "json").stdout)
    (conf_map,) = [v["configMap"]["name"] for v in driver["spec"]["volumes"] if v["name"] == "spark-conf-volume-driver"]
    conf = json.loads(cluster.kubectl("get", "configmap", conf_map, "-n", apps_ns, "-o", "json").stdout)["data"]
    properties = "".join(conf.values())
    for line in ("spark.dynamicAllocation.enabled=true", "spark.dynamicAllocation.shuffleTracking.enabled=true",
                 "spark.dynamicAllocation.initialExecutors=2", "spark.dynamicAllocation.maxExecutors=5"):  # fmt: skip
        assert line in properties, properties


def test_a_missing_image_ends_submission_failed_with_an_event(
    real_node: Any, installed: tuple[str, str], spark_image: str
) -> None:
    """The real kubelet will never have the driver's image (pullPolicy Never, not on the node): the app is
    SUBMISSION_FAILED naming the image, with an Event, and the driver that could never start is removed."""
    cluster, (_, apps_ns) = real_node.cluster, installed
    app = _example(SPARK_PI, real_node, spark_image)
    app["metadata"]["name"] = "spark-pi-no-image"
    app["spec"]["image"] = "kubeaccel.invalid/no-such-spark:0"
    cluster.apply(yaml.safe_dump(app), apps_ns)
    seen = _poll_states(cluster, apps_ns, ["spark-pi-no-image"], timeout=120)
    assert seen["spark-pi-no-image"][-1] == "SUBMISSION_FAILED", seen
    message = _status(cluster, apps_ns, "spark-pi-no-image")["applicationState"]["errorMessage"]
    assert "kubeaccel.invalid/no-such-spark:0" in message and "ErrImageNeverPull" in message, message
    selector = "involvedObject.name=spark-pi-no-image"
    events = cluster.kubectl("get", "events", "-n", apps_ns, "--field-selector", selector, "-o",
                             "jsonpath={.items[*].reason}").stdout  # fmt: skip
    assert "SparkApplicationSubmissionFailed" in events
    wait_for("the driver removed", lambda: cluster.kubectl("get", "pod", "spark-pi-no-image-driver", "-n", apps_ns,
                                                           check=False).returncode != 0, timeout=60)  # fmt: skip


def test_scheduled_runs_twice(real_node: Any, installed: tuple[str, str], spark_image: str) -> None:
    cluster = real_node.cluster
    release_ns, apps_ns = installed
    scheduled = _example(SPARK_PI_SCHEDULED, real_node, spark_image)  # kubeflow's spark-pi-scheduled.yaml
    scheduled["spec"].update(schedule="@every 45s", successfulRunHistoryLimit=2)  # two runs in a test's time
    cluster.apply(yaml.safe_dump(scheduled), apps_ns)

    def runs() -> list[str]:
        out = cluster.kubectl("get", "sparkapplications", "-n", apps_ns, "-l",
                              "sparkoperator.k8s.io/scheduled-app-name=spark-pi-scheduled", "-o",
                              "jsonpath={.items[*].metadata.name}").stdout  # fmt: skip
        return sorted(out.split())

    wait_for("two runs", lambda: len(runs()) >= 2, timeout=150, interval=2)
    first_two = runs()[:2]
    seen = _poll_states(cluster, apps_ns, first_two)
    cluster.kubectl("patch", "scheduledsparkapplication", "spark-pi-scheduled", "-n", apps_ns, "--type=merge",
                    "-p", '{"spec": {"suspend": true}}')  # fmt: skip
    if any(s[-1] != "COMPLETED" for s in seen.values()):
        status = cluster.kubectl("get", "sparkapplications", "-n", apps_ns, "-o", "yaml").stdout
        pytest.fail(f"states {seen}\n{status[-4000:]}\n{_describe(cluster, release_ns)}")
    last = cluster.kubectl("get", "scheduledsparkapplication", "spark-pi-scheduled", "-n", apps_ns, "-o",
                           "jsonpath={.status.scheduleState}").stdout  # fmt: skip
    assert last == "Scheduled"
