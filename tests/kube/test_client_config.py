"""Choosing what to connect to, without connecting: kubeconfig lookup, contexts, `k8s://` overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from kubeaccel.errors import ConfigError, NotFoundError
from kubeaccel.kube.client import load_config
from kubeaccel.spark.submit import connect_for


def _kubeconfig(tmp_path: Path) -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "dev",
                "clusters": [
                    {"name": "c1", "cluster": {"server": "https://10.0.0.1:6443", "insecure-skip-tls-verify": True}},
                    {"name": "c2", "cluster": {"server": "https://10.0.0.2:6443", "insecure-skip-tls-verify": True}},
                ],
                "users": [{"name": "u", "user": {"token": "t"}}],
                "contexts": [
                    {"name": "dev", "context": {"cluster": "c1", "user": "u"}},
                    {"name": "prod", "context": {"cluster": "c2", "user": "u", "namespace": "team-a"}},
                ],
            }
        )
    )
    return path


def test_current_context_and_explicit_context(tmp_path: Path) -> None:
    path = _kubeconfig(tmp_path)
    dev = load_config(kubeconfig=path)
    assert (dev.context_name, dev.cluster.server, dev.context.namespace) == ("dev", "https://10.0.0.1:6443", None)
    prod = load_config(kubeconfig=path, context="prod")
    assert (prod.cluster.server, prod.context.namespace) == ("https://10.0.0.2:6443", "team-a")


def test_kubeconfig_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{_kubeconfig(tmp_path)}")
    assert load_config().context_name == "dev"


def test_master_url_overrides_the_server_keeping_credentials(tmp_path: Path) -> None:
    config = load_config(kubeconfig=_kubeconfig(tmp_path), server="https://192.168.1.5:6443")
    assert config.cluster.server == "https://192.168.1.5:6443"
    assert config.user is not None and config.user.token == "t"


def test_spark_kubernetes_context_conf_selects_the_context(tmp_path: Path) -> None:
    conf = {"spark.master": "k8s://https://10.0.0.2:6443", "spark.kubernetes.context": "prod"}
    kube = connect_for(conf, kubeconfig=_kubeconfig(tmp_path))
    assert (kube.server, kube.context_namespace) == ("https://10.0.0.2:6443", "team-a")
    kube.close()


def test_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(NotFoundError, match="known contexts: dev, prod"):
        load_config(kubeconfig=_kubeconfig(tmp_path), context="staging")
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(kubeconfig=tmp_path / "nope")
    broken = tmp_path / "broken"
    broken.write_text("clusters: [")
    with pytest.raises(ConfigError, match="is not valid YAML"):
        load_config(kubeconfig=broken)
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="no kubeconfig found"):
        load_config()
    assert load_config(server="https://1.2.3.4:6443").cluster.server == "https://1.2.3.4:6443"


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"clusters": [{"name": "c1", "cluster": {"server": "https://h:abc"}}]}, "is not a valid URL"),
        ({"clusters": [{"name": "c1", "cluster": {"server": "ftp://h:1"}}]}, "is not an http"),
        (
            {"clusters": [{"name": "c1", "cluster": {"server": "https://h", "certificate-authority-data": "!!"}}]},
            "base64",
        ),
        ({"users": [{"name": "u", "user": {"client-key-data": "not base64"}}]}, "client-key-data is not valid base64"),
        ({"users": [{"name": "u", "user": {"client-certificate": "/nonexistent.crt"}}]}, "does not exist"),
        ({"clusters": []}, "which is not in clusters"),
        ({"contexts": [{"name": "dev", "context": {"cluster": "c1", "namespace": "Bad_NS"}}]}, "not a DNS label"),
        ({"contexts": "x"}, "not a list of named entries"),
    ],
)
def test_kubeconfig_content_is_checked_at_the_edge(tmp_path: Path, change: dict[str, object], words: str) -> None:
    path = _kubeconfig(tmp_path)
    document = yaml.safe_load(path.read_text())
    document.update(change)
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ConfigError, match=words):
        load_config(kubeconfig=path)


@pytest.mark.parametrize("master", ["https://h:abc", "https://h:99999", "https://", "https://h\x1b:1", "ws://h:1"])
def test_bad_master_urls(tmp_path: Path, master: str) -> None:
    with pytest.raises(ConfigError):
        load_config(kubeconfig=_kubeconfig(tmp_path), server=master)
