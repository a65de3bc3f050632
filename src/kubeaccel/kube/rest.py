"""The door's fast lane: plain JSON requests over the standard library, for the commands people run most.

`kubeaccel spark status`, `list` and `kill` read a few fields of a list of pods and delete some. Going
through lightkube costs about 0.25 s of imports (lightkube, httpx2, h2, pydantic-like models) before
the first byte is sent, several times what `kubectl get pods` takes in all. This module speaks the
same HTTP to the same API with `http.client`, `ssl` and `json`, and is used by `Kube` (the one door)
whenever the kubeconfig asks for nothing more than it can do:

- the server URL, its CA (file or data) or `insecure-skip-tls-verify`;
- a client certificate and key (file or data), a bearer token (inline or `tokenFile`), or basic auth.

- `tls-server-name` (the name the server's certificate is checked against, and sent as SNI).

Anything else (exec and auth-provider plugins, impersonation, a proxy from the kubeconfig or from the
environment that NO_PROXY does not exempt) makes `endpoint()` answer None and the door uses lightkube.
Failures are translated by the same `status.translate` from the API's Status object, never from its text.

Every answer is bounded: its size (read into one growing buffer, never chunks plus their join), its JSON
nesting (a clear error, not a RecursionError), and, for everything but a followed log or a watch, its
total time (`deadline`), so a server that drips a byte now and then cannot hold a command for ever.
A bearer token from a `tokenFile` is re-read when the file changes and once more on a 401, as client-go
does for rotated ServiceAccount tokens; it is read through the bounded reader (`TOKEN_MAX_BYTES`).
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import socket
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode, urlsplit

from kubeaccel.errors import ConfigError, UnauthorizedError
from kubeaccel.kube import kubeconfig as kc
from kubeaccel.kube.status import Failure, translate, unreachable
from kubeaccel.paths import read_user_text

__all__ = [
    "CONFIGMAPS", "CREATABLE", "LEASES", "NAMESPACES", "PODS", "RESOURCEQUOTAS", "Collection", "Endpoint", "HttpError",
    "TooLargeError", "Transport", "endpoint",
]

MAX_BODY_BYTES = 1 << 30  # a list of every pod of a large cluster fits; a runaway answer does not
TOKEN_MAX_BYTES = 1 << 20  # a projected ServiceAccount token is ~1 KiB; a JWT with many claims, tens of KiB
DEADLINE_FACTOR = 6  # a request that is not a follow ends after this many times the idle timeout, answered or not
MAX_ERROR_BYTES = 1 << 20  # an error's Status is small: read no more of a failed stream's answer
STREAM_CHUNK_BYTES = 1 << 16
# A write (POST, PUT) is never sent twice, so it must not go out on a kept-alive connection the server
# may have closed meanwhile: the apiserver closes one after 90 s idle, proxies and load balancers often
# sooner. A write after this long idle gets a fresh connection (a TLS handshake, ~5 ms) instead.
WRITE_REUSE_IDLE_SECONDS = 5.0
_WRITES = frozenset({"POST", "PUT"})
_USER_KEYS = frozenset(
    {"client-certificate", "client-certificate-data", "client-key", "client-key-data", "token", "tokenFile",
     "username", "password", "extensions"}
)
_CLUSTER_KEYS = frozenset(
    {"server", "certificate-authority", "certificate-authority-data", "insecure-skip-tls-verify", "extensions",
     "disable-compression", "tls-server-name"}
)


class Collection(NamedTuple):
    """A kind of object the fast lane can list and delete, and the lightkube class for the slow lane."""

    group: str
    version: str
    plural: str
    kind: str  # lower case, as error messages name it: "pod"
    namespaced: bool
    model: str  # "module:Class" of lightkube's resource, imported only when lightkube must speak

    def path(self, namespace: str | None = None, name: str | None = None) -> str:
        base = f"/api/{self.version}" if not self.group else f"/apis/{self.group}/{self.version}"
        if self.namespaced and namespace and namespace != "*":
            base += f"/namespaces/{quote(namespace, safe='')}"
        base += f"/{self.plural}"
        return f"{base}/{quote(name, safe='')}" if name else base

    def lightkube(self) -> Any:
        import importlib

        module, _, cls = self.model.partition(":")
        return getattr(importlib.import_module(module), cls)


PODS = Collection("", "v1", "pods", "pod", True, "lightkube.resources.core_v1:Pod")
NAMESPACES = Collection("", "v1", "namespaces", "namespace", False, "lightkube.resources.core_v1:Namespace")
RESOURCEQUOTAS = Collection(
    "", "v1", "resourcequotas", "resourcequota", True, "lightkube.resources.core_v1:ResourceQuota"
)
CONFIGMAPS = Collection("", "v1", "configmaps", "configmap", True, "lightkube.resources.core_v1:ConfigMap")
LEASES = Collection(
    "coordination.k8s.io", "v1", "leases", "lease", True, "lightkube.resources.coordination_v1:Lease"
)
# what `kubeaccel spark submit` creates or replaces, by (apiVersion, kind): on the fast lane too
CREATABLE = {
    ("v1", "Pod"): PODS,
    ("v1", "ConfigMap"): CONFIGMAPS,
    ("coordination.k8s.io/v1", "Lease"): LEASES,
    ("v1", "Service"): Collection("", "v1", "services", "service", True, "lightkube.resources.core_v1:Service"),
    ("v1", "Secret"): Collection("", "v1", "secrets", "secret", True, "lightkube.resources.core_v1:Secret"),
    ("scheduling.k8s.io/v1beta1", "PodGroup"): Collection(
        "scheduling.k8s.io", "v1beta1", "podgroups", "podgroup", True, "lightkube.resources.scheduling_v1beta1:PodGroup"
    ),
    ("networking.k8s.io/v1", "NetworkPolicy"): Collection(
        "networking.k8s.io", "v1", "networkpolicies", "networkpolicy", True,
        "lightkube.resources.networking_v1:NetworkPolicy",
    ),
}


class Endpoint(NamedTuple):
    """Where and how to connect, resolved from one checked kubeconfig context."""

    server: str
    ca_file: str | None = None
    ca_data: bytes | None = None  # PEM or DER
    insecure: bool = False
    cert_file: str | None = None
    key_file: str | None = None
    cert_data: bytes | None = None
    key_data: bytes | None = None
    authorization: str | None = None
    tls_server_name: str | None = None
    token_file: str | None = None  # re-read as it rotates (see `_Auth`); `authorization` then is its first value
    context: str = ""


def proxied(server: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether httpx (and curl) would send a request to `server` through a proxy from the environment:
    the scheme's *_proxy or all_proxy is set and NO_PROXY does not exempt the host ("*", the host, a
    domain suffix with or without its leading dot, an IP in a CIDR, optionally with the port)."""
    env = os.environ if environ is None else environ
    parts = urlsplit(server)
    scheme = parts.scheme
    if not any(env.get(v) for v in (f"{scheme}_proxy", f"{scheme.upper()}_PROXY", "all_proxy", "ALL_PROXY")):
        return False
    host = (parts.hostname or "").lower()
    port = parts.port or (443 if scheme == "https" else 80)
    for raw in (env.get("no_proxy") or env.get("NO_PROXY") or "").split(","):
        entry = raw.strip().lower()
        if not entry:
            continue
        if entry == "*":
            return False
        name, _, entry_port = entry.rpartition(":") if entry.count(":") == 1 else (entry, "", "")
        if entry_port and entry_port != str(port):
            continue
        name = name.strip("[]").lstrip(".")
        if host == name or host.endswith("." + name) or _in_network(host, name):
            return False
    return True


def _in_network(host: str, entry: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host.strip("[]")) in ipaddress.ip_network(entry, strict=False)
    except ValueError:
        return False


def _checked_token(token: str, where: str) -> str:
    if not (token.isascii() and token.isprintable()) or " " in token:
        raise ConfigError(
            f"{where}: the user's token has spaces, control or non-ASCII characters",
            hint="re-issue the token (kubectl create token ...) and paste it whole",
        )
    return token


def read_token_file(path: str, where: str) -> str:
    """A bearer token from a file, read through the bounded reader (a huge or special file is refused)."""
    text = read_user_text(path, f"{where}: the user's tokenFile", max_bytes=TOKEN_MAX_BYTES,
                          hint="fix the user's tokenFile path")
    return _checked_token(text.strip(), where)


def endpoint(document: Mapping[str, Any], context: str, kubeconfig: Path) -> Endpoint | None:
    """The fast lane's endpoint for a context `kubeconfig.select` has checked (and whose file paths it
    made absolute); None when lightkube must speak."""
    _, cluster, user = kc.context_parts(document, context)
    if proxied(str(cluster["server"])):
        return None  # httpx honours the proxy variables; so must we, by handing over
    if set(cluster) - _CLUSTER_KEYS or set(user) - _USER_KEYS:
        return None
    where = f"kubeconfig {str(kubeconfig)!r}"
    authorization = None
    token = user.get("token")
    token_file = str(user["tokenFile"]) if not token and user.get("tokenFile") else None
    if token_file:
        token = read_token_file(token_file, where)
    if token:
        authorization = f"Bearer {_checked_token(str(token), where)}"
    elif user.get("username") is not None:
        pair = f"{user.get('username')}:{user.get('password') or ''}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode("ascii")
    return Endpoint(
        server=str(cluster["server"]).rstrip("/"),
        ca_file=str(cluster["certificate-authority"]) if cluster.get("certificate-authority") else None,
        ca_data=base64.b64decode(cluster["certificate-authority-data"])
        if cluster.get("certificate-authority-data")
        else None,
        insecure=cluster.get("insecure-skip-tls-verify") is True,
        cert_file=str(user["client-certificate"]) if user.get("client-certificate") else None,
        key_file=str(user["client-key"]) if user.get("client-key") else None,
        cert_data=base64.b64decode(user["client-certificate-data"]) if user.get("client-certificate-data") else None,
        key_data=base64.b64decode(user["client-key-data"]) if user.get("client-key-data") else None,
        authorization=authorization,
        tls_server_name=str(cluster["tls-server-name"]) if cluster.get("tls-server-name") else None,
        token_file=token_file,
        context=context,
    )


@contextlib.contextmanager
def _pem_files(cert: bytes, key: bytes) -> Iterator[tuple[str, str]]:
    """ssl loads a client certificate only from files. On Linux they are anonymous memory files (the
    key never touches a disk); elsewhere private temporary files (0600), removed straight after."""
    if hasattr(os, "memfd_create"):
        fds: list[int] = []
        try:
            for data in (cert, key):
                fds.append(os.memfd_create("kubeaccel-pem", os.MFD_CLOEXEC))
                os.write(fds[-1], data)
            yield f"/proc/self/fd/{fds[0]}", f"/proc/self/fd/{fds[1]}"
        finally:
            for fd in fds:
                os.close(fd)
        return
    import tempfile

    paths: list[str] = []
    try:
        for data in (cert, key):
            fd, path = tempfile.mkstemp(prefix="kubeaccel-", suffix=".pem")
            paths.append(path)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
        yield paths[0], paths[1]
    finally:
        for path in paths:
            with contextlib.suppress(OSError):
                os.unlink(path)


def _ssl_context(ep: Endpoint, context_name: str) -> ssl.SSLContext:
    try:
        if ep.insecure:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        else:
            # ssl takes PEM as text and DER as bytes
            pem = ep.ca_data is not None and ep.ca_data.lstrip().startswith(b"-----BEGIN")
            cadata = ep.ca_data.decode("ascii", "replace") if pem and ep.ca_data is not None else ep.ca_data
            ctx = ssl.create_default_context(cafile=ep.ca_file, cadata=cadata)
        if ep.cert_data is not None and ep.key_data is not None:
            with _pem_files(ep.cert_data, ep.key_data) as (cert, key):
                ctx.load_cert_chain(cert, key)
        elif ep.cert_file and ep.key_file:
            ctx.load_cert_chain(ep.cert_file, ep.key_file)
    except (ssl.SSLError, OSError, ValueError, TypeError) as exc:
        raise ConfigError(
            f"cannot use context {context_name!r}: its certificates do not load ({exc})",
            hint="check the kubeconfig's certificate-authority and client certificate and key",
        ) from exc
    return ctx


def decode_json(body: bytes | bytearray) -> Any:
    """JSON, with nesting too deep for Python a ValueError like any other bad JSON (not a RecursionError)."""
    try:
        return json.loads(body)
    except RecursionError:
        raise ValueError("the JSON is nested too deeply") from None


class TooLargeError(Exception):
    """An answer longer than the caller's bound."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


class HttpError(Exception):
    """A non-2xx answer; `failure()` makes the Failure `status.translate` types."""

    def __init__(self, code: int, body: bytes | bytearray) -> None:
        super().__init__(f"HTTP {code}")
        self.code = code
        self.status: Mapping[str, Any] = {}
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            decoded = decode_json(body)
            if isinstance(decoded, Mapping):
                self.status = decoded

    def failure(self, verb: str, what: str, namespace: str | None) -> Failure:
        return Failure.of_status(self.status, self.code, verb, what, namespace)


class _Auth:
    """The Authorization header: fixed, or a bearer token from a file, re-read when the file changes
    (a kubelet-rotated ServiceAccount token) and once more after a 401, as client-go's tokenFile auth."""

    def __init__(self, ep: Endpoint) -> None:
        self._header = ep.authorization
        self._file = ep.token_file
        self._where = f"context {ep.context!r}"
        self._seen = self._identity()
        self._lock = threading.Lock()

    def _identity(self) -> tuple[int, int, int] | None:
        if self._file is None:
            return None
        try:
            st = os.stat(self._file)
        except OSError:
            return None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def header(self) -> str | None:
        if self._file is not None and (now := self._identity()) is not None and now != self._seen:
            with contextlib.suppress(ConfigError):  # a file caught mid-rotation: keep the last good token
                self._reread(now)
        return self._header

    def refresh(self) -> bool:
        """After a 401: read the token file again; False when there is none (nothing new to try). A file
        that cannot be read now (gone, too big) is the 401's cause: an UnauthorizedError that names it."""
        if self._file is None:
            return False
        try:
            self._reread(self._identity())
        except ConfigError as exc:
            raise UnauthorizedError(
                f"the API server refused the credentials (401), and {exc.message}",
                hint="restore the token file (kubectl create token ...), or fix the kubeconfig's tokenFile",
                reason="Unauthorized",
                code=401,
            ) from None
        return True

    def _reread(self, identity: tuple[int, int, int] | None) -> None:
        token = read_token_file(self._file or "", self._where)
        with self._lock:
            self._header, self._seen = f"Bearer {token}", identity


class _NamedHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection whose certificate is checked against (and SNI names) `tls_server_name`, the
    kubeconfig's `tls-server-name`, instead of the host connected to."""

    def __init__(self, host: str, port: int | None, *, timeout: float, context: ssl.SSLContext, name: str) -> None:
        super().__init__(host, port, timeout=timeout, context=context)
        self._server_name = name
        self._tls_context = context

    def connect(self) -> None:
        http.client.HTTPConnection.connect(self)
        self.sock = self._tls_context.wrap_socket(self.sock, server_hostname=self._server_name)


class _Deadline:
    """The time left for one request; each socket wait is cut to it."""

    def __init__(self, idle: float | None, total: float | None) -> None:
        self.idle = idle
        self.total = total
        self.end = None if total is None else time.monotonic() + total

    def arm(self, sock: socket.socket | None) -> None:
        """Cut the socket's next wait to what is left (the connection's socket, taken before
        `getresponse`, which drops it from the connection of an answer that ends the connection)."""
        if self.end is not None and self.end - time.monotonic() <= 0:
            raise TimeoutError(f"no whole answer within {self.total:g} s")
        if sock is None:
            return
        if self.end is None:
            sock.settimeout(self.idle)
            return
        left = self.end - time.monotonic()
        sock.settimeout(left if self.idle is None else min(self.idle, left))

    def read(self, response: http.client.HTTPResponse, sock: socket.socket | None, size: int) -> bytes:
        """The next piece of the answer, within the idle timeout and what is left of the deadline."""
        self.arm(sock)
        try:
            return response.read1(size)
        except TimeoutError:
            if self.end is not None and time.monotonic() >= self.end - 0.05:
                raise TimeoutError(f"no whole answer within {self.total:g} s") from None
            raise


class Transport:
    """Keep-alive HTTP(S) connections to one API server, one per thread (http.client is not thread-safe)."""

    def __init__(self, ep: Endpoint, context_name: str, timeout: float) -> None:
        parts = urlsplit(ep.server)
        self.server = ep.server
        self._https = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._port = parts.port
        self._prefix = parts.path.rstrip("/")
        self._timeout = timeout
        self._deadline = timeout * DEADLINE_FACTOR
        self._server_name = ep.tls_server_name
        self._ssl = _ssl_context(ep, context_name) if self._https else None
        self._headers = {"Accept": "application/json", "User-Agent": "kubeaccel"}
        self._auth = _Auth(ep)
        self._local = threading.local()

    def _connection(self, method: str) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        idle = time.monotonic() - getattr(self._local, "used", 0.0)
        if conn is not None and method in _WRITES and idle > WRITE_REUSE_IDLE_SECONDS:
            self.close()
            conn = None
        if conn is None:
            conn = self._new_connection()
            self._local.conn = conn
        return conn

    def _new_connection(self) -> http.client.HTTPConnection:
        if self._https:
            assert self._ssl is not None
            if self._server_name:
                return _NamedHTTPSConnection(
                    self._host, self._port, timeout=self._timeout, context=self._ssl, name=self._server_name
                )
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._ssl)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def _request_headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {**self._headers, **(extra or {})}
        if (authorization := self._auth.header()) is not None:
            headers["Authorization"] = authorization
        return headers

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        payload: bytes | None = None,
        *,
        content_type: str = "application/json",
    ) -> Any:
        """The decoded JSON answer; HttpError for a non-2xx, ApiUnavailableError when there is no API answer.

        A kept-alive connection the server closed meanwhile is retried once on a fresh one, but only for
        reads and deletes: a POST or PUT the server may have carried out is never sent twice (a repeated
        compare-and-swap PUT would fail as if someone else had written). Instead a write never goes out
        on a connection idle for longer than `WRITE_REUSE_IDLE_SECONDS`. A 401 with a token file is
        retried once with the file read again (a rotated token)."""
        url = self._url(path, query)
        status, body = self._send(method, url, payload, content_type)
        if status == 401 and self._auth.refresh():
            status, body = self._send(method, url, payload, content_type)
        self._check(status, body)
        try:
            return decode_json(body)
        except (ValueError, UnicodeDecodeError) as exc:  # an answer that is not the API's (a proxy's page)
            raise unreachable(self.server, f"the answer is not JSON ({exc})") from exc

    def exchange(self, method: str, target: str, payload: bytes | None, content_type: str) -> tuple[int, bytearray]:
        """(status, body) of a request whose answer is read whole, bounded, and not checked: for lightkube's
        typed verbs (`plugins.bridged`), which check and decode it themselves. `target` is the full path
        and query, the server's path prefix included. Retries and the token's 401 re-read as `request`."""
        status, body = self._send(method, target, payload, content_type)
        if status == 401 and self._auth.refresh():
            status, body = self._send(method, target, payload, content_type)
        return status, body

    def open_stream(self, target: str, *, idle_timeout: float | None) -> tuple[int, Iterator[bytes]]:
        """(status, chunks) of a streamed GET (a watch, a followed log) on a connection of its own, closed
        when the chunks end or are closed; a non-2xx answer comes whole (bounded) as one chunk."""
        conn = self._new_connection()
        limit = _Deadline(self._timeout, None)
        try:
            conn.request("GET", target, headers=self._request_headers({"Accept": "*/*"}))
            sock = conn.sock
            limit.arm(sock)
            response = conn.getresponse()
            if not 200 <= response.status < 300:
                body = _read_body(response, sock, limit, MAX_ERROR_BYTES)
                conn.close()
                return response.status, iter([bytes(body)])
        except (OSError, http.client.HTTPException, ValueError) as exc:
            conn.close()
            raise unreachable(self.server, exc) from exc
        limit.idle = idle_timeout
        return response.status, self._chunks(conn, response, sock, limit)

    def _chunks(
        self, conn: http.client.HTTPConnection, response: http.client.HTTPResponse, sock: socket.socket | None,
        limit: _Deadline,
    ) -> Iterator[bytes]:
        try:
            while chunk := limit.read(response, sock, STREAM_CHUNK_BYTES):
                yield chunk
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise unreachable(self.server, exc) from exc
        finally:
            conn.close()

    def _send(self, method: str, url: str, payload: bytes | None, content_type: str) -> tuple[int, bytearray]:
        deadline = _Deadline(self._timeout, self._deadline)
        try:
            try:
                return self._exchange(method, url, payload, content_type, deadline)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
                self.close()
                if method in _WRITES:
                    raise
                return self._exchange(method, url, payload, content_type, deadline)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self.close()
            raise unreachable(self.server, exc) from exc

    def _url(self, path: str, query: Mapping[str, str] | None) -> str:
        return self._prefix + path + (f"?{urlencode(query)}" if query else "")

    def _check(self, status: int, body: bytes | bytearray) -> None:
        """HttpError for a non-2xx answer with the API's Status; unreachable for any other non-2xx."""
        if not 200 <= status < 300:
            error = HttpError(status, body)
            if error.status.get("kind") != "Status":  # not the API's answer: a proxy, or TLS expected
                snippet = bytes(body[:200]).decode("utf-8", "replace")
                raise unreachable(self.server, f"HTTP {status} without a Kubernetes Status: {snippet!r}")
            raise error

    def stream(
        self, path: str, query: Mapping[str, str], *, idle_timeout: float | None, deadline: float | None = None
    ) -> Iterator[bytes]:
        """A streamed GET (a pod's log, a watch), chunk by chunk as it arrives, on a connection of its own
        that is closed at the end. `idle_timeout` bounds the wait for each chunk once the answer has begun
        (None for `--follow`, where a quiet log is not a dead server), `deadline` the whole answer (None:
        none); errors come as from `request`."""
        url = self._url(path, query)
        conn = self._new_connection()
        limit = _Deadline(self._timeout, deadline)
        try:
            try:
                conn.request("GET", url, headers=self._request_headers({"Accept": "*/*"}))
                sock = conn.sock
                limit.arm(sock)
                response = conn.getresponse()
                if not 200 <= response.status < 300:
                    self._check(response.status, _read_body(response, sock, limit, MAX_ERROR_BYTES))
                limit.idle = idle_timeout
                while True:
                    chunk = limit.read(response, sock, STREAM_CHUNK_BYTES)
                    if not chunk:
                        break
                    yield chunk
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise unreachable(self.server, exc) from exc
        finally:
            conn.close()

    def get_bytes(self, path: str, limit: int) -> bytes:
        """A GET whose answer is not JSON (a pod's metrics through the API server's proxy) on the kept-alive
        connection, at most `limit` bytes (`TooLargeError` beyond); errors otherwise as from `request`."""
        url = self._url(path, None)
        deadline = _Deadline(self._timeout, self._deadline)
        try:
            conn = self._connection("GET")
            conn.request("GET", url, headers=self._request_headers({"Accept": "*/*"}))
            sock = conn.sock
            deadline.arm(sock)
            response = conn.getresponse()
            body = _read_body(response, sock, deadline, max(limit, MAX_ERROR_BYTES))
            self._local.used = time.monotonic()
        except ValueError as exc:
            self.close()  # the rest of the answer is unread: the connection cannot take another request
            raise TooLargeError(limit) from exc
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise unreachable(self.server, exc) from exc
        self._check(response.status, body)
        if len(body) > limit:
            raise TooLargeError(limit)
        return bytes(body)

    def _exchange(
        self, method: str, url: str, payload: bytes | None, content_type: str, deadline: _Deadline
    ) -> tuple[int, bytearray]:
        conn = self._connection(method)
        extra = None if payload is None else {"Content-Type": content_type}
        conn.request(method, url, body=payload, headers=self._request_headers(extra))
        sock = conn.sock
        deadline.arm(sock)
        response = conn.getresponse()
        body = _read_body(response, sock, deadline, MAX_BODY_BYTES)
        self._local.used = time.monotonic()
        return response.status, body

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()


def _read_body(
    response: http.client.HTTPResponse, sock: socket.socket | None, deadline: _Deadline, limit: int
) -> bytearray:
    """The whole answer into one buffer that grows in place (a chunked answer is never held twice, as
    http.client's read() holds its chunks and their join), at most `limit` bytes, within the deadline."""
    body = bytearray()
    while True:
        chunk = deadline.read(response, sock, STREAM_CHUNK_BYTES)
        if not chunk:
            response.close()  # read to its end: the kept-alive connection takes the next request
            return body
        body += chunk
        if len(body) > limit:
            if limit == MAX_ERROR_BYTES:
                return body  # an error's Status: what came is enough to say what went wrong
            raise ValueError(f"the answer is larger than {limit} bytes")


def translated(error: HttpError, verb: str, what: str, namespace: str | None) -> Exception:
    return translate(error.failure(verb, what, namespace))
