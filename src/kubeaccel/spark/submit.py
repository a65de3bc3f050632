"""Submit a cluster-mode app: resolve confs, pre-flight the quota, upload, create, roll back on failure.

    from kubeaccel.spark.conf import SubmitRequest
    from kubeaccel.spark.submit import submit
    sid = submit(SubmitRequest("local:///opt/app.py", master="k8s://https://10.0.0.1:6443",
                               conf={"spark.kubernetes.container.image": "spark:4.3"}))
    print(sid)  # team-a:app-py-1a2b3c4d5e6f-driver

All-or-nothing: the driver pod is created first (as Spark does), then the Service, NetworkPolicy and
ConfigMaps with an owner reference to it; if anything fails part-way, everything created so far and
the uploaded files are deleted before the error is raised.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubeaccel.errors import KubeaccelError
from kubeaccel.kube.client import Kube
from kubeaccel.spark import uploads
from kubeaccel.spark.builder import AppManifests, Generated, build, owner_reference
from kubeaccel.spark.conf import SubmitRequest
from kubeaccel.spark.ids import SubmissionId
from kubeaccel.spark.model import CONTEXT_KEY, ResolvedApp, resolve
from kubeaccel.spark.preflight import preflight

__all__ = ["CONTEXT_KEY", "Prepared", "connect_for", "create", "prepare", "submit", "wait"]


@dataclass
class Prepared:
    """Everything decided before the first API write."""

    app: ResolvedApp
    manifests: AppManifests

    @property
    def namespace(self) -> str:
        return self.manifests.namespace

    @property
    def plan(self) -> uploads.UploadPlan:
        return self.app.uploads

    @property
    def conf(self) -> Mapping[str, str]:
        return self.app.conf


def connect_for(
    app: ResolvedApp | Mapping[str, str], *, context: str | None = None, kubeconfig: str | Path | None = None
) -> Kube:
    """The client spark-submit would use: the master URL's server with the kubeconfig's credentials."""
    if isinstance(app, ResolvedApp):
        return Kube.connect(kubeconfig=kubeconfig, context=context or app.context, server=app.master)
    from kubeaccel.spark.conf import master_url

    return Kube.connect(
        kubeconfig=kubeconfig, context=context or app.get(CONTEXT_KEY), server=master_url(app["spark.master"])
    )


def spark_user() -> str:
    return os.environ.get("SPARK_USER") or getpass.getuser()


def _resolved(request: SubmitRequest | ResolvedApp, upload_id: str | None = None) -> ResolvedApp:
    return request if isinstance(request, ResolvedApp) else resolve(request, upload_id=upload_id)


def prepare(
    request: SubmitRequest | ResolvedApp,
    *,
    context_namespace: str | None = None,
    generated: Generated | None = None,
    upload_id: str | None = None,
) -> Prepared:
    """Pure apart from reading local files: validate everything and build the manifests."""
    app = _resolved(request, upload_id).placed(context_namespace)
    return Prepared(app, build(app, generated or Generated.fresh(spark_user())))


def create(kube: Kube, manifests: AppManifests) -> SubmissionId:
    """Create the driver pod, then its owned objects; on failure delete everything created."""
    namespace = manifests.namespace
    created_pod = kube.create(manifests.driver_pod, namespace=namespace)
    pod_name = manifests.driver_pod_name
    created: list[tuple[str, str]] = []
    try:
        reference = owner_reference(pod_name, created_pod["metadata"]["uid"])
        for manifest in manifests.owned:
            manifest["metadata"]["ownerReferences"] = [reference]
            kube.create(manifest, namespace=namespace)
            created.append((manifest["kind"], manifest["metadata"]["name"]))
    except BaseException:
        _rollback(kube, namespace, pod_name, created)
        raise
    return SubmissionId(namespace, pod_name)


def _rollback(kube: Kube, namespace: str, pod_name: str, created: list[tuple[str, str]]) -> None:
    from lightkube.resources.core_v1 import ConfigMap, Pod, Service
    from lightkube.resources.networking_v1 import NetworkPolicy

    kinds: dict[str, Any] = {"Service": Service, "ConfigMap": ConfigMap, "NetworkPolicy": NetworkPolicy}
    # best effort: if a delete fails, the owner reference lets the garbage collector finish the job
    for kind, name in reversed(created):
        with contextlib.suppress(KubeaccelError):
            kube.delete(kinds[kind], name, namespace=namespace, missing_ok=True)
    with contextlib.suppress(KubeaccelError):
        kube.delete(Pod, pod_name, namespace=namespace, grace_period=0, missing_ok=True)


def submit(
    request: SubmitRequest | ResolvedApp,
    *,
    kube: Kube | None = None,
    context: str | None = None,
    kubeconfig: str | Path | None = None,
    check_quota: bool = True,
    progress: uploads.Progress | None = None,
    generated: Generated | None = None,
) -> SubmissionId:
    """Submit `request` in cluster mode and return its ID (`namespace:driver-pod`).

    Everything that can be checked locally is checked before the first connection is made; the
    packages are looked up in their repositories before anything is created, as spark-submit does.
    """
    from kubeaccel.spark.packages import check_resolvable

    app = _resolved(request)
    check_resolvable(app.packages)
    kube = kube or connect_for(app, context=context, kubeconfig=kubeconfig)
    prepared = prepare(app, context_namespace=kube.context_namespace, generated=generated)
    if check_quota:
        preflight(kube, prepared.app)
    uploads.execute(prepared.plan, prepared.conf, progress)
    try:
        return create(kube, prepared.manifests)
    except BaseException:
        uploads.remove(prepared.plan, prepared.conf)
        raise


def wait(
    kube: Kube,
    sid: SubmissionId,
    *,
    on_change: Callable[[str], None] | None = None,
    poll_seconds: float = 1.0,
    timeout: float | None = None,
) -> int:
    """Follow the driver until it ends; returns its exit code (0 = Succeeded)."""
    from lightkube.resources.core_v1 import Pod

    deadline = None if timeout is None else time.monotonic() + timeout
    last = ""
    while True:
        pod = kube.get(Pod, sid.pod, namespace=sid.namespace)
        phase = (pod.status.phase if pod.status else None) or "Unknown"
        if phase != last and on_change:
            on_change(phase)
        last = phase
        if phase in ("Succeeded", "Failed"):
            code = driver_exit_code(pod)
            return code if code is not None else (0 if phase == "Succeeded" else 1)
        if deadline is not None and time.monotonic() > deadline:
            raise KubeaccelError(
                f"{sid} is still {phase} after {timeout:.0f}s",
                hint="check it with kubeaccel spark status",
                exit_code=124,
            )
        time.sleep(poll_seconds)


def driver_exit_code(pod: Any) -> int | None:
    for status in (pod.status.containerStatuses or []) if pod.status else []:
        terminated = status.state.terminated if status.state else None
        if terminated is not None:
            return int(terminated.exitCode)
    return None
