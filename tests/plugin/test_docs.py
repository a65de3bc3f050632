"""docs/plugin.md states the defaults the code has (issue 12: the docs once gave poll defaults the
code did not use). Each documented default is read from the doc and compared with the code."""

from __future__ import annotations

import re
from pathlib import Path

from click.testing import CliRunner

from kubeaccel.cli import cli
from kubeaccel.devices.backends import generic, ve
from kubeaccel.plugin import daemon, server, service
from kubeaccel.plugin.metrics import DEFAULT_ADDR, MAX_CONNECTIONS, REQUEST_TIMEOUT_S

DOC = (Path(__file__).resolve().parents[2] / "docs" / "plugin.md").read_text()


def _documented_poll(backend: str) -> float:
    paragraph = DOC[DOC.index(f"`{backend}` ("):]
    return float(re.search(r"`pollIntervalSeconds` \(([\d.]+)\)", paragraph).group(1))  # type: ignore[union-attr]


def test_poll_defaults_match_the_code() -> None:
    assert _documented_poll("generic") == generic.Config(paths=["/dev/x"]).poll_interval_seconds
    assert _documented_poll("ve") == ve.Config().poll_interval_seconds


def test_supervision_figures_match_the_code() -> None:
    assert "backoff (0.1 s doubling to 5 s)" in DOC
    assert (daemon.BACKOFF_MIN_S, daemon.BACKOFF_MAX_S) == (0.1, 5.0)
    assert f"every {daemon.SAFETY_TICK_S:g} s" in DOC and f"A {service.RESCAN_INTERVAL_S:g} s rescan" in DOC
    assert f"{server.REGISTER_TIMEOUT_S:g} s timeout" in DOC
    assert f"chmod-ed to 0{server.SOCKET_MODE:o}" in DOC
    assert f"at most {MAX_CONNECTIONS} connections" in DOC and f"within {REQUEST_TIMEOUT_S:g} s" in DOC


def test_cli_defaults_match_the_doc() -> None:
    help_text = CliRunner().invoke(cli, ["plugin", "run", "--help"]).output
    assert f"`--metrics-addr` defaults to `{DEFAULT_ADDR}`" in DOC and DEFAULT_ADDR in help_text
    assert "`--cdi-dir` to `/var/run/cdi`" in DOC and "/var/run/cdi" in help_text


def test_oversized_device_lists_are_named() -> None:
    """A list over the kubelet's 4 MiB receive limit is an error the operator can read."""
    from kubeaccel.plugin.service import KUBELET_MAX_MESSAGE, oversize_problem

    assert oversize_problem("example.com/sim", KUBELET_MAX_MESSAGE, 10) is None
    problem = oversize_problem("example.com/sim", KUBELET_MAX_MESSAGE + 1, 262144)
    assert problem and "262144 devices" in problem and "4194304 byte" in problem and "replicas" in problem
    assert "4 MiB" in DOC
