"""A submit interrupted or failing at any point leaves nothing, or says exactly what it left (real apiserver).

Matrix: SIGINT, SIGTERM and SIGHUP injected after each write of a submit (two uploads to a file:// store,
the quota lock, the driver pod, each owned object, the lock release) -> exit 128 + signal, no object, no
upload directory, the lock free; the CLI as a real process (the signal handling is process-wide).
A user who may create but not delete: the leftovers and the kubectl command that removes them are
printed (and in -o json), the command works; a failing create (409) reports the same way.

The injection is the test-only `KUBEACCEL_TEST_SIGNAL_AFTER_WRITE=N:SIG` (see kubeaccel.spark.rollback).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fixtures.cluster import KUBECTL
from fixtures.rbac import rule
from fixtures.spark import ON_KWOK, SPARK_USER

import kubeaccel
from kubeaccel.kube.client import Kube
from kubeaccel.kube.tenancy import create_tenant
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.reservation import LEASE_NAME
from kubeaccel.spark.rollback import TEST_SIGNAL_ENV
from kubeaccel.spark.submit import prepare

pytestmark = pytest.mark.cluster

SRC = Path(kubeaccel.__file__).resolve().parents[1]


def _confs(namespace: str, store: Path) -> dict[str, str]:
    return {
        "spark.kubernetes.namespace": namespace,
        "spark.kubernetes.container.image": "spark:test",
        "spark.kubernetes.file.upload.path": store.as_uri(),
        "spark.executor.instances": "1",
        **ON_KWOK,
    }


def _app(tmp_path: Path) -> tuple[Path, Path]:
    app, data = tmp_path / "job.py", tmp_path / "lookup.csv"
    app.write_text("print('hi')\n")
    data.write_text("a,b\n")
    return app, data


def run_submit(
    kube: Kube, kubeconfig: Path, namespace: str, tmp_path: Path, *extra: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """`kubeaccel spark submit` as its own process, with a local app and one --files file to upload."""
    app, data = _app(tmp_path)
    confs = [
        arg for key, value in _confs(namespace, tmp_path / "store").items() for arg in ("--conf", f"{key}={value}")
    ]
    command = [sys.executable, "-m", "kubeaccel.cli", "spark", "submit", "--kubeconfig", str(kubeconfig)]
    command += ["--master", f"k8s://{kube.server}", "--name", "sig", *confs, "--files", str(data), *extra, str(app)]
    environment = {**os.environ, "PYTHONPATH": str(SRC), "SPARK_USER": SPARK_USER, **(env or {})}
    return subprocess.run(command, capture_output=True, text=True, env=environment, timeout=120, check=False)


def writes_of_a_submit(kube: Kube, namespace: str, tmp_path: Path) -> int:
    """2 uploads + lock + driver pod + each owned object + lock release (from the app's own manifests)."""
    app, data = _app(tmp_path)
    request = SubmitRequest(
        str(app), master=f"k8s://{kube.server}", files=(str(data),), conf=_confs(namespace, tmp_path / "store")
    )
    return 2 + 1 + 1 + len(prepare(request).manifests.owned) + 1


def left_in(kube: Kube, namespace: str) -> list[str]:
    """Every object a submit creates that is in the namespace now (not counting the cluster's own)."""
    from lightkube.resources.core_v1 import ConfigMap, Pod, Service
    from lightkube.resources.networking_v1 import NetworkPolicy

    found = []
    for res in (Pod, Service, ConfigMap, NetworkPolicy):
        found += [
            f"{res.__name__}/{obj['metadata']['name']}"
            for obj in kube.list_raw(res, namespace)
            if obj["metadata"]["name"] != "kube-root-ca.crt"
        ]
    return found


def lock_holder(kube: Kube, namespace: str) -> str | None:
    from lightkube.resources.coordination_v1 import Lease

    from kubeaccel.errors import NotFoundError

    try:
        lease: Any = kube.get(Lease, LEASE_NAME, namespace=namespace)
    except NotFoundError:
        return None
    return lease.spec.holderIdentity if lease.spec else None


@pytest.fixture
def quota_tenant(kube: Kube, spark_namespace: str) -> str:
    """A tenant with a quota, so a submit also takes (and must release) the quota lock."""
    create_tenant(kube, spark_namespace, {"requests.cpu": "100"})
    return spark_namespace


@pytest.mark.parametrize("signame", ["INT", "TERM", "HUP"])
def test_signal_after_each_write_rolls_everything_back(
    kube: Kube, kubeconfig: Path, quota_tenant: str, tmp_path: Path, signame: str
) -> None:
    writes = writes_of_a_submit(kube, quota_tenant, tmp_path)
    signum = signal.Signals[f"SIG{signame}"]
    for step in range(1, writes + 1):
        result = run_submit(kube, kubeconfig, quota_tenant, tmp_path, env={TEST_SIGNAL_ENV: f"{step}:{signame}"})
        where = f"SIG{signame} after write {step} of {writes}:\n{result.stderr}"
        assert result.returncode == 128 + signum, where
        assert f"interrupted by SIG{signame}: rolled back" in result.stderr, where
        assert "Traceback" not in result.stderr, where
        assert result.stdout == "", where  # no ID of an app that does not exist
        assert left_in(kube, quota_tenant) == [], where
        assert list((tmp_path / "store").glob("spark-upload-*")) == [], where
        assert lock_holder(kube, quota_tenant) is None, where
    # and without a signal the same submit goes through (the matrix above did interrupt real writes)
    result = run_submit(kube, kubeconfig, quota_tenant, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().startswith(f"{quota_tenant}:sig-")
    assert len(left_in(kube, quota_tenant)) == writes - 4  # pod + owned objects
    assert lock_holder(kube, quota_tenant) is None


def _create_but_not_delete(make_user: Any, namespace: str) -> Path:
    return make_user(
        {
            namespace: [
                rule("pods", "create", "get", "list"),
                rule("services", "create", "get", "list"),
                rule("configmaps", "create", "get", "list"),
                rule("resourcequotas", "get", "list"),
                rule("networkpolicies", "create", "get", "list", group="networking.k8s.io"),
                rule("leases", "get", "create", "update", group="coordination.k8s.io"),
            ]
        }
    )


@pytest.mark.parametrize("output", ["table", "json"])
def test_user_who_cannot_delete_is_told_what_is_left_and_how_to_remove_it(
    kube: Kube, kubeconfig: Path, quota_tenant: str, tmp_path: Path, make_user: Any, output: str
) -> None:
    limited = _create_but_not_delete(make_user, quota_tenant)
    pod_write = 4  # after the two uploads and the lock
    result = run_submit(
        kube, limited, quota_tenant, tmp_path, "-o", output, env={TEST_SIGNAL_ENV: f"{pod_write + 1}:TERM"}
    )
    assert result.returncode == 143, result.stderr
    assert "Traceback" not in result.stderr
    left = left_in(kube, quota_tenant)
    [pod] = [item.removeprefix("Pod/") for item in left if item.startswith("Pod/")]
    assert len(left) == 2  # the pod and the first owned object
    assert "the rollback could not remove" in result.stderr
    assert f"the driver pod {quota_tenant}:{pod} may be running" in result.stderr
    for item in left:
        kind, name = item.split("/")
        assert f"{kind.lower()} {name} in {quota_tenant}" in result.stderr
    assert lock_holder(kube, quota_tenant) is None  # the lock is released even so
    assert list((tmp_path / "store").glob("spark-upload-*")) == []  # the store allowed removing the files
    command = result.stderr.split("remove them with: ", 1)[1].strip()
    if output == "json":
        report = json.loads(result.stdout)
        assert report["exit_code"] == 143 and report["error"] == "interrupted by SIGTERM"
        assert sorted(f"{i['kind']}/{i['name']}" for i in report["left_behind"]) == sorted(left)
        assert report["cleanup"] == f"remove them with: {command}"
    # the printed command, run by someone who may delete, removes exactly what was left
    argv = shlex.split(command)
    assert argv[0] == "kubectl"
    subprocess.run([KUBECTL, f"--kubeconfig={kubeconfig}", *argv[1:]], check=True, capture_output=True, timeout=60)
    assert left_in(kube, quota_tenant) == []


def test_failing_create_with_a_user_who_cannot_delete(
    kube: Kube, kubeconfig: Path, quota_tenant: str, tmp_path: Path, make_user: Any
) -> None:
    """Not a signal: the apiserver refuses the driver's Service -> the same report, with that error's exit code."""
    limited = _create_but_not_delete(make_user, quota_tenant)
    # the apiserver refuses the driver's Service: a quota of zero services
    kube.apply(
        {
            "apiVersion": "v1",
            "kind": "ResourceQuota",
            "metadata": {"name": "no-services", "namespace": quota_tenant},
            "spec": {"hard": {"services": "0"}},
        },
        namespace=quota_tenant,
    )
    result = run_submit(kube, limited, quota_tenant, tmp_path)
    assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
    left = left_in(kube, quota_tenant)
    assert [item for item in left if item.startswith("Pod/")], left
    assert "the rollback could not remove" in result.stderr
    assert "may be running" in result.stderr
    assert "kubectl delete --namespace" in result.stderr
