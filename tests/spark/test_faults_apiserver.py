"""The API server stalls or dies under a submit or a `--wait` (a private cluster: these tests stop its apiserver).

Matrix: apiserver paused (SIGSTOP) for 15 s, or killed and repaired a few seconds later by `cluster up`, while
`submit --wait` follows the driver -> it retries with backoff, then reports the driver's own exit code;
apiserver stalled right after the driver pod was created -> exit 4, the ID of the pod that may run and
every leftover named, and the printed command removes them once the server is back; apiserver killed
during `wait` with its supervisor stopped -> gives up after its bounded outage with exit 4, naming the app.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures.cluster import DEFAULT_NODE_RESOURCES, KUBECTL
from fixtures.spark import ON_KWOK, ON_KWOK_ARGS, SPARK_USER, run_cli

from kubeaccel.errors import KubeaccelError, UnavailableError
from kubeaccel.kube.client import Kube
from kubeaccel.kube.tenancy import create_tenant
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.rollback import Ledger, RollbackIncompleteError
from kubeaccel.spark.submit import submit, wait

pytestmark = pytest.mark.cluster

PAUSE_SECONDS = 15


class PrivateCluster:
    def __init__(self, state_dir: Path, kubeconfig: Path) -> None:
        from kubeaccel.cluster.spec import ClusterSpec

        self.state_dir, self.kubeconfig = state_dir, kubeconfig
        self.spec = ClusterSpec(state_dir=state_dir, nodes=1, node_resources=DEFAULT_NODE_RESOURCES)

    def apiserver_pid(self) -> int:
        from kubeaccel.cluster.layout import Layout
        from kubeaccel.cluster.process import read_record

        record = read_record(Layout(self.state_dir), "kube-apiserver")
        assert record is not None and record.alive(), "the private cluster's apiserver is not running"
        return record.pid

    def pause(self) -> None:
        os.kill(self.apiserver_pid(), signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self.apiserver_pid(), signal.SIGCONT)


@pytest.fixture(scope="module")
def private() -> Iterator[PrivateCluster]:
    from kubeaccel.cluster.lifecycle import down, up

    state_dir = Path(tempfile.mkdtemp(prefix="kubeaccel-faults-"))
    try:
        cluster = PrivateCluster(state_dir, state_dir / "kubeconfig")
        info = up(cluster.spec)
        assert info.kubeconfig == cluster.kubeconfig
        yield cluster
    finally:
        with_pid = PrivateCluster(state_dir, state_dir / "kubeconfig")
        with contextlib.suppress(AssertionError, OSError):
            with_pid.resume()  # a stopped process would not stop
        down(state_dir)
        shutil.rmtree(state_dir, ignore_errors=True)


@pytest.fixture
def namespace(private: PrivateCluster) -> str:
    kube = Kube.connect(kubeconfig=private.kubeconfig)
    name = f"faults-{os.urandom(3).hex()}"
    create_tenant(kube, name, {})
    kube.apply(
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default", "namespace": name}},
        namespace=name,
    )
    kube.close()
    return name


def _finish(kube: Kube, namespace: str, pod: str, exit_code: int) -> None:
    from lightkube.resources.core_v1 import Pod
    from lightkube.types import PatchType

    terminated = {"exitCode": exit_code, "reason": "Error", "startedAt": "2026-01-01T00:00:00Z",
                  "finishedAt": "2026-01-01T00:01:00Z"}  # fmt: skip
    status = {
        "status": {
            "phase": "Failed",
            "containerStatuses": [
                {
                    "name": "spark-kubernetes-driver",
                    "image": "i",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        }
    }
    kube.client.patch(Pod.Status, pod, status, namespace=namespace, patch_type=PatchType.MERGE)


def _submit_wait_through(private: PrivateCluster, namespace: str, fault: Callable[[], None]) -> tuple[int, str, Any]:
    """`submit --wait` (the real CLI, in-process); once the driver exists and `--wait` has seen it, `fault()`
    runs in a helper thread, then the driver is finished with exit code 3."""
    kube = Kube.connect(kubeconfig=private.kubeconfig)
    seen: dict[str, Any] = {}

    def fault_then_finish() -> None:
        from lightkube.resources.core_v1 import Pod

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not seen.get("pod"):
            pods = kube.list(Pod, namespace=namespace, labels={"spark-role": "driver"})
            seen["pod"] = pods[0].metadata.name if pods and pods[0].metadata else None
            time.sleep(0.2)
        time.sleep(1.5)  # `--wait` has seen the pod
        fault()
        _until_answering(kube)
        _finish(kube, namespace, seen["pod"], 3)

    helper = threading.Thread(target=fault_then_finish, daemon=True)
    helper.start()
    result = run_cli(
        ["spark", "submit", "--wait", "--kubeconfig", str(private.kubeconfig), "--master",
         f"k8s://{kube.server}", "--conf", f"spark.kubernetes.namespace={namespace}",
         "--conf", "spark.kubernetes.container.image=img", *ON_KWOK_ARGS, "local:///opt/app.py"]
    )  # fmt: skip
    helper.join(timeout=120)
    return result


def _until_answering(kube: Kube, timeout: float = 90) -> None:
    from lightkube.resources.core_v1 import Namespace

    deadline = time.monotonic() + timeout
    while True:
        try:
            kube.list(Namespace)
            return
        except UnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_wait_rides_out_a_paused_apiserver(
    private: PrivateCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`--wait` follows the driver with a watch; a paused server is silence to a watch until the window
    (plus the request timeout) passes. With a 2 s window the 15 s pause is noticed and retried through."""
    from kubeaccel.spark import submit as submitting

    monkeypatch.setattr(submitting, "WAIT_WINDOW_SECONDS", 2.0)

    def pause() -> None:
        private.pause()
        try:
            time.sleep(PAUSE_SECONDS)
        finally:
            private.resume()

    started = time.monotonic()
    code, output, error = _submit_wait_through(private, namespace, pause)
    assert code == 3, (output, error)
    assert "retrying in" in output  # it noticed the outage and rode it out
    assert "driver exited with code 3" in output
    assert time.monotonic() - started >= PAUSE_SECONDS


def test_wait_rides_out_a_killed_apiserver_until_it_is_repaired(private: PrivateCluster, namespace: str) -> None:
    """Killed with the cluster's supervisor stopped (else it restarts the apiserver before `--wait` notices),
    down for a few seconds, then repaired in place by `cluster up` (same port, same data)."""
    from kubeaccel.cluster import supervisor
    from kubeaccel.cluster.layout import Layout
    from kubeaccel.cluster.lifecycle import up

    before = private.apiserver_pid()

    def kill_then_repair() -> None:
        supervisor.stop(Layout(private.state_dir))
        os.kill(before, signal.SIGKILL)
        time.sleep(5)
        up(private.spec)

    code, output, error = _submit_wait_through(private, namespace, kill_then_repair)
    assert code == 3, (output, error)
    assert "retrying in" in output and "cannot reach" in output
    assert private.apiserver_pid() != before


def test_stall_right_after_the_pod_create_reports_the_running_pod(
    private: PrivateCluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPARK_USER", SPARK_USER)
    kube = Kube.connect(kubeconfig=private.kubeconfig)
    original = Ledger.step_done
    resumer: list[threading.Timer] = []

    def stall_after_the_pod(ledger: Ledger) -> None:
        original(ledger)
        if ledger.objects and ledger.objects[-1][0] == "Pod" and not resumer:
            private.pause()
            resumer.append(threading.Timer(30, private.resume))
            resumer[0].start()

    monkeypatch.setattr(Ledger, "step_done", stall_after_the_pod)
    request = SubmitRequest(
        "local:///opt/app.py",
        master=f"k8s://{kube.server}",
        conf={"spark.kubernetes.namespace": namespace, "spark.kubernetes.container.image": "i", **ON_KWOK},
    )
    try:
        with pytest.raises(RollbackIncompleteError) as info:
            submit(request, kube=kube, check_quota=False)
    finally:
        resumer[0].join() if resumer else private.resume()
    error = info.value
    assert error.exit_code == 4
    kinds = [item.kind for item in error.left]
    assert kinds[0] == "Pod" and "Service" in kinds
    pod = error.left[0].name
    assert f"the driver pod {namespace}:{pod} may be running" in error.message
    from lightkube.resources.core_v1 import Pod

    assert kube.get(Pod, pod, namespace=namespace)  # really left, as reported
    command = (error.hint or "").removeprefix("remove them with: ")
    argv = shlex.split(command)
    subprocess.run(
        [KUBECTL, f"--kubeconfig={private.kubeconfig}", *argv[1:]], check=True, capture_output=True, timeout=60
    )
    # gone, or going (deleted with the default grace period: kwok may be down after the stall)
    assert all(p["metadata"].get("deletionTimestamp") for p in kube.list_raw(Pod, namespace))


def test_wait_gives_up_on_a_dead_apiserver_with_exit_4(private: PrivateCluster, namespace: str) -> None:
    """Last in the module: with its supervisor stopped, the private cluster's apiserver does not come back."""
    from kubeaccel.cluster import supervisor
    from kubeaccel.cluster.layout import Layout

    kube = Kube.connect(kubeconfig=private.kubeconfig)
    request = SubmitRequest(
        "local:///opt/app.py",
        master=f"k8s://{kube.server}",
        conf={"spark.kubernetes.namespace": namespace, "spark.kubernetes.container.image": "i", **ON_KWOK},
    )
    sid = submit(request, kube=kube, check_quota=False)
    supervisor.stop(Layout(private.state_dir))
    os.kill(private.apiserver_pid(), signal.SIGKILL)
    retries: list[float] = []
    started = time.monotonic()
    with pytest.raises(UnavailableError) as info:
        wait(kube, sid, outage_seconds=6, on_retry=lambda _error, pause: retries.append(pause))
    elapsed = time.monotonic() - started
    assert info.value.exit_code == 4
    assert f"gave up waiting for {sid}" in info.value.message
    assert "may still be running" in (info.value.hint or "")
    assert len(retries) >= 3 and retries[:3] == [0.5, 1.0, 2.0]  # exponential backoff
    assert 6 <= elapsed < 30  # bounded
    assert isinstance(info.value, KubeaccelError)
