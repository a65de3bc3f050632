"""``kubeaccel dra``: run the DRA driver, show what it would publish, print its DeviceClasses, check any driver."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
from pathlib import Path

import click

from kubeaccel.cliopts import PathParam, echo_verdict, print_table
from kubeaccel.devices.config import build_resources, load_config
from kubeaccel.dra.model import DEFAULT_DRIVER, Pool, check_driver_name, device_class, resource_slices
from kubeaccel.dra.registration import DEFAULT_PLUGINS_DIR, DEFAULT_REGISTRY_DIR

_config_option = click.option(
    "--config", "config_path", required=True, type=PathParam(path_type=Path, dir_okay=False),
    envvar="KUBEACCEL_DRA_CONFIG", show_envvar=True,
    help="Driver config (YAML): the resources and their backends (the same format as `plugin run`).",
)
_driver_option = click.option(
    "--driver", default=DEFAULT_DRIVER, show_default=True, envvar="KUBEACCEL_DRA_DRIVER", show_envvar=True,
    help="The DRA driver name (a DNS subdomain you own).",
)
_root_option = click.option("--root", type=PathParam(path_type=Path, file_okay=False), default=Path("/"),
                            show_default=True, help="Prefix for /dev and /sys (a fake tree for testing).")
_dir = PathParam(path_type=Path, file_okay=False)


def _default_node() -> str:
    return os.environ.get("NODE_NAME") or socket.gethostname()


@click.group()
def dra() -> None:
    """Node side, DRA: run, inspect and check Dynamic Resource Allocation drivers."""


@dra.command()
@_config_option
@_driver_option
@click.option("--node-name", default=None, envvar="NODE_NAME", show_envvar=True,
              help="This node's name in the cluster (default: the host name).")
@click.option("--registry-dir", type=_dir, default=DEFAULT_REGISTRY_DIR, show_default=True,
              help="The kubelet's plugin registration directory.")
@click.option("--plugins-dir", type=_dir, default=DEFAULT_PLUGINS_DIR, show_default=True,
              help="Where the DRA endpoint goes (<dir>/<driver>/dra.sock).")
@click.option("--state-dir", type=_dir, default=Path("/var/lib/kubeaccel/dra"), show_default=True,
              help="The checkpoint of prepared claims (keep it across restarts).")
@click.option("--cdi-dir", type=_dir, default=Path("/var/run/cdi"), show_default=True,
              help="Where CDI specs are written (one of the runtime's cdi_spec_dirs).")
@click.option("--kubeconfig", type=PathParam(path_type=Path, dir_okay=False), default=None,
              help="Kubeconfig (default: KUBECONFIG, else the pod's service account).")
@click.option("--device-classes/--no-device-classes", default=False, show_default=True,
              help="Also apply a DeviceClass per resource (needs cluster-wide RBAC on deviceclasses).")
@click.option("--withdraw/--no-withdraw", default=False, show_default=True,
              help="Delete this node's ResourceSlices on a clean stop.")
@click.option("--publish/--no-publish", default=True, show_default=True,
              help="Publish ResourceSlices (off: serve the kubelet only, e.g. for protocol checks).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, envvar="KUBEACCEL_METRICS_PORT",
              show_envvar=True, help="Serve Prometheus /metrics here.")
@click.option("--metrics-addr", default="0.0.0.0", show_default=True, help="Address for the metrics endpoint.")
@_root_option
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
def run(  # noqa: PLR0917 - one parameter per click option
    config_path: Path, driver: str, node_name: str | None, registry_dir: Path, plugins_dir: Path, state_dir: Path,
    cdi_dir: Path, kubeconfig: Path | None, device_classes: bool, withdraw: bool, publish: bool,
    metrics_port: int | None, metrics_addr: str, root: Path, log_level: str,
) -> None:
    """Serve every configured resource to the kubelet through DRA until SIGTERM.

    Exit 1 when another driver holds --state-dir (its PID is named); 2 on bad input or damaged state.
    """
    _early_signals()  # a SIGTERM while starting ends the process at once; the daemon's loop takes over
    from kubeaccel.dra.daemon import DraDaemon, KubeAccess, Options, check_dirs

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if log_level != "debug":  # one line per API request is noise at info
        for name in ("httpx", "httpx2", "httpcore"):
            logging.getLogger(name).setLevel(logging.WARNING)
    check_driver_name(driver)
    options = Options(node=node_name or _default_node(), driver=driver, registry_dir=registry_dir,
                      plugins_dir=plugins_dir, state_dir=state_dir, cdi_dir=cdi_dir, root=root,
                      device_classes=device_classes, withdraw=withdraw, publish=publish,
                      metrics_port=metrics_port, metrics_addr=metrics_addr)
    check_dirs(options)
    load_config(config_path)  # fail before anything starts when the file is wrong
    access = KubeAccess(kubeconfig)
    access.kube()  # a missing or broken kubeconfig is a clear error now (no request is sent yet)
    daemon = DraDaemon(lambda: load_config(config_path), options, access=access)
    asyncio.run(daemon.run(handle_signals=True))


def _early_signals() -> None:
    """Until the event loop runs: SIGTERM/SIGINT end the process cleanly (``finally`` blocks still run)."""

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)


@dra.command()
@_config_option
@_driver_option
@click.option("--node-name", default=None, envvar="NODE_NAME", help="Node name for the slices (default: host name).")
@click.option("--output", "-o", type=click.Choice(["table", "yaml"]), default="table", show_default=True,
              help="table: one row per device; yaml: the ResourceSlices the driver would publish.")
@_root_option
def devices(config_path: Path, driver: str, node_name: str | None, output: str, root: Path) -> None:
    """Show the devices each resource would publish, without starting anything."""
    check_driver_name(driver)
    config = load_config(config_path)
    node = node_name or _default_node()
    pairs = build_resources(config, root=root)  # a skipped optional entry leaves no gap: keep the pairs
    try:
        found = [(r.name, b.scan()) for r, b in pairs]
    finally:
        for _, backend in pairs:
            backend.close()
    pools = [Pool.of(node, name, devs) for name, devs in found]
    if output == "yaml":
        import yaml

        docs = [s for p in pools for s in resource_slices(node, driver, p, 1)]
        click.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)
        return
    from rich.table import Table

    table = Table("pool", "device", "index", "health", "NUMA", "device nodes", title=f"DRA devices ({driver})")
    for pool in pools:
        if not pool.devices:
            table.add_row(pool.name, "-", "-", "-", "-", "(no devices found)")
        for name, dev in pool.devices.items():
            table.add_row(pool.name, name, dev.index,
                          f"[green]{dev.health}[/]" if dev.healthy else f"[red]{dev.health}[/] (tainted)",
                          "-" if dev.numa_node is None else str(dev.numa_node),
                          ", ".join(n.host_path for n in dev.nodes) or "-")
    print_table(table)


@dra.command("device-classes")
@_config_option
@_driver_option
@click.option("--extended-resource/--no-extended-resource", default=True, show_default=True,
              help="Set extendedResourceName, so `limits: {<resource>: N}` is served by DRA.")
def device_classes(config_path: Path, driver: str, extended_resource: bool) -> None:
    """Print a DeviceClass per resource (YAML; pipe it into `kubectl apply -f -`)."""
    import yaml

    check_driver_name(driver)
    config = load_config(config_path)
    docs = [device_class(driver, r.name, extended_resource=extended_resource) for r in config.resources]
    click.echo(yaml.safe_dump_all(docs, sort_keys=False), nl=False)


@dra.command()
@click.option("--registry-dir", type=_dir, default=DEFAULT_REGISTRY_DIR, show_default=True,
              help="Where the driver under test puts its registration socket.")
@click.option("--driver", default=None, help="Check this driver (default: the only one registered there).")
@click.option("--node-name", default=None, help="The node the driver publishes for (default: the host name).")
@click.option("--namespace", default="default", show_default=True, help="Where test claims are created.")
@click.option("--kubeconfig", type=PathParam(path_type=Path, dir_okay=False), default=None,
              help="Kubeconfig of the cluster the driver publishes to (default: KUBECONFIG).")
@click.option("--cdi-dir", type=_dir, default=None, help="Also check that CDI specs appear and go here.")
@click.option("--timeout", type=click.FloatRange(min=0.1), default=10.0, show_default=True,
              help="Seconds to wait for each answer, for the registration socket and for ResourceSlices.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(  # noqa: PLR0917
    registry_dir: Path, driver: str | None, node_name: str | None, namespace: str, kubeconfig: Path | None,
    cdi_dir: Path | None, timeout: float, as_json: bool,
) -> None:
    """Play the kubelet against any DRA driver and grade it (exit 1 on any FAIL; WARN exits 0)."""
    from kubeaccel.dra.checker import run_checks

    if kubeconfig is not None:  # a broken kubeconfig is one clear error before the first step, not a FAIL
        from kubeaccel.dra.daemon import KubeAccess

        KubeAccess(kubeconfig).kube()
    report = asyncio.run(run_checks(registry_dir, driver=driver, node=node_name or _default_node(),
                                    namespace=namespace, kubeconfig=kubeconfig, cdi_dir=cdi_dir, timeout=timeout))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=1))
    echo_verdict(report, title=f"DRA driver check: {report.driver or '?'}", subject="the DRA driver",
                 table=not as_json)
