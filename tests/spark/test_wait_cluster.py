"""`submit --wait` follows the driver to its end and exits with the driver's exit code.

The test writes the driver's final status itself, through the status subresource, exactly as the
kubelet (or kwok) reports a finished container: a real API round trip, no image needed.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from fixtures.spark import ON_KWOK_ARGS, run_cli

from kubeaccel.kube.client import Kube
from kubeaccel.spark import manage

pytestmark = pytest.mark.cluster


def _finish_driver_when_it_appears(kube: Kube, namespace: str, exit_code: int) -> threading.Thread:
    from lightkube.resources.core_v1 import Pod
    from lightkube.types import PatchType

    def finish() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            pods = kube.list(Pod, namespace=namespace, labels={"spark-role": "driver"})
            if pods:
                time.sleep(0.5)  # let `--wait` see the pod before it ends
                status = {
                    "status": {
                        "phase": "Failed" if exit_code else "Succeeded",
                        "containerStatuses": [
                            {
                                "name": "spark-kubernetes-driver",
                                "image": "spark:test",
                                "imageID": "",
                                "ready": False,
                                "restartCount": 0,
                                "state": {
                                    "terminated": {
                                        "exitCode": exit_code,
                                        "reason": "Error" if exit_code else "Completed",
                                        "startedAt": "2026-01-01T00:00:00Z",
                                        "finishedAt": "2026-01-01T00:01:00Z",
                                    }
                                },
                            }
                        ],
                    }
                }
                kube.client.patch(
                    Pod.Status, pods[0].metadata.name, status, namespace=namespace, patch_type=PatchType.MERGE
                )
                return
            time.sleep(0.1)

    thread = threading.Thread(target=finish, daemon=True)
    thread.start()
    return thread


def test_submit_wait_exits_with_the_drivers_code(kube: Kube, kubeconfig: Path, spark_namespace: str) -> None:
    finisher = _finish_driver_when_it_appears(kube, spark_namespace, exit_code=3)
    code, output, error = run_cli(
        [
            "spark",
            "submit",
            "--wait",
            "--kubeconfig",
            str(kubeconfig),
            "--master",
            f"k8s://{kube.server}",
            "--conf",
            f"spark.kubernetes.namespace={spark_namespace}",
            "--conf",
            "spark.kubernetes.container.image=img",
            *ON_KWOK_ARGS,
            "local:///opt/app.py",
        ]
    )
    finisher.join(timeout=30)
    assert code == 3, (output, error)
    assert "driver exited with code 3" in output


def test_wait_timeout(kube: Kube, kubeconfig: Path, spark_namespace: str) -> None:
    code, output, error = run_cli(
        [
            "spark",
            "submit",
            "--wait",
            "--wait-timeout",
            "1",
            "--kubeconfig",
            str(kubeconfig),
            "--master",
            f"k8s://{kube.server}",
            "--conf",
            f"spark.kubernetes.namespace={spark_namespace}",
            "--conf",
            "spark.kubernetes.container.image=img",
            *ON_KWOK_ARGS,
            "local:///opt/app.py",
        ]
    )
    assert code == 124, (output, error)
    assert "after 1s" in str(error)


@pytest.mark.parametrize(("finish", "code"), [("Failed", 1)])
def test_submit_wait_with_kwok_finishing_the_driver(
    kube: Kube, kubeconfig: Path, spark_namespace: str, finish: str, code: int
) -> None:
    """kwok (the local cluster's node simulator) ends a pod annotated kubeaccel.io/kwok-finish."""
    result, output, error = run_cli(
        [
            "spark",
            "submit",
            "--wait",
            "--kubeconfig",
            str(kubeconfig),
            "--master",
            f"k8s://{kube.server}",
            "--conf",
            f"spark.kubernetes.namespace={spark_namespace}",
            "--conf",
            "spark.kubernetes.container.image=img",
            *ON_KWOK_ARGS,
            "--conf",
            f"spark.kubernetes.driver.annotation.kubeaccel.io/kwok-finish={finish}",
            "local:///opt/app.py",
        ]
    )
    assert result == code, (output, error)
    assert f": {finish}" in output
    [app] = manage.list_apps(kube, namespace=spark_namespace)
    assert (app.phase, app.exit_code) == (finish, code)
