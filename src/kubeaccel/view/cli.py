"""``kubeaccel devices``: every accelerator of the cluster in one table.

Exit codes: 0; 7 when some source did not answer (its rows are listed as unavailable, never dropped);
the documented codes of kubeaccel.errors when nothing could be read.
"""

from __future__ import annotations

import sys

import click

from kubeaccel.cliopts import connection_options, echo_json, echo_table
from kubeaccel.view.model import Filters, View, filtered
from kubeaccel.view.table import COLUMNS, PROBLEM_COLUMNS, WIDE_COLUMNS, cells, problem_cells, to_json

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
