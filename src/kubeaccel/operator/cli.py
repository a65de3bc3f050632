"""`kubeaccel operator`: the SparkApplication controller and its CRDs."""

from __future__ import annotations

import click


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
