"""``kubeaccel devices``: every accelerator of the cluster in one table.

Exit codes: 0; 7 when some source did not answer (its rows are listed as unavailable, never dropped);
the documented codes of kubeaccel.errors when nothing could be read.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import click

from kubeaccel.cliopts import connection_options, echo_json, echo_table
from kubeaccel.view.apps import PodDevices
from kubeaccel.view.model import Filters, Problem, View, filtered
from kubeaccel.view.table import COLUMNS, PROBLEM_COLUMNS, WIDE_COLUMNS, cells, problem_cells, to_json

if TYPE_CHECKING:
    from kubeaccel.kube.client import Kube
    from kubeaccel.view.live import LiveSources
    from kubeaccel.view.readers import Sources

PARTIAL_EXIT_CODE = 7  # as `spark kill`'s: some of the answer is missing


@click.command("devices")
@connection_options
@click.option("--node", default=None, help="Only this node's devices.")
@click.option("--resource", default=None, help="Only this resource (nec.com/ve, nvidia.com/gpu, a DRA resource).")
@click.option("--namespace", "-n", default=None, help="Only devices held by pods of this namespace.")
@click.option("--unhealthy", is_flag=True, help="Only devices that are not healthy.")
@click.option("--output", "-o", type=click.Choice(["table", "wide", "json"]), default="table", show_default=True,
              help="table for people (wide: index, NUMA, tenant, since), json for scripts.")
def devices(  # noqa: PLR0917 - click passes the options positionally
    kubeconfig: str | None, context: str | None, node: str | None, resource: str | None,
            namespace: str | None, unhealthy: bool, output: str) -> None:
    """Every accelerator of the cluster: node, health and holder (pod, Spark app, tenant).

    Device-plugin devices come from each plugin pod's metrics through the API server's pod proxy,
    DRA devices from ResourceSlices and ResourceClaims. A plugin or node that does not answer is
    listed as unavailable, and the exit code is then 7."""
    from kubeaccel.kube.client import Kube
    from kubeaccel.view.readers import read_view

    kube = Kube.connect(kubeconfig=kubeconfig, context=context)
    try:
        view = filtered(read_view(kube, namespace=namespace),
                        Filters(node=node, resource=resource, namespace=namespace, unhealthy=unhealthy))
    finally:
        kube.close()
    if output == "json":
        echo_json(to_json(view))
    else:
        wide = output == "wide"
        if view.rows:
            echo_table(WIDE_COLUMNS if wide else COLUMNS, (cells(r, wide=wide) for r in view.rows))
        else:
            click.echo("no devices match", err=True)
        if view.problems:
            click.echo("unavailable (their devices are not listed above):", err=True)
            _echo_problems(view)
    if view.partial:
        sys.exit(PARTIAL_EXIT_CODE)


def _echo_problems(view: View) -> None:
    """The unavailable sources on stderr, so the device table on stdout stays whole for a pipe."""
    rows = [list(PROBLEM_COLUMNS), *(problem_cells(p) for p in view.problems)]
    rows = [["".join(ch if ch.isprintable() else "?" for ch in c)[:400] for c in r] for r in rows]
    widths = [max(len(r[i]) for r in rows) for i in range(len(PROBLEM_COLUMNS))]
    click.echo("\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows),
               err=True)


@dataclass(frozen=True)
class AppDevicesReport:
    """What `spark status --devices` adds: per app, its pods' devices; and what may hide some."""

    rows: list[tuple[str, PodDevices]]  # (the app's submission ID, one pod's devices of one resource)
    problems: list[Problem]
    exit_code: int = PARTIAL_EXIT_CODE

    @property
    def partial(self) -> bool:
        return bool(self.problems)

    @property
    def json(self) -> dict[str, Any]:
        by_app: dict[str, list[dict[str, object]]] = {}
        for app, pod in self.rows:
            by_app.setdefault(app, []).append(pod.as_dict())
        return {"devices": by_app, "devicesUnavailable": [asdict(p) for p in self.problems]}

    def echo(self) -> None:
        click.echo()
        if self.rows:
            echo_table(("ID", "POD", "ROLE", "NODE", "RESOURCE", "ADDRESSES", "UNHEALTHY"),
                       ((app, p.pod, p.role or "-", p.node, p.resource, ",".join(p.addresses),
                         ",".join(p.unhealthy) or "-") for app, p in self.rows))
        else:
            click.echo("no devices held by these apps' pods", err=True)
        if self.problems:
            click.echo("unavailable (these apps' devices there are not listed above):", err=True)
            _echo_problems(View((), tuple(self.problems)))


def app_devices_report(kube: Kube, apps: Sequence[Any], output: str) -> AppDevicesReport:
    """`spark status --devices`: the devices of each app (``manage.AppStatus``: id, namespace, app_id)."""
    from kubeaccel.view.readers import read_apps

    by_app, problems = read_apps(kube, [(a.namespace, a.app_id) for a in apps])
    rows = [(str(a.id), pod) for a in apps for pod in by_app.get((a.namespace, a.app_id), [])]
    return AppDevicesReport(rows, problems)


def page_document(sources: Sources) -> dict[str, Any]:
    """The page's JSON document from the sources (pure)."""
    from kubeaccel.view import page
    from kubeaccel.view.model import tenants

    return page.snapshot(sources.view(), sources.pods, sources.namespaces, sources.quotas,
                         tenants(sources.namespaces))


def live_sources(kube: Kube, namespace: str | None = None) -> LiveSources:
    """The page's sources: read in full each interval, watch events applied in between."""
    from kubeaccel.view.live import LiveSources
    from kubeaccel.view.readers import read_sources

    return LiveSources(lambda: read_sources(kube, namespace=namespace, quotas=True), page_document)


def page_reader(kube: Kube, namespace: str | None = None) -> Callable[[], dict[str, Any]]:
    """What the page's refresher calls: every source read once, as the page's JSON document."""
    from kubeaccel.view.readers import read_sources

    return lambda: page_document(read_sources(kube, namespace=namespace, quotas=True))


@click.command("ui")
@connection_options
@click.option("--port", type=click.IntRange(0, 65535), default=8765, show_default=True,
              help="Port on 127.0.0.1 (0: any free one).")
@click.option("--interval", type=click.FloatRange(0.2, 60), default=1.0, show_default=True,
              help="Seconds between reads of the cluster; the page updates only when something changed.")
def ui(kubeconfig: str | None, context: str | None, port: int, interval: float) -> None:
    """A read-only web page of the cluster's accelerators, on 127.0.0.1 (like kubectl proxy).

    Nodes x devices coloured by health and holder (with the state in words), Spark apps with their
    driver, executors, devices and pending reasons, and tenants' quota use. It updates live
    (server-sent events); assets are served by kubeaccel itself, nothing is fetched from elsewhere."""
    import signal
    import threading

    from kubeaccel.kube.client import Kube
    from kubeaccel.view.readers import start_watches
    from kubeaccel.view.server import UiServer

    kube = Kube.connect(kubeconfig=kubeconfig, context=context)
    live = live_sources(kube)
    server = UiServer(live.update, port=port, interval=interval, render=live.render,
                      watch=lambda changed: start_watches(kube, changed, on_event=live.event))
    server.start()
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    click.echo(f"kubeaccel ui: {server.url} (read-only; Ctrl-C stops)", err=True)
    try:
        done.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        kube.close()
