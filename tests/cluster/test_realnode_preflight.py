"""The real node's preflight refuses an unsuitable host with the fix in the hint.

Not root and no cgroups cannot be produced for real on the CI machine (it is root, with cgroups), so those
two read the host through the functions the check uses, pointed at what such a host would show.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from kubeaccel.cluster import hostclean, realnode
from kubeaccel.errors import KubeaccelError


def test_not_root_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realnode.os, "geteuid", lambda: 1000)
    with pytest.raises(KubeaccelError, match="needs root") as err:
        realnode.check_host()
    assert "leave out --real-node" in (err.value.hint or "")


def test_no_cgroups_is_refused(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(realnode.os, "geteuid", lambda: 0)
    monkeypatch.setattr(hostclean, "CGROUP_ROOT", tmp_path / "no-cgroups")
    with pytest.raises(KubeaccelError, match="no cgroup hierarchy"):
        realnode.check_host()


def test_hostname_not_on_loopback_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(realnode.os, "geteuid", lambda: 0)
    monkeypatch.setattr(socket, "gethostbyname", lambda _: "192.0.2.7")
    with pytest.raises(KubeaccelError, match=r"does not resolve to 127\.0\.0\.1") as err:
        realnode.check_host()
    assert "/etc/hosts" in (err.value.hint or "")


def test_kubelet_config_matches_this_machine(tmp_path: Path) -> None:
    from kubeaccel.cluster.layout import Layout

    layout = Layout(tmp_path)
    config = realnode.kubelet_config(layout, realnode._paths(layout), 12345)
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["containerRuntimeEndpoint"].endswith("containerd.sock") and config["port"] == 12345
    toml = realnode.containerd_config(realnode._paths(layout))
    assert "restrict_oom_score_adj = true" in toml and str(tmp_path) in toml


def test_state_dir_too_long_for_unix_sockets(tmp_path: Path) -> None:
    from kubeaccel.cluster.layout import Layout
    from kubeaccel.errors import ConfigError

    with pytest.raises(ConfigError, match="too long") as err:
        realnode.check_state_dir(Layout(tmp_path / ("x" * 80)))
    assert "--state-dir" in (err.value.hint or "")
    realnode.check_state_dir(Layout(Path("/tmp/kubeaccel-cluster-abcdefgh")))
