"""The door against hostile or careless servers and kubeconfigs: each case against a real loopback server
(HTTP or TLS) that misbehaves that way, and, where kubectl has a rule, kubectl run on the same file."""

from __future__ import annotations

import base64
import http.server
import json
import logging
import os
import subprocess
import sys
import threading
import time
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fixtures import servers
from fixtures.cluster import KUBECTL

from kubeaccel import errors
from kubeaccel.kube import rest
from kubeaccel.kube.client import Kube, load_config

PODS_ANSWER = json.dumps({"kind": "PodList", "apiVersion": "v1", "items": []}).encode()


def _ok(handler: http.server.BaseHTTPRequestHandler, body: bytes = PODS_ANSWER) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


def _tls_cluster(served: servers.Served, **extra: Any) -> dict[str, Any]:
    assert served.ca is not None
    return {"server": served.url, "certificate-authority-data": servers.b64(served.ca), **extra}


def _exec_user(directory: Path, token: str = "exec-token") -> dict[str, Any]:
    """A user whose token comes from an exec credential plugin (a real script): only httpx's transport
    (lightkube's auth flows) runs those, so a Kube for it speaks through the second transport."""
    plugin = directory / "credential-plugin"
    credential = {"apiVersion": "client.authentication.k8s.io/v1beta1", "kind": "ExecCredential",
                  "status": {"token": token}}
    plugin.write_text(f"#!/bin/sh\necho '{json.dumps(credential)}'\n")
    plugin.chmod(0o755)
    return {"exec": {"apiVersion": "client.authentication.k8s.io/v1beta1", "command": str(plugin)}}


TRANSPORTS = ["stdlib", "httpx"]


def _user(transport: str, directory: Path) -> dict[str, Any]:
    return {"token": "t"} if transport == "stdlib" else _exec_user(directory)


def _connected(path: Path, transport: str, timeout: float = 10.0) -> Kube:
    kube = Kube.connect(kubeconfig=path, timeout=timeout)
    assert (kube._fast is not None) == (transport == "stdlib")
    return kube


def test_an_exec_plugin_user_speaks_through_the_second_transport(tmp_path: Path) -> None:
    with servers.serve(_ok, tls=servers.certificate("127.0.0.1")) as served:
        path = servers.kubeconfig(tmp_path / "kubeconfig", _tls_cluster(served), _exec_user(tmp_path))
        kube = _connected(path, "httpx")
        assert kube.list_raw(rest.PODS, "default") == []
        assert served.requests[0]["headers"]["Authorization"] == "Bearer exec-token"


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_403_asks_who_refused_through_the_same_transport(tmp_path: Path, transport: str) -> None:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        if "selfsubjectaccessreviews" in handler.path:
            length = int(handler.headers.get("Content-Length") or 0)
            review = json.loads(handler.rfile.read(length))
            _ok(handler, json.dumps({**review, "status": {"allowed": False}}).encode())
            return
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "code": 403, "reason": "Forbidden",
                           "message": "pods is forbidden"}).encode()
        handler.send_response(403)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with servers.serve(answer, tls=servers.certificate("127.0.0.1")) as served:
        path = servers.kubeconfig(tmp_path / "kubeconfig", _tls_cluster(served), _user(transport, tmp_path))
        with pytest.raises(errors.ForbiddenError):
            _connected(path, transport).list_raw(rest.PODS, "team-a")
        review = served.requests[-1]
        assert review["method"] == "POST" and review["path"].endswith("/selfsubjectaccessreviews")
        authorization = review["headers"]["Authorization"]
        assert authorization == ("Bearer t" if transport == "stdlib" else "Bearer exec-token")


# ---- no credentials over plain http:// ----


@pytest.mark.parametrize(
    "user", [{"token": "secret-token"}, {"username": "bob", "password": "secret"}], ids=["token", "basic"]
)
def test_no_authorization_goes_to_a_plain_http_server(
    tmp_path: Path, user: dict[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    with servers.serve(_ok) as served:
        path = servers.kubeconfig(tmp_path / "kubeconfig", {"server": served.url}, user)
        with caplog.at_level(logging.WARNING):
            for kube in (Kube.connect(kubeconfig=path), Kube(load_config(kubeconfig=path))):  # both transports
                kube.list_raw(rest.PODS, "default")
                kube.close()
        assert len(served.requests) == 2
        assert all("Authorization" not in r["headers"] for r in served.requests)
    warning = caplog.text
    assert "context 'x'" in warning and "plain http://" in warning and "secret" not in warning


def test_over_https_the_token_is_sent(tmp_path: Path) -> None:
    with servers.serve(_ok, tls=servers.certificate("127.0.0.1")) as served:
        path = servers.kubeconfig(tmp_path / "kubeconfig", _tls_cluster(served), {"token": "t0k"})
        Kube.connect(kubeconfig=path).list_raw(rest.PODS, "default")
        assert served.requests[0]["headers"]["Authorization"] == "Bearer t0k"


# ---- no key material on disk, whichever transport ----


@pytest.fixture
def written_files() -> Iterator[list[str]]:
    """Every path this process opens for writing while the test runs (a CPython audit hook: real opens)."""
    written: list[str] = []
    active = [True]
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_CREAT

    def hook(event: str, args: tuple[Any, ...]) -> None:
        if not active[0] or event != "open":
            return
        path, mode, flags = args
        if isinstance(path, int):
            return
        writes = any(c in str(mode or "") for c in "wax+") if mode is not None else bool((flags or 0) & write_flags)
        if writes:
            written.append(os.fsdecode(path))

    sys.addaudithook(hook)
    try:
        yield written
    finally:
        active[0] = False


def test_no_transport_writes_key_material_to_disk(tmp_path: Path, written_files: list[str]) -> None:
    client = servers.certificate("kubeaccel-user")
    with servers.serve(_ok, tls=servers.certificate("127.0.0.1")) as served:
        user = {"client-certificate-data": servers.b64(client.cert), "client-key-data": servers.b64(client.key)}
        path = servers.kubeconfig(tmp_path / "kubeconfig", _tls_cluster(served), user)
        written_files.clear()
        fast = Kube.connect(kubeconfig=path)
        fast.list_raw(rest.PODS, "default")
        slow = Kube(load_config(kubeconfig=path))  # lightkube's client, for the typed verbs
        slow.list_raw(rest.PODS.lightkube(), "default")
        slow.list_raw(rest.PODS, "default")  # the second transport, for exec users
        plugin_path = servers.kubeconfig(tmp_path / "exec", _tls_cluster(served), {**user, **_exec_user(tmp_path)})
        written_files.clear()
        plugin = _connected(plugin_path, "httpx")
        plugin.list_raw(rest.PODS, "default")
        for kube in (fast, slow, plugin):
            kube.close()
    on_disk = [p for p in written_files if not p.startswith("/proc/self/fd/")]
    assert on_disk == []


# ---- bounded answers ----


def _chunks_forever(handler: http.server.BaseHTTPRequestHandler) -> None:
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    piece = b"[" + b"0," * 32_000
    chunk = f"{len(piece):x}\r\n".encode() + piece + b"\r\n"
    try:
        while True:
            handler.wfile.write(chunk)
    except OSError:
        return


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_never_ending_answer_stops_at_the_cap_without_holding_it_twice(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, transport: str
) -> None:
    cap = 16 << 20
    monkeypatch.setattr(rest, "MAX_BODY_BYTES", cap)
    with servers.serve(_chunks_forever, tls=servers.certificate("127.0.0.1")) as served:
        path = servers.kubeconfig(tmp_path / "kubeconfig", _tls_cluster(served), _user(transport, tmp_path))
        kube = _connected(path, transport, timeout=5)
        tracemalloc.start()
        try:
            with pytest.raises(errors.UnavailableError, match="larger than"):
                kube.list_raw(rest.PODS, "default")
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert peak < 1.5 * cap  # one buffer grown in place, not the chunks plus their join (2x)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("code", [200, 500])
def test_json_nested_beyond_python_is_a_clear_error(tmp_path: Path, code: int, transport: str) -> None:
    def deep(handler: http.server.BaseHTTPRequestHandler) -> None:
        body = b"[" * 100_000 + b"]" * 100_000
        handler.send_response(code)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    with servers.serve(deep, tls=servers.certificate("127.0.0.1")) as served:
        path = servers.kubeconfig(tmp_path / "kubeconfig", _tls_cluster(served), _user(transport, tmp_path))
        with pytest.raises(errors.UnavailableError) as caught:
            _connected(path, transport).list_raw(rest.PODS, "default")
    assert "nested too deeply" in caught.value.message or "without a Kubernetes Status" in caught.value.message


def _drip(handler: http.server.BaseHTTPRequestHandler) -> None:
    """Headers at once, then one byte of a chunked answer every 0.2 s, for ever: each wait is short."""
    handler.send_response(200)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Transfer-Encoding", "chunked")
    handler.end_headers()
    try:
        while True:
            handler.wfile.write(b"1\r\n \r\n")
            handler.wfile.flush()
            time.sleep(0.2)
    except OSError:
        return


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_a_slow_drip_cannot_hold_a_request_past_its_deadline(tmp_path: Path, transport: str) -> None:
    timeout = 0.5  # the deadline is DEADLINE_FACTOR times it: 3 s
    with servers.serve(_drip, tls=servers.certificate("127.0.0.1")) as served:
        path = servers.kubeconfig(tmp_path / "kubeconfig", _tls_cluster(served), _user(transport, tmp_path))
        kube = _connected(path, transport, timeout=timeout)
        for request in (
            lambda: kube.list_raw(rest.PODS, "default"),
            lambda: "".join(kube.logs("p", "default")),  # a log that is not followed has the deadline too
        ):
            began = time.monotonic()
            with pytest.raises(errors.UnavailableError, match="within 3 s"):
                request()
            assert time.monotonic() - began < timeout * rest.DEADLINE_FACTOR + 2


# ---- credentials in the server URL ----


def test_a_password_in_the_server_url_is_basic_auth_and_never_printed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with servers.serve(_ok, tls=servers.certificate("127.0.0.1")) as served:
        url = served.url.replace("https://", "https://bob:s3cr3t@")
        path = servers.kubeconfig(tmp_path / "kubeconfig", _tls_cluster(served, server=url), {})
        kube = Kube.connect(kubeconfig=path)
        assert "s3cr3t" not in kube.server
        kube.list_raw(rest.PODS, "default")
        expected = "Basic " + base64.b64encode(b"bob:s3cr3t").decode()
        assert served.requests[0]["headers"]["Authorization"] == expected
    # the server is gone now: every transport's error names the server, without the password
    for make in (lambda: Kube.connect(kubeconfig=path, timeout=1), lambda: Kube(load_config(kubeconfig=path))):
        with pytest.raises(errors.UnavailableError) as caught:
            make().list_raw(rest.PODS, "default")
        assert "s3cr3t" not in str(caught.value) + (caught.value.hint or "")
    bad = servers.kubeconfig(tmp_path / "bad", {"server": "https://bob:s3cr3t@host:port"}, {})
    with pytest.raises(errors.ConfigError) as refused:
        Kube.connect(kubeconfig=bad)
    assert "s3cr3t" not in refused.value.message
    assert "s3cr3t" not in caplog.text


# ---- tokenFile: bounded, re-read when rotated ----


def test_a_huge_token_file_is_refused_without_reading_it(tmp_path: Path) -> None:
    token = tmp_path / "token"
    with token.open("wb") as f:
        f.truncate(3 << 30)  # 3 GiB, sparse
    path = servers.kubeconfig(tmp_path / "kubeconfig", {"server": "https://127.0.0.1:1"}, {"tokenFile": str(token)})
    with pytest.raises(errors.ConfigError, match=r"tokenFile .* is larger than"):
        Kube.connect(kubeconfig=path)


def test_a_rotated_token_file_is_read_again_and_a_vanished_one_is_an_auth_error(tmp_path: Path) -> None:
    valid = {"Bearer first"}

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        if handler.headers.get("Authorization") in valid:
            _ok(handler)
            return
        body = json.dumps({"kind": "Status", "apiVersion": "v1", "code": 401, "reason": "Unauthorized"}).encode()
        handler.send_response(401)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    token = tmp_path / "token"
    token.write_text("first\n")
    with servers.serve(answer, tls=servers.certificate("127.0.0.1")) as served:
        path = servers.kubeconfig(tmp_path / "kubeconfig", _tls_cluster(served), {"tokenFile": str(token)})
        kube = Kube.connect(kubeconfig=path)
        kube.list_raw(rest.PODS, "default")
        valid.add("Bearer second")  # the server learns the new token before the kubelet writes it
        os.replace(tmp_path / "token", tmp_path / "old")
        (tmp_path / "token").write_text("second\n")
        valid.discard("Bearer first")
        kube.list_raw(rest.PODS, "default")
        assert served.requests[-1]["headers"]["Authorization"] == "Bearer second"
        token.unlink()
        valid.clear()
        with pytest.raises(errors.KubeaccelError) as caught:
            kube.list_raw(rest.PODS, "default")
        assert caught.value.exit_code in (errors.EXIT_FORBIDDEN, errors.EXIT_UNAVAILABLE)


# ---- configuration details ----


def test_insecure_with_a_ca_is_refused_as_kubectl_refuses_it(tmp_path: Path) -> None:
    ca = servers.certificate("127.0.0.1").cert
    cluster = {"server": "https://127.0.0.1:1", "insecure-skip-tls-verify": True,
               "certificate-authority-data": servers.b64(ca)}
    path = servers.kubeconfig(tmp_path / "kubeconfig", cluster, {"token": "t"})
    with pytest.raises(errors.ConfigError) as caught:
        Kube.connect(kubeconfig=path)
    kubectl = subprocess.run([KUBECTL, f"--kubeconfig={path}", "get", "pods"], capture_output=True, text=True,
                             timeout=60, check=False)
    words = "specifying a root certificates file with the insecure flag is not allowed"
    assert kubectl.returncode != 0 and words in kubectl.stderr
    assert words in caught.value.message


def test_tls_server_name_is_what_the_certificate_is_checked_against(tmp_path: Path) -> None:
    with servers.serve(_ok, tls=servers.certificate("api.internal")) as served:
        named = servers.kubeconfig(tmp_path / "named", _tls_cluster(served, **{"tls-server-name": "api.internal"}),
                                   {"token": "t"})
        kube = Kube.connect(kubeconfig=named)
        assert kube._fast is not None  # the stdlib transport does it, lightkube is not needed
        assert kube.list_raw(rest.PODS, "default") == []
        kubectl = subprocess.run([KUBECTL, f"--kubeconfig={named}", "get", "--raw", "/api/v1/pods"],
                                 capture_output=True, text=True, timeout=60, check=False)
        assert kubectl.returncode == 0, kubectl.stderr  # kubectl connects the same way
        plain = servers.kubeconfig(tmp_path / "plain", _tls_cluster(served), {"token": "t"})
        with pytest.raises(errors.UnavailableError, match="certificate"):
            Kube.connect(kubeconfig=plain).list_raw(rest.PODS, "default")


@pytest.mark.parametrize("how", ["--kubeconfig", "KUBECONFIG", "~/.kube/config"])
def test_a_kubeconfig_linked_to_a_device_is_refused_as_a_device(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    link = tmp_path / ".kube" / "config"
    link.parent.mkdir()
    link.symlink_to("/dev/null")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    if how == "KUBECONFIG":
        monkeypatch.setenv("KUBECONFIG", f"{tmp_path / 'missing'}:{link}")
    with pytest.raises(errors.ConfigError, match="is a device, not a regular file"):
        Kube.connect(kubeconfig=link if how == "--kubeconfig" else None)


def test_the_token_is_re_read_by_many_threads_at_once(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("a\n")
    with servers.serve(_ok, tls=servers.certificate("127.0.0.1")) as served:
        path = servers.kubeconfig(tmp_path / "kubeconfig", _tls_cluster(served), {"tokenFile": str(token)})
        kube = Kube.connect(kubeconfig=path)
        token.write_text("bb\n")
        threads = [threading.Thread(target=kube.list_raw, args=(rest.PODS, "default")) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert {r["headers"]["Authorization"] for r in served.requests} == {"Bearer bb"}


def test_typed_verbs_ride_the_same_transport_and_its_bounds(tmp_path: Path) -> None:
    """lightkube only builds and decodes the typed verbs' requests: they go out through the stdlib
    transport, with its credentials (lightkube holds none) and its deadline."""
    from lightkube.resources.core_v1 import Pod

    token = tmp_path / "token"
    token.write_text("from-file\n")
    with servers.serve(_ok, tls=servers.certificate("127.0.0.1")) as served:
        path = servers.kubeconfig(tmp_path / "kubeconfig", _tls_cluster(served), {"tokenFile": str(token)})
        kube = _connected(path, "stdlib")
        assert kube.list(Pod, "default") == []
        assert served.requests[-1]["headers"]["Authorization"] == "Bearer from-file"
        assert served.requests[-1]["headers"]["User-Agent"] == "kubeaccel"  # the stdlib transport's own
        assert not kube.config.user.token and not kube.config.user.token_file
    with servers.serve(_drip, tls=servers.certificate("127.0.0.1")) as served:
        path = servers.kubeconfig(tmp_path / "drip", _tls_cluster(served), {"token": "t"})
        kube = _connected(path, "stdlib", timeout=0.5)
        with pytest.raises(errors.UnavailableError, match="within 3 s"):
            kube.list(Pod, "default")
