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
    from kubeaccel.cluster.nodepaths import node_paths

    layout = Layout(tmp_path)
    config = realnode.kubelet_config(layout, node_paths(layout), 12345)
    assert config["failCgroupV1"] is False and config["cgroupDriver"] == "cgroupfs"
    assert config["containerRuntimeEndpoint"].endswith("containerd.sock") and config["port"] == 12345


def test_containerd_config_is_version_3_with_cdi_and_the_built_runtime(tmp_path: Path) -> None:
    import tomllib

    from kubeaccel.cluster.binaries import cni_bin_dir, containerd_bin_dir
    from kubeaccel.cluster.layout import Layout
    from kubeaccel.cluster.nodepaths import cdi_spec_dir, node_paths

    config = tomllib.loads(realnode.containerd_config(node_paths(Layout(tmp_path)), "/opt/x/runc"))
    assert config["version"] == 3 and config["root"].startswith(str(tmp_path))
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["restrict_oom_score_adj"] is True
    assert runtime["cdi_spec_dirs"] == ["/etc/cdi", "/var/run/cdi", str(cdi_spec_dir(tmp_path))]
    runc = runtime["containerd"]["runtimes"]["runc"]
    assert runc["runtime_path"] == str(containerd_bin_dir() / "containerd-shim-runc-v2")
    assert runc["options"]["BinaryName"] == "/opt/x/runc"
    assert runtime["cni"]["bin_dirs"] == [str(cni_bin_dir())]
    assert "io.containerd.nri.v1.nri" in config["disabled_plugins"]


def test_state_dir_too_long_for_unix_sockets(tmp_path: Path) -> None:
    from kubeaccel.cluster.layout import Layout
    from kubeaccel.errors import ConfigError

    with pytest.raises(ConfigError, match="too long") as err:
        realnode.check_state_dir(Layout(tmp_path / ("x" * 80)))
    assert "--state-dir" in (err.value.hint or "")
    realnode.check_state_dir(Layout(Path("/tmp/kubeaccel-cluster-abcdefgh")))
