"""Which kubeconfig the door reads, as kubectl reads it: KUBECONFIG lists merged (checked against kubectl
itself on the same files), the pod's ServiceAccount when there is no kubeconfig at all."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures import servers
from fixtures.cluster import KUBECTL
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from kubeaccel import errors
from kubeaccel.kube import kubeconfig as kc
from kubeaccel.kube import rest
from kubeaccel.kube.client import Kube

CONTEXTS = ("alpha", "beta", "gamma")  # not YAML 1.1 booleans ("y", "n", "on"...)
CLUSTERS = ("c1", "c2")


def _file(index: int, contexts: dict[str, str], current: str | None, users: bool) -> dict[str, Any]:
    """File `index`: each of `contexts` (name -> cluster) with this file's namespace; this file's own
    servers for every cluster and, with `users`, its own token for the user."""
    document: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": c, "cluster": {"server": f"https://10.0.{index}.{i + 1}:6443", "insecure-skip-tls-verify": True}}
            for i, c in enumerate(CLUSTERS)
        ],
        "users": [{"name": "u", "user": {"token": f"token-{index}"}}] if users else [],
        "contexts": [
            {"name": name, "context": {"cluster": cluster, "user": "u", "namespace": f"ns-{index}"}}
            for name, cluster in contexts.items()
        ],
    }
    if current is not None:
        document["current-context"] = current
    return document


files = st.lists(
    st.tuples(
        st.dictionaries(st.sampled_from(CONTEXTS), st.sampled_from(CLUSTERS), min_size=1, max_size=3),
        st.sampled_from(CONTEXTS) | st.none() | st.just("missing"),
        st.booleans() | st.just(True),
    ),
    min_size=1,
    max_size=3,
)


def _kubectl_view(environ: dict[str, str]) -> dict[str, Any] | None:
    """kubectl's own choice: the minified raw config, or None when kubectl refuses."""
    done = subprocess.run([KUBECTL, "config", "view", "--minify", "--raw", "-o", "json"], capture_output=True,
                          text=True, env=environ, timeout=60, check=False)
    if done.returncode != 0:
        return None
    view: dict[str, Any] = json.loads(done.stdout)
    return view


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(files=files, missing_first=st.booleans())
def test_a_kubeconfig_list_is_merged_as_kubectl_merges_it(
    tmp_path_factory: pytest.TempPathFactory, files: list[tuple[dict[str, str], str | None, bool]],
    missing_first: bool,
) -> None:
    directory = tmp_path_factory.mktemp("merge")
    paths = [directory / "missing"] if missing_first else []
    for index, (contexts, current, users) in enumerate(files):
        path = directory / f"config-{index}"
        path.write_text(yaml.safe_dump(_file(index, contexts, current, users)))
        paths.append(path)
    listed = os.pathsep.join(str(p) for p in paths)
    environ = {"PATH": os.environ.get("PATH", ""), "HOME": str(directory), "KUBECONFIG": listed}
    expected = _kubectl_view(environ)
    saved = os.environ.get("KUBECONFIG")
    os.environ["KUBECONFIG"] = listed
    try:
        found = kc.kubeconfig_paths(None)
        document, name = kc.select(kc.merged(found), found[0], context=None, server=None)
        context, cluster, user = kc.context_parts(document, name)
        ours: dict[str, Any] | None = {
            "context": name, "namespace": context.get("namespace"), "server": cluster["server"],
            "token": user.get("token"),
        }
    except (errors.ConfigError, errors.NotFoundError):
        ours = None
    finally:
        if saved is None:
            del os.environ["KUBECONFIG"]
        else:
            os.environ["KUBECONFIG"] = saved
    event("kubectl refuses" if expected is None or not expected.get("contexts") else "kubectl chooses")
    if expected is None or not expected.get("contexts"):
        assert ours is None, "kubectl refuses this set of files"
        return
    theirs = {
        "context": expected["current-context"],
        "namespace": expected["contexts"][0]["context"].get("namespace"),
        "server": expected["clusters"][0]["cluster"]["server"],
        "token": (expected.get("users") or [{"user": {}}])[0]["user"].get("token"),
    }
    if theirs["token"] is None:  # kubectl keeps a context whose user is defined nowhere; the door refuses it
        assert ours is None
        return
    assert ours == theirs


def test_relative_paths_stay_relative_to_the_file_that_named_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    (tmp_path / "two" / "token").write_text("from-two\n")
    (tmp_path / "one" / "config").write_text(yaml.safe_dump({"current-context": "alpha"}))
    servers.kubeconfig(tmp_path / "two" / "config", {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True},
                       {"tokenFile": "token"})
    document = yaml.safe_load((tmp_path / "two" / "config").read_text())
    document["contexts"][0]["name"] = "alpha"
    (tmp_path / "two" / "config").write_text(yaml.safe_dump(document))
    monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'one' / 'config'}:{tmp_path / 'two' / 'config'}")
    kube = Kube.connect()
    assert kube._fast is not None and kube._fast._auth.header() == "Bearer from-two"


@pytest.mark.parametrize("section", ["clusters", "users", "contexts"])
def test_a_name_twice_in_one_file_is_refused_as_kubectl_refuses_it(tmp_path: Path, section: str) -> None:
    document = _file(0, {"alpha": "c1", "beta": "c2"}, "alpha", True)
    document[section].append(dict(document[section][0]))
    path = tmp_path / "config"
    path.write_text(yaml.safe_dump(document))
    environ = {"PATH": os.environ.get("PATH", ""), "HOME": str(tmp_path), "KUBECONFIG": str(path)}
    assert _kubectl_view(environ) is None
    with pytest.raises(errors.ConfigError, match=f"duplicate name .* in {section}"):
        Kube.connect(kubeconfig=path)


# ---- in-cluster ----


def _service_account(directory: Path, ca: bytes | None, namespace: str | None = "team-a") -> Path:
    directory.mkdir()
    (directory / "token").write_text("pod-token\n")
    if ca is not None:
        (directory / "ca.crt").write_bytes(ca)
    if namespace is not None:
        (directory / "namespace").write_text(namespace)
    return directory


@pytest.fixture
def no_kubeconfig(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def test_in_a_pod_without_a_kubeconfig_the_service_account_is_used(
    no_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = servers.certificate("127.0.0.1")

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        body = b'{"kind":"PodList","items":[]}'
        handler.send_response(200)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with servers.serve(answer, tls=pem) as served:
        directory = _service_account(no_kubeconfig / "sa", pem.cert)
        port = served.url.rpartition(":")[2]
        monkeypatch.setattr(kc, "SERVICE_ACCOUNT_DIR", directory)
        monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
        monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
        kube = Kube.connect()
        assert kube.namespace == "team-a" and kube._fast is not None
        kube.list_raw(rest.PODS, "team-a")
        assert served.requests[0]["headers"]["Authorization"] == "Bearer pod-token"


def test_in_cluster_needs_the_service_variables_and_names_a_missing_ca(
    no_kubeconfig: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    directory = _service_account(no_kubeconfig / "sa", None)
    monkeypatch.setattr(kc, "SERVICE_ACCOUNT_DIR", directory)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(errors.ConfigError, match="no kubeconfig found"):
        Kube.connect()
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "fd00::1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(errors.ConfigError, match=r"ca\.crt.* does not exist"):
        Kube.connect()
    document = kc.in_cluster(directory, {"KUBERNETES_SERVICE_HOST": "fd00::1", "KUBERNETES_SERVICE_PORT": "443"}) \
        if (directory / "ca.crt").write_bytes(servers.certificate("x").cert) else None
    assert document is not None
    assert document["clusters"][0]["cluster"]["server"] == "https://[fd00::1]:443"
