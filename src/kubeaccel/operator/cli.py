"""`kubeaccel operator`: the SparkApplication controller and its CRDs."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from kubeaccel.cliopts import connection_options
from kubeaccel.errors import ConfigError

if TYPE_CHECKING:
    from kubeaccel.kube.client import Kube


@click.group()
def operator() -> None:
    """The SparkApplication controller (sparkoperator.k8s.io/v1beta2) and its CRDs."""


@operator.command("crds")
def crds() -> None:
    """Print the SparkApplication and ScheduledSparkApplication CRDs as YAML.

    \b
    Example:
      kubeaccel operator crds | kubectl apply -f -
    """
    from kubeaccel.operator.crds import crds_yaml

    click.echo(crds_yaml(), nl=False)


def _connect(kubeconfig: str | None, context: str | None) -> Kube:
    import os

    from kubeaccel.kube.client import Kube

    if kubeconfig or context or os.environ.get("KUBECONFIG") or not os.environ.get("KUBERNETES_SERVICE_HOST"):
        return Kube.connect(kubeconfig=kubeconfig, context=context)
    from kubeaccel.kube.dra import connect

    return connect()  # in a pod: the ServiceAccount's token, re-read as it rotates


def _listen_address(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"--listen {text!r} is not HOST:PORT", hint="e.g. --listen 0.0.0.0:8080")
    return host or "0.0.0.0", int(port)


@operator.command("run")
@click.option(
    "--namespace", "-n", "namespaces", multiple=True, help="Watch only this namespace (repeatable; default: all)."
)
@click.option("--workers", type=click.IntRange(1, 64), default=4, show_default=True, help="Apps reconciled at once.")
@click.option(
    "--listen", default="0.0.0.0:8080", show_default=True, help="HOST:PORT of /metrics, /healthz and /readyz."
)
@click.option(
    "--leader-elect/--no-leader-elect",
    default=False,
    show_default=True,
    help="Reconcile only while holding a coordination.k8s.io Lease (run 2 replicas for failover).",
)
@click.option(
    "--lease-namespace",
    default=None,
    help="Namespace of the Lease (default: $POD_NAMESPACE, else the context's namespace, else default).",
)
@click.option("--lease-name", default="kubeaccel-operator", show_default=True, help="Name of the Lease.")
@connection_options
def run(
    *,
    namespaces: tuple[str, ...],
    workers: int,
    listen: str,
    leader_elect: bool,
    lease_namespace: str | None,
    lease_name: str,
    kubeconfig: str | None,
    context: str | None,
) -> None:
    """Run the SparkApplication controller until SIGTERM or SIGINT.

    \b
    Example:
      kubeaccel operator crds | kubectl apply -f -
      kubeaccel operator run --namespace team-a --listen 127.0.0.1:8080
    """
    import logging
    import os
    import signal
    import threading
    from datetime import UTC, datetime

    from kubeaccel.kube.client import ALL_NAMESPACES
    from kubeaccel.operator.controller import Controller
    from kubeaccel.operator.others import check_no_other_controller
    from kubeaccel.operator.serve import serve

    host, port = _listen_address(listen)
    kube = _connect(kubeconfig, context)
    check_no_other_controller(kube, datetime.now(UTC))  # two controllers would submit every app twice
    controller = Controller(kube, namespaces or (ALL_NAMESPACES,), workers=workers)
    controller.metrics.track_states(controller.cache.states)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    elector = None
    if leader_elect:
        from kubeaccel.operator.leader import LeaderElector

        def lost() -> None:  # end at once: a standby may take the Lease soon, and two must never submit
            logging.getLogger(__name__).error("leadership lost: exiting")
            os._exit(1)

        namespace = lease_namespace or os.environ.get("POD_NAMESPACE") or kube.namespace
        elector = LeaderElector(kube, namespace, name=lease_name, on_started=controller.start, on_lost=lost)
        threading.Thread(target=elector.run, args=(stop,), name="leader", daemon=True).start()
    else:
        controller.start()

    def healthy() -> bool:
        return controller.healthy() or (elector is not None and not elector.leading.is_set())

    def ready() -> bool:  # a standby is ready to take over
        return controller.synced.is_set() or (elector is not None and not elector.leading.is_set())

    server = serve(host, port, controller.metrics.registry, healthy, ready)
    where = ", ".join(namespaces) or "all namespaces"
    click.echo(f"kubeaccel operator: watching {where}; probes on {host}:{server.server_port}", err=True)
    try:
        stop.wait()
    finally:
        server.shutdown()
        controller.stop()
        if elector is not None:
            elector.release()
