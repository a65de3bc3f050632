"""``kubeaccel plugin``: run the device-plugin daemon, show what it would advertise, check any plugin."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

import click

from kubeaccel.cliopts import PathParam, echo_verdict, print_table
from kubeaccel.plugin.paths import DEFAULT_POD_RESOURCES_SOCKET, DEFAULT_SOCKET_DIR

_config_option = click.option(
    "--config",
    "config_path",
    required=True,
    type=PathParam(path_type=Path, dir_okay=False),
    envvar="KUBEACCEL_PLUGIN_CONFIG",
    show_envvar=True,
    help="Daemon config (YAML): the resources and their backends.",
)


def _socket_dir_option(help_text: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    return click.option(
        "--socket-dir",
        type=PathParam(path_type=Path, file_okay=False),
        default=DEFAULT_SOCKET_DIR,
        show_default=True,
        envvar="KUBEACCEL_SOCKET_DIR",
        show_envvar=True,
        help=help_text,
    )


@click.group()
def plugin() -> None:
    """Node side: run, inspect and check kubelet device plugins."""


@plugin.command()
@_config_option
@_socket_dir_option("The kubelet's device-plugin directory (kubelet.sock lives here).")
@click.option("--metrics-port", type=click.IntRange(0, 65535), default=None, envvar="KUBEACCEL_METRICS_PORT",
              show_envvar=True, help="Serve Prometheus /metrics here.")
@click.option("--metrics-addr", default="127.0.0.1", show_default=True, envvar="KUBEACCEL_METRICS_ADDR",
              show_envvar=True, help="Address for the metrics endpoint (loopback; 0.0.0.0 to serve the pod IP).")
@click.option("--cdi-dir", type=PathParam(path_type=Path, file_okay=False), default=Path("/var/run/cdi"),
              show_default=True, envvar="KUBEACCEL_CDI_DIR", show_envvar=True,
              help="Where resources with `cdi: true` write their CDI spec (the runtime reads /etc/cdi, /var/run/cdi).")
@click.option("--pod-resources-socket", type=PathParam(path_type=Path, dir_okay=False),
              default=DEFAULT_POD_RESOURCES_SOCKET, show_default=True, envvar="KUBEACCEL_POD_RESOURCES_SOCKET",
              show_envvar=True,
              help="The kubelet's PodResources API: with --metrics-port, each scrape reads which container holds "
              "which device (kubeaccel_device_allocated). Absent: no such series.")
@click.option("--root", type=PathParam(path_type=Path, file_okay=False), default=Path("/"), show_default=True,
              help="Prefix for /dev and /sys (a fake tree for testing).")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]), default="info",
              show_default=True)
def run(  # noqa: PLR0917 - one parameter per click option
    config_path: Path, socket_dir: Path, metrics_port: int | None, metrics_addr: str, cdi_dir: Path,
    pod_resources_socket: Path, root: Path, log_level: str,
) -> None:
    """Serve every configured resource to the kubelet until SIGTERM (SIGHUP reloads the config)."""
    # First of all: a SIGHUP (reload) while starting must not kill the process, and SIGTERM must
    # end it at once. The daemon's loop takes the signals over once it runs.
    hup = _early_signals()
    if metrics_port is None:
        # The daemon never speaks TLS, and without the metrics endpoint nothing it loads needs the
        # ssl module; asyncio imports it only to offer TLS (libssl, libcrypto: about 6 MiB of RSS).
        # A None entry makes that optional import fail the way asyncio expects (ssl = None); asyncio
        # itself is imported only below, after it. pydantic imports ``secrets`` -> ``hmac`` ->
        # ``hashlib``, whose OpenSSL half (``_hashlib``) maps libcrypto too; hashlib falls back to
        # its built-in algorithms without it, and nothing in the daemon hashes with OpenSSL.
        sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]
        sys.modules.setdefault("_hashlib", None)  # type: ignore[arg-type]
    import asyncio

    from kubeaccel.devices.config import load_config
    from kubeaccel.plugin.daemon import Daemon, check_socket_dir

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    check_socket_dir(socket_dir)
    load_config(config_path)  # fail before anything starts when the file is wrong
    daemon = Daemon(lambda: load_config(config_path), socket_dir, root=root, metrics_port=metrics_port,
                    metrics_addr=metrics_addr, cdi_dir=cdi_dir, pod_resources_socket=pod_resources_socket)
    if hup:
        daemon.reload_requested.set()
    asyncio.run(daemon.run(handle_signals=True))


def _early_signals() -> list[int]:
    """Handlers for the time before the event loop: SIGHUP is remembered (the returned list),
    SIGTERM/SIGINT end the process cleanly (``finally`` blocks still run)."""
    received: list[int] = []

    def terminate(signum: int, frame: object) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGHUP, lambda signum, frame: received.append(signum))
    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    return received


@plugin.command()
@_config_option
@click.option("--root", type=PathParam(path_type=Path, file_okay=False), default=Path("/"), show_default=True,
              help="Prefix for /dev and /sys (a fake tree for testing).")
def devices(config_path: Path, root: Path) -> None:
    """Show the devices each resource would advertise, without starting anything."""
    from rich.table import Table  # imported here: the long-running `plugin run` never pays for rich

    from kubeaccel.devices.config import build_resources, load_config

    config = load_config(config_path)
    pairs = build_resources(config, root=root)  # skipped optional entries are left out as pairs
    table = Table("resource", "ID", "index", "health", "NUMA", "device nodes", title="Advertised devices")
    try:
        for resource, backend in pairs:
            found = backend.scan()
            if not found:
                table.add_row(resource.name, "-", "-", "-", "-", "(no devices found)")
            for dev in found.values():
                table.add_row(
                    resource.name,
                    dev.id,
                    dev.index,
                    f"[green]{dev.health}[/]" if dev.healthy else f"[red]{dev.health}[/]",
                    "-" if dev.numa_node is None else str(dev.numa_node),
                    ", ".join(n.host_path for n in dev.nodes) or "-",
                )
    finally:
        for _, backend in pairs:
            backend.close()
    print_table(table)


@plugin.command()
@_socket_dir_option("The device-plugin directory: where the plugin's endpoint lives and, unless --kubelet-socket "
                    "says otherwise, where kubelet.sock is served. Stop the real kubelet first, or use a temp dir.")
@click.option("--kubelet-socket", type=PathParam(path_type=Path, dir_okay=False), default=None,
              help="Serve the kubelet's Registration here instead of <socket-dir>/kubelet.sock, for a plugin whose "
              "own socket is fixed (NVIDIA's: --kubelet-socket PATH on both, --socket-dir "
              "/var/lib/kubelet/device-plugins). A kubelet restart clears the sockets of this file's directory.")
@click.option("--timeout", type=click.FloatRange(min=0.1, max=3600), default=10.0, show_default=True,
              help="Seconds to wait for each registration and answer.")
@click.option("--resource", default=None, help="Check this resource's plugin (default: the first to register).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def check(socket_dir: Path, kubelet_socket: Path | None, timeout: float, resource: str | None, as_json: bool) -> None:
    """Play the kubelet against any device plugin and grade it (exit 1 on any FAIL; WARN exits 0)."""
    import asyncio
    import json

    from kubeaccel.plugin.checker import run_checks

    report = asyncio.run(run_checks(socket_dir, timeout=timeout, resource=resource, kubelet_socket=kubelet_socket))
    if as_json:
        click.echo(json.dumps(report.as_dict(), indent=1))
    echo_verdict(report, title=f"Device plugin check: {report.resource or '?'}", subject="the plugin",
                 table=not as_json)
