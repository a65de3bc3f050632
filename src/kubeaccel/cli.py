"""The ``kubeaccel`` command.

Subcommand groups are imported only when invoked: ``kubeaccel spark status`` must not pay for
gRPC, and ``kubeaccel plugin run`` must not pay for the Kubernetes client. CLI latency is a feature.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from kubeaccel import __version__
from kubeaccel.cliopts import LOG_LEVELS, setup_logging
from kubeaccel.errors import KubeaccelError

# name -> (module, attribute, one-line help shown by `kubeaccel --help` without importing it)
_SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "plugin": ("kubeaccel.plugin.cli", "plugin", "Node side: run, inspect and check kubelet device plugins."),
    "dra": ("kubeaccel.dra.cli", "dra", "Node side, DRA: run, inspect and check DRA drivers."),
    "cluster": ("kubeaccel.cluster.cli", "cluster", "A real local Kubernetes for tests and demos."),
    "spark": ("kubeaccel.spark.cli", "spark", "Submit and manage Spark applications on Kubernetes."),
    "tenant": ("kubeaccel.kube.cli", "tenant", "Namespaces with quota and RBAC for Spark tenants."),
    "discover": ("kubeaccel.spark.discover", "discover", "Spark resource discovery: print the allocated devices."),
    "demo": ("kubeaccel.demo", "demo", "Run everything on simulated devices with an example app."),
}


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_SUBCOMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _SUBCOMMANDS:
            module_name, attr, _ = _SUBCOMMANDS[cmd_name]
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
                return None
            command: click.Command = getattr(module, attr)
            return command
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_) for name, (_, _, help_) in sorted(_SUBCOMMANDS.items())]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kubeaccel")
@click.option(
    "--log-level",
    type=click.Choice(LOG_LEVELS),
    default=None,
    help="Log verbosity (default: each command's own); `debug` also shows each line's source location.",
)
def cli(log_level: str | None) -> None:
    """kubeaccel: accelerators as first-class citizens for Spark on Kubernetes."""
    if log_level:
        setup_logging(log_level)


def main(argv: list[str] | None = None) -> Any:
    """Entry point: user mistakes print a message and a hint, never a traceback."""
    try:
        return cli.main(args=argv, prog_name="kubeaccel", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KubeaccelError as exc:
        click.secho(f"error: {exc.message}", fg="red", err=True)
        if exc.hint:
            click.echo(f"  hint: {exc.hint}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
