"""The same SparkApplication submit loop on kopf 1.45, for `bench/controller.py --controller kopf`.

Not part of kubeaccel: the peer the issue asked to measure before choosing the control-loop library. It does
the work the controller does on the paths the benchmark times, through the same code: validate the app
(`operator.api`), map it (`operator.mapping.to_submission`), submit it (`spark.submit`, quota pre-flight and
all-or-nothing create through the kube door), then write SUBMITTED, the app ID and driverInfo into the status
and post one Event; and a driver pod's phase change becomes the app's state. What kopf adds is its own: an
asyncio loop with a thread pool for these synchronous handlers, aiohttp watches, and its progress annotation
on every app. Run as

    python bench/kopf_peer.py --kubeconfig K --namespace NS [--workers 32]
"""

from __future__ import annotations

import sys

if sys.path and sys.path[0] and __file__.startswith(sys.path[0]):
    del sys.path[0]  # this directory holds operator-named files: keep the standard library's first

import argparse
import asyncio
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

import kopf

from kubeaccel.kube.client import Kube
from kubeaccel.operator import kinds, lifecycle
from kubeaccel.operator.api import API_VERSION, APP_KIND, AppState, SparkApplication
from kubeaccel.operator.controller import generated_for
from kubeaccel.operator.mapping import driver_pod_name, resolve_mapped, to_submission
from kubeaccel.spark.submit import submit

KUBE: Kube | None = None
KUBECONFIG = ""
WORKERS = 32
_states: dict[tuple[str, str], str] = {}
_lock = threading.Lock()


def _kube() -> Kube:
    assert KUBE is not None
    return KUBE


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    settings.execution.max_workers = WORKERS
    settings.posting.enabled = False  # one Event per submit, posted below as the controller posts it
    settings.watching.server_timeout = 60


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """The bench's kubeconfig, read by the official client (a dev dependency), as kopf's own login would."""
    import kubernetes

    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=KUBECONFIG, client_configuration=config)
    token = (config.api_key or {}).get("authorization", "").removeprefix("Bearer ").strip() or None
    return kopf.ConnectionInfo(
        server=config.host,
        ca_path=config.ssl_ca_cert,
        insecure=not config.verify_ssl,
        certificate_path=config.cert_file,
        private_key_path=config.key_file,
        token=token,
    )


@kopf.on.create("sparkoperator.k8s.io", "v1beta2", "sparkapplications")
def on_create(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
    app = SparkApplication.model_validate(dict(body))
    namespace = app.metadata.namespace or "default"
    submission = str(uuid.uuid4())
    now = lifecycle.timestamp(datetime.now(UTC))
    generated = generated_for(submission, now)
    owner = {"apiVersion": API_VERSION, "kind": APP_KIND, "name": app.metadata.name, "uid": app.metadata.uid,
             "controller": True, "blockOwnerDeletion": True}  # fmt: skip
    mapped = to_submission(app, master=f"k8s://{_kube().server}", submission_id=submission, owner=owner)
    resolved = resolve_mapped(mapped)
    submit(resolved, kube=_kube(), generated=generated, check_quota=True)
    pod_name = resolved.driver_pod_name or driver_pod_name(app)
    patch.status.update(
        {
            **lifecycle.state_patch(AppState.SUBMITTED),
            "submissionID": submission,
            "lastSubmissionAttemptTime": now,
            "submissionAttempts": 1,
            "executionAttempts": 1,
            "sparkApplicationId": generated.app_id,
            "driverInfo": {"podName": pod_name},
        }
    )
    _kube().create(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{app.metadata.name}.", "namespace": namespace},
            "involvedObject": {"apiVersion": API_VERSION, "kind": APP_KIND, "name": app.metadata.name,
                               "namespace": namespace, "uid": app.metadata.uid},
            "type": "Normal",
            "reason": "SparkApplicationSubmitted",
            "message": f"submitted as {namespace}:{pod_name}",
            "source": {"component": "kopf-peer"},
        },
        namespace=namespace,
    )


@kopf.on.event("", "v1", "pods", labels={"spark-role": "driver"})
def on_driver(body: kopf.Body, **_: Any) -> None:
    labels = body.metadata.labels
    app_name = labels.get("sparkoperator.k8s.io/app-name")
    if not app_name or body.metadata.namespace is None:
        return
    state = lifecycle.pod_state(dict(body)).value
    state = {"PENDING": "SUBMITTED"}.get(state, state)
    key = (body.metadata.namespace, app_name)
    with _lock:
        if _states.get(key) == state:
            return
        _states[key] = state
    _kube().merge_patch(
        kinds.apps().Status, app_name, {"status": lifecycle.state_patch(AppState(state))}, key[0]
    )


def main() -> None:
    global KUBE, KUBECONFIG, WORKERS
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--namespace", required=True)
    parser.add_argument("--workers", type=int, default=32)
    args = parser.parse_args()
    KUBE, KUBECONFIG, WORKERS = Kube.connect(kubeconfig=args.kubeconfig), args.kubeconfig, args.workers
    asyncio.run(kopf.operator(namespaces=[args.namespace], standalone=True, clusterwide=False))


if __name__ == "__main__":
    main()
