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

from kubeaccel.errors import ConfigError, KubeaccelError, NotFoundError
from kubeaccel.kube.client import Kube
from kubeaccel.spark import uploads
from kubeaccel.spark.builder import AppManifests, Generated, build, owner_reference
from kubeaccel.spark.conf import SubmitRequest, master_url, resolve_conf
from kubeaccel.spark.ids import SubmissionId
from kubeaccel.spark.preflight import preflight
from kubeaccel.spark.resources import app_requests

CONTEXT_KEY = "spark.kubernetes.context"


@dataclass
class Prepared:
    """Everything decided before the first API write."""

    request: SubmitRequest
    conf: dict[str, str]
    namespace: str
    plan: uploads.UploadPlan
    manifests: AppManifests


def connect_for(conf: Mapping[str, str], *, context: str | None = None, kubeconfig: str | Path | None = None) -> Kube:
    """The client spark-submit would use: the master URL's server with the kubeconfig's credentials."""
    return Kube.connect(
        kubeconfig=kubeconfig, context=context or conf.get(CONTEXT_KEY), server=master_url(conf["spark.master"])
    )


def spark_user() -> str:
    return os.environ.get("SPARK_USER") or getpass.getuser()


def _read(uri: str) -> str:
    if uploads.is_local(uri):
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.is_file():
            raise NotFoundError(f"pod template {uri!r} does not exist", hint="check the pod template path")
        return path.read_text()
    import fsspec

    with fsspec.open(uri, "r") as handle:
        text: str = handle.read()
        return text


def load_driver_template(uri: str) -> dict[str, Any]:
    import yaml

    try:
        template = yaml.safe_load(_read(uri))
    except yaml.YAMLError as exc:
        raise ConfigError(f"pod template {uri!r} is not valid YAML: {exc}", hint="fix the template file") from exc
    if not isinstance(template, dict) or template.get("kind", "Pod") != "Pod":
        raise ConfigError(f"pod template {uri!r} is not a Pod", hint="a pod template is a `kind: Pod` manifest")
    return template


def prepare(
    request: SubmitRequest,
    *,
    context_namespace: str | None = None,
    generated: Generated | None = None,
    upload_id: str | None = None,
) -> Prepared:
    """Pure apart from reading local files: validate everything and build the manifests."""
    conf = resolve_conf(request)
    namespace = conf.get("spark.kubernetes.namespace") or context_namespace or "default"
    plan = uploads.plan_uploads(request, conf, upload_id)
    assert plan.request is not None
    conf = plan.conf
    app_requests(conf)  # validates cores, memory and accelerator confs of executors too
    driver_template = executor_template = None
    if conf.get("spark.kubernetes.driver.podTemplateFile"):
        driver_template = load_driver_template(conf["spark.kubernetes.driver.podTemplateFile"])
    if conf.get("spark.kubernetes.executor.podTemplateFile"):
        executor_template = _read(conf["spark.kubernetes.executor.podTemplateFile"])
    manifests = build(
        plan.request,
        conf,
        namespace,
        generated or Generated.fresh(spark_user()),
        driver_template=driver_template,
        executor_template_text=executor_template,
    )
    return Prepared(plan.request, conf, namespace, plan, manifests)


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
    request: SubmitRequest,
    *,
    kube: Kube | None = None,
    context: str | None = None,
    kubeconfig: str | Path | None = None,
    check_quota: bool = True,
    progress: uploads.Progress | None = None,
    generated: Generated | None = None,
) -> SubmissionId:
    """Submit `request` in cluster mode and return its ID (`namespace:driver-pod`).

    Everything that can be checked locally is checked before the first connection is made.
    """
    prepared = prepare(request, generated=generated)
    kube = kube or connect_for(prepared.conf, context=context, kubeconfig=kubeconfig)
    if "spark.kubernetes.namespace" not in prepared.conf and kube.context_namespace:
        prepared = prepare(request, context_namespace=kube.context_namespace, generated=generated)
    if check_quota:
        preflight(kube, prepared.namespace, prepared.conf)
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
