"""``kubeaccel cluster up | down | status``: a real local Kubernetes for tests and demos."""

from __future__ import annotations

import json
from pathlib import Path

import click
from pydantic import ValidationError

from kubeaccel.cliopts import PathParam, console, print_table
from kubeaccel.errors import ConfigError
from kubeaccel.paths import user_path

_STATE_DIR_HELP = "Where certificates, kubeconfig, data and logs live (default ~/.local/state/kubeaccel/cluster)."


def _state_dir(value: Path | None) -> Path:
    from kubeaccel.cluster.spec import default_state_dir

    return user_path(value or default_state_dir(), "--state-dir").absolute()


@click.group("cluster")
def cluster() -> None:
    """A real local Kubernetes built from upstream: control plane, simulated (kwok) nodes, a real node."""


@cluster.command("up")
@click.option("--state-dir", type=PathParam(path_type=Path, file_okay=False), help=_STATE_DIR_HELP)
@click.option("--nodes", type=int, default=1, show_default=True, help="Number of simulated (kwok) nodes.")
@click.option(
    "--node-resource", "node_resources", multiple=True, metavar="NAME=QUANTITY",
    help="Capacity of each simulated node, repeatable: nec.com/ve=8, cpu=64 "
    "(defaults: cpu=32, memory=128Gi, pods=110).",
)
@click.option("--real-node", is_flag=True, help="Also run a real kubelet with containerd (root, cgroups).")
@click.option("--apiserver-port", type=int, default=0, help="API server port on 127.0.0.1 (default: a free one).")
@click.option("--etcd-port", type=int, default=0, help="Client port for etcd on 127.0.0.1 (default: a free one).")
@click.option("--fresh", is_flag=True,
              help="Replace the cluster already in the state dir with a new one: its data is lost.")
def up_command(
    *, state_dir: Path | None, nodes: int, node_resources: tuple[str, ...], real_node: bool,
    apiserver_port: int, etcd_port: int, fresh: bool,
) -> None:
    """Start the cluster and print its kubeconfig.

    A cluster already in the state dir is reused if healthy, or repaired in place if parts of it died
    (same ports, certificates and data). Only --fresh (or `cluster down`) removes its data.
    """
    from kubeaccel.cluster.lifecycle import up
    from kubeaccel.cluster.spec import ClusterSpec
    from kubeaccel.cluster.spec import node_resources as parse_resources

    resources = parse_resources(node_resources)
    try:
        spec = ClusterSpec(
            state_dir=_state_dir(state_dir), nodes=nodes, node_resources=resources, real_node=real_node,
            apiserver_port=apiserver_port, etcd_port=etcd_port, fresh=fresh,
        )
    except ValidationError as exc:
        problem = exc.errors()[0]
        field = ".".join(str(p) for p in problem["loc"])
        option = "--" + field.replace("_", "-")
        raise ConfigError(f"{option}: {problem['msg']}", hint="see `kubeaccel cluster up --help`") from None
    info = up(spec, progress=lambda line: click.echo(f"• {line}", err=True))
    verb = "already running" if info.already_running else "repaired" if info.repaired else "up"
    click.echo(f"cluster {verb}: {info.server} (Kubernetes v{info.version})", err=True)
    if info.repaired:
        click.echo(f"restarted: {', '.join(info.repaired)} (data, certificates and ports kept)", err=True)
    if info.nodes:
        click.echo(f"simulated nodes: {', '.join(info.nodes)}", err=True)
    if info.real_node:
        click.echo(f"real node: {info.real_node}", err=True)
    click.echo(f"kubectl --kubeconfig {info.kubeconfig} get nodes", err=True)
    click.echo(str(info.kubeconfig))


@cluster.command("down")
@click.option("--state-dir", type=PathParam(path_type=Path, file_okay=False), help=_STATE_DIR_HELP)
def down_command(state_dir: Path | None) -> None:
    """Stop every process of the cluster and remove what `up` created."""
    from kubeaccel.cluster.lifecycle import down

    target = _state_dir(state_dir)
    stopped = down(target)
    click.echo(f"stopped {', '.join(stopped)}" if stopped else f"nothing running in {target}")


@cluster.command("status")
@click.option("--state-dir", type=PathParam(path_type=Path, file_okay=False), help=_STATE_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_command(state_dir: Path | None, as_json: bool) -> None:
    """Show the API server, the processes and the nodes of the cluster; exit 4 if it is not healthy."""
    from kubeaccel.cluster.lifecycle import status
    from kubeaccel.errors import UnavailableError

    info, ready, nodes = status(_state_dir(state_dir))
    healthy = ready and all(info.components.values())
    if as_json:
        click.echo(json.dumps({
            "server": info.server, "kubeconfig": str(info.kubeconfig), "state_dir": str(info.state_dir),
            "version": info.version, "ready": ready, "healthy": healthy, "components": info.components,
            "restarts": info.restarts,
            "nodes": [{"name": n, "ready": r, "allocatable": a} for n, r, a in nodes],
        }, indent=2))
    else:
        from rich.table import Table

        out = console()
        out.print(f"server      {info.server}  ({'ready' if ready else 'NOT READY'})")
        out.print(f"kubeconfig  {info.kubeconfig}")
        out.print(f"state dir   {info.state_dir}")
        def shown(name: str, alive: bool) -> str:
            restarts = info.restarts.get(name, 0)
            return f"{name}:{'up' if alive else 'DEAD'}" + (f" (restarted {restarts}x)" if restarts else "")

        procs = "  ".join(shown(name, alive) for name, alive in sorted(info.components.items()))
        out.print(f"processes   {procs}")
        if nodes:
            table = Table("node", "ready", "allocatable")
            for name, node_ready, allocatable in nodes:
                resources = ", ".join(f"{k}={v}" for k, v in allocatable.items())
                table.add_row(name, "yes" if node_ready else "no", resources)
            print_table(table)
    if not healthy:
        raise UnavailableError(
            "the cluster is not healthy",
            hint="`kubeaccel cluster up` repairs it in place (restarts what died; data, certificates and ports kept)",
        )
