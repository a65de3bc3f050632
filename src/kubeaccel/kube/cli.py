"""`kubeaccel tenant`: namespaces with quota and RBAC for Spark tenants."""

from __future__ import annotations

from dataclasses import asdict

import click
from rich.console import Console
from rich.table import Table

from kubeaccel.cliopts import connection_options, echo_json, output_option
from kubeaccel.kube.client import Kube
from kubeaccel.kube.quantity import format_quantity, parse_quantity
from kubeaccel.kube.tenancy import check_namespace_name, create_tenant, parse_quota, tenant_usage


@click.group()
def tenant() -> None:
    """Namespaces with quota and RBAC for Spark tenants."""


@tenant.command("create")
@click.argument("name")
@click.option("--quota", default="", help="Comma-separated NAME=AMOUNT, e.g. cpu=16,memory=64Gi,nec.com/ve=8.")
@connection_options
def create(name: str, quota: str, kubeconfig: str | None, context: str | None) -> None:
    """Create (or update) tenant NAME: namespace, quota, ServiceAccount `spark`, Role and RoleBinding.

    \b
    Example:
      kubeaccel tenant create team-a --quota cpu=16,memory=64Gi,nec.com/ve=8
    Submit into it with --conf spark.kubernetes.namespace=team-a
    and --conf spark.kubernetes.authenticate.driver.serviceAccountName=spark.
    """
    check_namespace_name(name)
    hard = parse_quota(quota)
    kube = Kube.connect(kubeconfig=kubeconfig, context=context)
    for applied in create_tenant(kube, name, hard):
        click.echo(f"applied {applied}")


@tenant.command("show")
@click.argument("name")
@connection_options
@output_option
def show(name: str, kubeconfig: str | None, context: str | None, output: str) -> None:
    """Usage of tenant NAME against its quota."""
    check_namespace_name(name)
    kube = Kube.connect(kubeconfig=kubeconfig, context=context)
    rows = tenant_usage(kube, name)
    if output == "json":
        echo_json([asdict(row) for row in rows])
        return
    if not rows:
        click.echo(f"namespace {name} has no ResourceQuota")
        return
    table = Table("QUOTA", "RESOURCE", "USED", "HARD", "USE %", box=None)
    for row in rows:
        hard = parse_quantity(row.hard)
        used = parse_quantity(row.used)
        percent = f"{100 * used / hard:.0f}%" if hard else "-"
        table.add_row(
            row.quota, row.resource, format_quantity(used, row.resource), format_quantity(hard, row.resource), percent
        )
    Console(width=120).print(table)
