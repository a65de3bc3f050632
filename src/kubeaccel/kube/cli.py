"""`kubeaccel tenant`: namespaces with quota and RBAC for Spark tenants."""

from __future__ import annotations

from dataclasses import asdict

import click
from rich.table import Table

from kubeaccel.cliopts import connection_options, echo_json, output_option, print_table
from kubeaccel.kube.client import Kube
from kubeaccel.kube.quantity import format_quantity, parse_quantity
from kubeaccel.kube.tenancy import (
    DEFAULT_POD_SECURITY,
    POD_SECURITY_LEVELS,
    check_namespace_name,
    create_tenant,
    parse_quota,
    tenant_manifests,
    tenant_usage,
)


@click.group()
def tenant() -> None:
    """Namespaces with quota and RBAC for Spark tenants."""


@tenant.command("create")
@click.argument("name")
@click.option("--quota", default="", help="Comma-separated NAME=AMOUNT, e.g. cpu=16,memory=64Gi,nec.com/ve=8.")
@click.option(
    "--pod-security",
    type=click.Choice(POD_SECURITY_LEVELS),
    default=DEFAULT_POD_SECURITY,
    show_default=True,
    help="Pod Security Admission level enforced in the namespace (VE pods need IPC_LOCK: privileged).",
)
@click.option("--force", is_flag=True, help="Allow the 'default' namespace as a tenant.")
@connection_options
def create(
    *, name: str, quota: str, pod_security: str, force: bool, kubeconfig: str | None, context: str | None
) -> None:
    """Create (or update) tenant NAME: namespace, quota, ServiceAccount `spark`, Role and RoleBinding.

    All or nothing: every input is checked before the first write, and a failing step (or SIGINT, SIGTERM,
    SIGHUP: exit 130 / 143 / 129) undoes the ones before it. kube-system, kube-public and kube-node-lease
    are refused, and default unless --force.

    \b
    Example:
      kubeaccel tenant create team-a --quota cpu=16,memory=64Gi,nec.com/ve=8
    Submit into it with --conf spark.kubernetes.namespace=team-a
    and --conf spark.kubernetes.authenticate.driver.serviceAccountName=spark.
    """
    hard = parse_quota(quota)
    tenant_manifests(name, hard, pod_security=pod_security, force=force)  # every check before connecting
    kube = Kube.connect(kubeconfig=kubeconfig, context=context)
    for applied in create_tenant(kube, name, hard, pod_security=pod_security, force=force):
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
    print_table(table)
