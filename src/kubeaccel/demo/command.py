"""The ``kubeaccel demo`` click command: options in, progress on stderr, the mode's tables out."""

from __future__ import annotations

from pathlib import Path

import click

from kubeaccel.cliopts import PathParam, console, log_line
from kubeaccel.demo.common import DemoOptions
from kubeaccel.errors import KubeaccelError


@click.command("demo")
@click.option("--keep", is_flag=True, help="Leave the cluster, the plugin's Helm release and the app afterwards.")
@click.option(
    "--state-dir",
    type=PathParam(file_okay=False, path_type=Path),
    default=None,
    help="Cluster state dir (default: kubeaccel cluster's own default).",
)
@click.option("--devices", default=4, show_default=True, type=click.IntRange(1, 64), help="Simulated VEs.")
@click.option("--executors", default=2, show_default=True, type=click.IntRange(1, 8), help="Spark executors.")
@click.option("--dra", is_flag=True, help="Serve the VEs through the DRA driver instead of the device plugin.")
@click.option(
    "--operator",
    is_flag=True,
    help="Run the app as a SparkApplication through the controller's Helm chart (deploy/helm/kubeaccel-operator).",
)
def demo(*, keep: bool, state_dir: Path | None, devices: int, executors: int, dra: bool, operator: bool) -> None:
    """Bring everything up on simulated devices and run an example app.

    A local cluster with a real node, the device plugin installed with its Helm chart (a
    DaemonSet pod) on simulated nec.com/ve devices, the kubeaccel Spark image, and a Pi app
    whose tasks report the VEs they were given.
    """
    from kubeaccel.cluster.spec import default_state_dir

    if dra and operator:
        raise click.UsageError("--dra and --operator are separate demos: choose one")
    if executors > devices:
        raise click.BadParameter(f"{executors} executors need at least as many devices", param_hint="--executors")
    progress = console(stderr=True)
    options = DemoOptions(state_dir=state_dir or default_state_dir(), keep=keep, devices=devices, executors=executors)
    with progress.status("kubeaccel demo") as status:

        def report(message: str) -> None:
            status.update(message)
            log_line(progress, message)

        if operator:
            from kubeaccel.demo.operator import render_operator, run_demo_operator

            operator_result = run_demo_operator(options, report)
        elif dra:
            from kubeaccel.demo.dra import render_dra, run_demo_dra

            dra_result = run_demo_dra(options, report)
        else:
            from kubeaccel.demo.deviceplugin import render, run_demo

            result = run_demo(options, report)
    if operator:
        render_operator(operator_result)
        phase, tail = operator_result.phase, operator_result.driver_log_tail
    elif dra:
        render_dra(dra_result)
        phase, tail = dra_result.phase, dra_result.driver_log_tail
    else:
        render(result)
        phase, tail = result.phase, result.driver_log_tail
    if not phase.startswith("Succeeded"):
        raise KubeaccelError(f"the app did not succeed: {phase}", hint=f"driver log tail:\n{tail}")
