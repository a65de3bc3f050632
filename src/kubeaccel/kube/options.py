"""Click options every command that talks to the API shares: --kubeconfig, --context, --output."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


def connection_options(func: F) -> F:
    func = click.option("--context", default=None, help="kubeconfig context (default: its current context).")(func)
    func = click.option(
        "--kubeconfig",
        default=None,
        type=click.Path(dir_okay=False),
        help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config).",
    )(func)
    return func


def output_option(func: F) -> F:
    return click.option(
        "--output",
        "-o",
        "output",
        type=click.Choice(["table", "json"]),
        default="table",
        show_default=True,
        help="table for people, json for scripts.",
    )(func)


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))
