"""The ``kubeaccel`` command.

Subcommand groups are imported only when invoked: ``kubeaccel spark status`` must not pay for
gRPC, and ``kubeaccel plugin run`` must not pay for the Kubernetes client. CLI latency is a feature.
"""

from __future__ import annotations

import gc

# Importing allocates only objects that live as long as the process (modules, classes, functions):
# the cyclic collector's passes over them during start-up are pure cost, so it rests until the
# end of this module (and, for the process entry point, until the subcommand is imported).
_COLLECTING = gc.isenabled()
gc.disable()

import importlib  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from typing import Any  # noqa: E402

import click  # noqa: E402

from kubeaccel import __version__  # noqa: E402
from kubeaccel.cliopts import LOG_LEVELS, setup_logging  # noqa: E402
from kubeaccel.errors import KubeaccelError  # noqa: E402

# name -> (module, attribute, one-line help shown by `kubeaccel --help` without importing it)
_SUBCOMMANDS: dict[str, tuple[str, str, str]] = {
    "plugin": ("kubeaccel.plugin.cli", "plugin", "Node side: run, inspect and check kubelet device plugins."),
    "dra": ("kubeaccel.dra.cli", "dra", "Node side, DRA: run, inspect and check DRA drivers."),
    "cluster": ("kubeaccel.cluster.cli", "cluster", "A real local Kubernetes for tests and demos."),
    "spark": ("kubeaccel.spark.cli", "spark", "Submit and manage Spark applications on Kubernetes."),
    "tenant": ("kubeaccel.kube.cli", "tenant", "Namespaces with quota and RBAC for Spark tenants."),
    "discover": ("kubeaccel.spark.discover", "discover", "Spark resource discovery: print the allocated devices."),
    "devices": ("kubeaccel.view.cli", "devices", "Every accelerator of the cluster: health and holder, one table."),
    "ui": ("kubeaccel.view.cli", "ui", "A read-only live web page of the cluster's accelerators, on localhost."),
    "operator": ("kubeaccel.operator.cli", "operator", "The SparkApplication controller and its CRDs."),
    "demo": ("kubeaccel.demo.command", "demo", "Run everything on simulated devices with an example app."),
}


# Set by the process entry point (never by in-process callers such as tests): once the subcommand is
# imported, every object alive is a module, class or function that lives as long as the process.
# `gc.freeze` moves them out of the collector's sight, so neither the command's own collections nor
# the interpreter's collection at exit walk them again: 8-10 ms of the ~140 ms `spark status` takes.
_FREEZE_AFTER_IMPORT = False


def _start_collecting() -> None:
    gc.freeze()
    if _COLLECTING:
        gc.enable()


class _LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted([*super().list_commands(ctx), *_SUBCOMMANDS])

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _SUBCOMMANDS:
            module_name, attr, _ = _SUBCOMMANDS[cmd_name]
            if _FREEZE_AFTER_IMPORT:
                gc.disable()
            try:
                module = importlib.import_module(module_name)
            except ModuleNotFoundError as exc:
                if exc.name != module_name:
                    raise
                return None
            finally:
                if _FREEZE_AFTER_IMPORT:
                    _start_collecting()
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
    global _FREEZE_AFTER_IMPORT
    _FREEZE_AFTER_IMPORT = argv is None
    if argv is None:
        # No command uses pydantic plugins; without this, the first model built scans every
        # installed distribution's entry points for them (30 ms among 200 packages on a GPU node,
        # more than a third of the device plugin's start-up budget). A user's own setting wins.
        os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
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


if _COLLECTING:
    gc.enable()

if __name__ == "__main__":
    main()
