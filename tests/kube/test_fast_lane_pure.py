"""The door's fast lane without a cluster: which kubeconfigs it takes on, and what it makes of answers
that are not the Kubernetes API's (real HTTP servers on loopback, each answering one way)."""

from __future__ import annotations

import contextlib
import http.server
import itertools
import json
import socket
import tempfile
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures import servers
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel import errors
from kubeaccel.kube import kubeconfig as kc
from kubeaccel.kube import rest
from kubeaccel.kube.client import Kube


def _document(cluster: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": cluster}],
        "users": [{"name": "u", "user": user}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u", "namespace": "team-a"}}],
        "current-context": "x",
    }


SERVER = {"server": "https://127.0.0.1:6443", "insecure-skip-tls-verify": True}
# what only lightkube (or kubectl's plugins) can do: the fast lane must hand these over, never half-do them
HANDED_OVER_USER = {
    "exec": {"apiVersion": "client.authentication.k8s.io/v1", "command": "get-token"},
    "auth-provider": {"name": "oidc", "config": {}},
    "as": "someone-else",
    "as-groups": ["admins"],
    "as-user-extra": {"scope": ["x"]},
}
HANDED_OVER_CLUSTER = {"proxy-url": "http://proxy:3128"}


@settings(max_examples=60, deadline=None)
@given(
    user_extra=st.dictionaries(st.sampled_from(sorted(HANDED_OVER_USER)), st.just(None), max_size=3),
    cluster_extra=st.dictionaries(st.sampled_from(sorted(HANDED_OVER_CLUSTER)), st.just(None), max_size=2),
    token=st.booleans(),
)
def test_anything_beyond_certificates_and_tokens_is_handed_to_lightkube(
    user_extra: dict[str, None], cluster_extra: dict[str, None], token: bool
) -> None:
    user: dict[str, Any] = {k: HANDED_OVER_USER[k] for k in user_extra}
    cluster: dict[str, Any] = {**SERVER, **{k: HANDED_OVER_CLUSTER[k] for k in cluster_extra}}
    if token:
        user["token"] = "abc"
    found = rest.endpoint(_document(cluster, user), "x", Path("/nowhere/kubeconfig"))
    if user_extra or cluster_extra:
        assert found is None
    else:
        assert found is not None
        assert found.authorization == ("Bearer abc" if token else None)


@pytest.mark.parametrize("variable", ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"])
def test_a_proxy_in_the_environment_is_left_to_lightkube(monkeypatch: pytest.MonkeyPatch, variable: str) -> None:
    for name in ("https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, "http://proxy:3128")
    assert rest.endpoint(_document(SERVER, {"token": "t"}), "x", Path("/k")) is None
    monkeypatch.setenv("NO_PROXY", "example.com,127.0.0.0/8")  # exempt: the stdlib transport speaks directly
    assert rest.endpoint(_document(SERVER, {"token": "t"}), "x", Path("/k")) is not None


@pytest.mark.parametrize(
    ("server", "environ", "expected"),
    [
        ("https://api.example.com", {"HTTPS_PROXY": "http://p:1"}, True),
        ("https://api.example.com", {"http_proxy": "http://p:1"}, False),  # an http proxy is for http:// only
        ("http://api.example.com", {"http_proxy": "http://p:1"}, True),
        ("https://api.example.com", {"ALL_PROXY": "http://p:1"}, True),
        ("https://api.example.com", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "*"}, False),
        ("https://api.example.com", {"HTTPS_PROXY": "http://p:1", "no_proxy": "example.com"}, False),
        ("https://api.example.com", {"HTTPS_PROXY": "http://p:1", "no_proxy": ".example.com"}, False),
        ("https://api.example.com", {"HTTPS_PROXY": "http://p:1", "no_proxy": "ample.com"}, True),
        ("https://api.example.com:6443", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "api.example.com:6443"}, False),
        ("https://api.example.com:6443", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "api.example.com:443"}, True),
        ("https://10.1.2.3:6443", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, False),
        ("https://11.1.2.3:6443", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "10.0.0.0/8"}, True),
        ("https://[fd00::1]:6443", {"HTTPS_PROXY": "http://p:1", "NO_PROXY": "fd00::/8"}, False),
    ],
)
def test_no_proxy_exempts_hosts_as_httpx_and_curl_read_it(server: str, environ: dict[str, str], expected: bool) -> None:
    assert rest.proxied(server, environ) is expected


def test_token_file_and_basic_auth(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("from-file\n")
    # as the door does it: the kubeconfig checked (relative paths resolved against its directory), then the lane
    document, name = kc.select(_document(SERVER, {"tokenFile": "token"}), tmp_path / "kubeconfig", context=None,
                               server=None)
    ep = rest.endpoint(document, name, tmp_path / "kubeconfig")
    assert ep is not None and ep.authorization == "Bearer from-file"  # relative to the kubeconfig's directory
    ep = rest.endpoint(_document(SERVER, {"username": "a", "password": "b"}), "x", tmp_path / "kubeconfig")
    assert ep is not None and ep.authorization == "Basic YTpi"


# ---- answers that are not the API's, from real HTTP servers ----

Answer = Callable[[http.server.BaseHTTPRequestHandler], None]


@contextlib.contextmanager
def _one_server(answer: Answer) -> Iterator[Kube]:
    """A loopback HTTPS server answering every request with `answer`, and a fast-lane Kube pointed at it."""
    with servers.serve(answer, tls=servers.certificate("127.0.0.1")) as served, \
            tempfile.TemporaryDirectory() as directory:
        assert served.ca is not None
        path = servers.kubeconfig(
            Path(directory) / "kubeconfig",
            {"server": served.url, "certificate-authority-data": servers.b64(served.ca)},
            {"token": "t"},
        )
        kube = Kube.connect(kubeconfig=path, timeout=2.0)
        assert kube._fast is not None  # the fast lane is under test here
        yield kube


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], Kube]]:
    with contextlib.ExitStack() as stack:
        yield lambda answer: stack.enter_context(_one_server(answer))


def _reply(code: int, body: bytes, content_type: str = "application/json") -> Answer:
    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.send_response(code)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    return answer


def _status(code: int, reason: str, message: str) -> bytes:
    return json.dumps({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason,
                       "message": message}).encode()


@pytest.mark.parametrize(
    ("answer", "error", "exit_code"),
    [
        (_reply(200, b"<html>a proxy's login page</html>", "text/html"), errors.ApiUnavailableError, 4),
        (_reply(502, b"<html>bad gateway</html>", "text/html"), errors.ApiUnavailableError, 4),
        (_reply(404, _status(404, "NotFound", "the server could not find the requested resource")),
         errors.ApiNotFoundError, 3),
        (_reply(401, _status(401, "Unauthorized", "Unauthorized")), errors.UnauthorizedError, 5),
        (_reply(422, _status(422, "Invalid", "bad selector")), errors.InvalidError, 2),
        (_reply(503, b""), errors.ApiUnavailableError, 4),
    ],
)
def test_every_answer_becomes_a_typed_error(
    serve: Callable[[Answer], Kube], answer: Answer, error: type[errors.KubeaccelError], exit_code: int
) -> None:
    kube = serve(answer)
    with pytest.raises(error) as raised:
        kube.list_raw(rest.PODS, "team-a", labels={"spark-role": "driver"})
    assert raised.value.exit_code == exit_code
    with pytest.raises(error):
        kube.delete(rest.PODS, "etl-driver", "team-a")


def test_a_server_that_hangs_up_or_stalls_is_unreachable(serve: Callable[[Answer], Kube]) -> None:
    def hang_up(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        handler.connection.close()

    stalled = threading.Event()

    def stall(handler: http.server.BaseHTTPRequestHandler) -> None:
        stalled.wait(10)

    for answer in (hang_up, stall):
        with pytest.raises(errors.ApiUnavailableError):
            serve(answer).list_raw(rest.PODS, "team-a")
    stalled.set()


def test_a_write_is_never_sent_twice_but_a_read_is_retried_once(serve: Callable[[Answer], Kube]) -> None:
    """A server that hangs up without answering may have done the write: a POST or a PUT (the quota lock's
    compare-and-swap) is not repeated; a GET is, once, on a fresh connection."""
    seen: list[str] = []

    def hang_up(handler: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(handler.command)
        handler.close_connection = True
        handler.connection.close()

    kube = serve(hang_up)
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "lock", "namespace": "team-a", "resourceVersion": "7"}, "spec": {}}
    for write in (kube.create, kube.replace):
        with pytest.raises(errors.ApiUnavailableError):
            write(lease)
    with pytest.raises(errors.ApiUnavailableError):
        kube.get_raw(rest.LEASES, "lock", "team-a")
    assert seen == ["POST", "PUT", "GET", "GET"]


def test_a_write_after_an_idle_spell_goes_on_a_fresh_connection(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The apiserver closes a kept-alive connection after 90 s idle (proxies sooner). A write, which is never
    retried, must not be sent on such a connection: after `WRITE_REUSE_IDLE_SECONDS` it gets a fresh one."""
    monkeypatch.setattr(rest, "WRITE_REUSE_IDLE_SECONDS", 0.3)
    connections: list[tuple[str, int]] = []  # one handler per accepted connection; ids of freed sockets recur

    class KeepAlive(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def setup(self) -> None:
            super().setup()
            connections.append(self.client_address)

        def do_GET(self) -> None:
            body = json.dumps({"kind": "Lease", "metadata": {"name": "lock"}}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
            threading.Timer(0.15, self._idle_close).start()

        def _idle_close(self) -> None:  # what the apiserver does to a connection idle for 90 s
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

        do_POST = do_PUT = do_GET

        def log_message(self, *args: object) -> None:
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, *args: object) -> None:
            pass  # the closed connections' handlers fail to read the next request: expected here

    server = Server(("127.0.0.1", 0), KeepAlive)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        path = tmp_path / "kubeconfig"
        path.write_text(yaml.safe_dump(_document({"server": f"http://127.0.0.1:{server.server_port}"}, {"token": "t"})))
        kube = Kube.connect(kubeconfig=path, timeout=2.0)
        lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                 "metadata": {"name": "lock", "namespace": "team-a", "resourceVersion": "7"}, "spec": {}}
        kube.get_raw(rest.LEASES, "lock", "team-a")
        threading.Event().wait(0.5)  # the server has closed that connection by now
        assert kube.replace(lease)["kind"] == "Lease"
        threading.Event().wait(0.5)
        assert kube.create(lease)["kind"] == "Lease"
        assert len(connections) == 3
    finally:
        server.shutdown()
        server.server_close()


def test_a_huge_error_message_is_bounded(serve: Callable[[Answer], Kube]) -> None:
    kube = serve(_reply(404, _status(404, "NotFound", "x" * 3_000_000)))
    with pytest.raises(errors.ApiNotFoundError) as raised:
        kube.list_raw(rest.PODS, "team-a")
    assert len(raised.value.message) < 5_000


def test_the_request_carries_the_selectors_and_the_token(serve: Callable[[Answer], Kube]) -> None:
    seen: list[tuple[str, str | None]] = []

    def record(handler: http.server.BaseHTTPRequestHandler) -> None:
        seen.append((handler.path, handler.headers.get("Authorization")))
        _reply(200, json.dumps({"kind": "PodList", "items": [{"metadata": {"name": "a"}}]}).encode())(handler)

    kube = serve(record)
    items = kube.list_raw(rest.PODS, "team-a", labels={"spark-role": "driver"}, fields={"metadata.name": "a"})
    assert items == [{"metadata": {"name": "a"}}]
    kube.list_raw(rest.NAMESPACES)
    kube.delete(rest.PODS, "a", "team-a", grace_period=5)
    assert seen == [
        ("/api/v1/namespaces/team-a/pods?labelSelector=spark-role%3Ddriver&fieldSelector=metadata.name%3Da",
         "Bearer t"),
        ("/api/v1/namespaces", "Bearer t"),
        ("/api/v1/namespaces/team-a/pods/a?gracePeriodSeconds=5", "Bearer t"),
    ]


@settings(max_examples=50, deadline=None)
@given(st.text(min_size=1, max_size=20).filter(lambda t: not (t.isascii() and t.isprintable()) or " " in t))
def test_a_token_that_cannot_be_a_header_is_a_config_error(token: str) -> None:
    with pytest.raises(errors.ConfigError, match="token"):
        rest.endpoint(_document(SERVER, {"token": token}), "x", Path("/k"))


# ---- a pod's log, streamed ----


def _chunked(parts: list[bytes], pause: float = 0.0) -> Answer:
    """A log as the apiserver streams one: chunked transfer encoding, a chunk at a time."""

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        handler.protocol_version = "HTTP/1.1"
        handler.send_response(200)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()
        for part in parts:
            handler.wfile.write(f"{len(part):x}\r\n".encode() + part + b"\r\n")
            handler.wfile.flush()
            if pause:
                threading.Event().wait(pause)
        handler.wfile.write(b"0\r\n\r\n")

    return answer


@pytest.mark.slow  # a long property run: in `make test`, not `make unit`
@settings(max_examples=40, deadline=None)
@given(text=st.text(max_size=300), cuts=st.lists(st.integers(min_value=0, max_value=1200), max_size=6))
def test_a_log_arrives_whole_however_the_chunks_cut_its_characters(text: str, cuts: list[int]) -> None:
    """UTF-8 characters and lines split across chunks come out whole: the text printed is the text logged."""
    data = text.encode()
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    parts = [data[a:b] for a, b in itertools.pairwise(bounds)]
    seen: list[str] = []

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(handler.path)
        _chunked(parts)(handler)

    with _one_server(answer) as kube:
        lines = list(kube.logs("etl-driver", "team-a", container="spark-kubernetes-driver", tail_lines=5))
    # whole lines, each with its newline (the last one given one), as lightkube yields them
    assert "".join(lines) == (text if not text or text.endswith("\n") else text + "\n")
    assert all(line.endswith("\n") and "\n" not in line[:-1] for line in lines)
    assert seen == ["/api/v1/namespaces/team-a/pods/etl-driver/log?container=spark-kubernetes-driver&tailLines=5"]


def test_a_followed_log_waits_out_quiet_spells_longer_than_the_timeout(serve: Callable[[Answer], Kube]) -> None:
    """`--follow` on a quiet driver is not a dead server: the request timeout (2 s here) bounds the
    connection and the answer's start, not the silence between lines."""
    kube = serve(_chunked([b"first\n", b"second\n"], pause=2.5))
    assert list(kube.logs("etl-driver", "team-a", follow=True)) == ["first\n", "second\n"]


def test_a_log_that_stalls_without_follow_is_unreachable(serve: Callable[[Answer], Kube]) -> None:
    kube = serve(_chunked([b"first\n", b"second\n"], pause=3))
    with pytest.raises(errors.ApiUnavailableError):
        list(kube.logs("etl-driver", "team-a"))


@pytest.mark.parametrize(
    ("answer", "error", "exit_code", "names_the_pod"),
    [
        (_reply(404, _status(404, "NotFound", 'pods "etl-driver" not found')), errors.ApiNotFoundError, 3, True),
        (_reply(400, _status(400, "BadRequest", "container x is not valid")), errors.InvalidError, 2, True),
        (_reply(500, _status(500, "InternalError", "no route to the kubelet")), errors.ApiUnavailableError, 4, True),
        (_reply(502, b"<html>bad gateway</html>", "text/html"), errors.ApiUnavailableError, 4, False),
    ],
)
def test_a_log_that_cannot_be_read_is_a_typed_error(
    serve: Callable[[Answer], Kube],
    answer: Answer,
    error: type[errors.KubeaccelError],
    exit_code: int,
    names_the_pod: bool,
) -> None:
    with pytest.raises(error) as raised:
        list(serve(answer).logs("etl-driver", "team-a"))
    assert raised.value.exit_code == exit_code
    assert ("logs of pod etl-driver in namespace 'team-a'" in raised.value.message) is names_the_pod


# ---- following an object: a watch on the fast lane ----


def _pod(version: str, phase: str) -> dict[str, Any]:
    return {"kind": "Pod", "metadata": {"name": "etl-driver", "resourceVersion": version}, "status": {"phase": phase}}


def _events(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


@pytest.mark.slow  # a long property run: in `make test`, not `make unit`
@settings(max_examples=30, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=2000), max_size=8))
def test_follow_turns_a_watch_stream_into_states_however_it_is_cut(cuts: list[int]) -> None:
    data = _events(
        {"type": "MODIFIED", "object": _pod("11", "Running")},
        {"type": "BOOKMARK", "object": {"kind": "Pod", "metadata": {"resourceVersion": "12"}}},
        {"type": "MODIFIED", "object": _pod("13", "Succeeded")},
        {"type": "DELETED", "object": _pod("14", "Succeeded")},
        {"type": "MODIFIED", "object": _pod("15", "never seen: after the deletion")},
    )
    bounds = sorted({0, len(data), *(c for c in cuts if c < len(data))})
    seen: list[str] = []

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        seen.append(handler.path)
        _chunked([data[a:b] for a, b in itertools.pairwise(bounds)])(handler)

    with _one_server(answer) as kube:
        states = list(kube.follow(rest.PODS, "etl-driver", "team-a", since="10", window=30))
    assert [s and s["status"]["phase"] for s in states] == ["Running", "Succeeded", None]
    assert seen == [
        "/api/v1/namespaces/team-a/pods?watch=true&fieldSelector=metadata.name%3Detl-driver&resourceVersion=10"
        "&timeoutSeconds=30&allowWatchBookmarks=true"
    ]


def test_follow_ends_quietly_when_the_history_expired_and_types_other_watch_errors(
    serve: Callable[[Answer], Kube],
) -> None:
    expired = {"kind": "Status", "code": 410, "reason": "Expired", "message": "too old resource version"}
    kube = serve(_chunked([_events({"type": "ERROR", "object": expired})]))
    assert list(kube.follow(rest.PODS, "etl-driver", "team-a", since="1", window=5)) == []
    broken = {"kind": "Status", "code": 500, "reason": "InternalError", "message": "etcd went away"}
    kube = serve(_chunked([_events({"type": "ERROR", "object": broken})]))
    with pytest.raises(errors.ApiUnavailableError) as raised:
        list(kube.follow(rest.PODS, "etl-driver", "team-a", since="1", window=5))
    assert "cannot watch pod etl-driver in namespace 'team-a'" in raised.value.message
    for junk in (b"<html>not json</html>\n", b"[1, 2]\n", b'{"type": "MODIFIED"}\n'):
        with pytest.raises(errors.ApiUnavailableError):
            list(serve(_chunked([junk])).follow(rest.PODS, "etl-driver", "team-a", since="1", window=5))


def test_follow_polls_where_the_watch_is_refused(serve: Callable[[Answer], Kube]) -> None:
    """A 403 on the watch (RBAC may grant get but not watch): a GET a second, states only when they change."""
    reads: list[str] = []

    def answer(handler: http.server.BaseHTTPRequestHandler) -> None:
        if "watch=true" in handler.path:
            _reply(403, _status(403, "Forbidden", "pods is forbidden: cannot watch"))(handler)
            return
        reads.append(handler.path)
        phase = "Running" if len(reads) < 3 else "Succeeded"
        _reply(200, json.dumps(_pod("20" if phase == "Running" else "21", phase)).encode())(handler)

    kube = serve(answer)
    states = list(kube.follow(rest.PODS, "etl-driver", "team-a", since="19", window=3.5))
    assert [s and s["status"]["phase"] for s in states] == ["Running", "Succeeded"]
    assert reads and all(r == "/api/v1/namespaces/team-a/pods/etl-driver" for r in reads)


def test_a_log_line_longer_than_the_bound_comes_in_pieces() -> None:
    from kubeaccel.kube import client

    pieces = list(client._decoded(client._lines([b"abc\n" + b"x" * 25, b"y\nlast"], 10)))
    assert pieces == ["abc\n", "x" * 10, "x" * 10, "xxxxxy\n", "last\n"]
    assert "".join(pieces) == "abc\n" + "x" * 25 + "y\nlast\n"
    # a character cut by a piece's end comes out whole, at the start of the next piece's text
    pieces = list(client._decoded(client._lines(["ééééé\n".encode()], 3)))
    assert "".join(pieces) == "ééééé\n" and "\ufffd" not in "".join(pieces)


@pytest.mark.parametrize(
    ("code", "error"),
    [(429, errors.ApiUnavailableError), (503, errors.ApiUnavailableError), (403, errors.ForbiddenError),
     (404, errors.ApiNotFoundError)],
)  # fmt: skip
def test_a_typed_watch_refused_before_its_stream_is_typed_by_its_code(
    serve: Callable[[Answer], Kube], code: int, error: type[errors.KubeaccelError]
) -> None:
    """lightkube raises the bare HTTP error when a watch is refused (an API server under load answers 429):
    the door names the request and the code, as for any refused request, instead of "cannot reach"."""
    from kubeaccel.operator import kinds

    kube = serve(_reply(code, b""))
    with pytest.raises(error) as raised:
        next(iter(kube.watch(kinds.apps(), "team-a")))
    assert "sparkapplications" in str(raised.value) and "cannot reach" not in str(raised.value)
