"""Every path a user gives any command is checked at the edge: a name no file system can hold (a NUL byte,
too long) ends in a usage error (exit 2) naming the option, never in ValueError or ENAMETOOLONG."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
from fixtures.cli import run
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel.cli import cli
from kubeaccel.cliopts import PathParam

ParamAt = tuple[tuple[str, ...], click.Parameter]


def _path_params(group: click.Command, prefix: tuple[str, ...] = ()) -> Iterator[ParamAt]:
    if isinstance(group, click.Group):
        ctx = click.Context(group)
        for name in group.list_commands(ctx):  # the top level loads its groups lazily
            sub = group.get_command(ctx, name)
            assert sub is not None, name
            yield from _path_params(sub, (*prefix, name))
        return
    for param in group.params:
        if isinstance(param.type, click.Path):
            yield prefix, param


PATH_PARAMS = list(_path_params(cli))


def test_the_cli_has_path_parameters_and_all_are_checked() -> None:
    assert len(PATH_PARAMS) >= 10  # the walk reaches every command group
    unchecked = [(" ".join(cmd), p.name) for cmd, p in PATH_PARAMS if not isinstance(p.type, PathParam)]
    assert unchecked == []


@pytest.mark.parametrize(("command", "param"), PATH_PARAMS, ids=[f"{' '.join(c)}:{p.name}" for c, p in PATH_PARAMS])
@settings(max_examples=15, deadline=None)
@given(before=st.text(max_size=8).filter(lambda t: "\x00" not in t), after=st.text(max_size=8), long=st.booleans())
def test_a_path_no_file_system_can_hold_is_a_usage_error(
    command: tuple[str, ...], param: click.Parameter, before: str, after: str, long: bool
) -> None:
    value = f"{before}{'x' * 256}" if long else f"{before}\x00{after}"
    argv = [*command, param.opts[-1], value] if isinstance(param, click.Option) else [*command, value]
    code, stderr = run(argv)
    assert code == 2, stderr
    assert ("longer than a file system allows" if long else "NUL byte") in stderr
    assert "Traceback" not in stderr
