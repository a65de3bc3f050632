"""The door's fast lane: plain JSON requests over the standard library, for the commands people run most.

`kubeaccel spark status`, `list` and `kill` read a few fields of a list of pods and delete some. Going
through lightkube costs about 0.25 s of imports (lightkube, httpx2, h2, pydantic-like models) before
the first byte is sent, several times what `kubectl get pods` takes in all. This module speaks the
same HTTP to the same API with `http.client`, `ssl` and `json`, and is used by `Kube` (the one door)
whenever the kubeconfig asks for nothing more than it can do:

- the server URL, its CA (file or data) or `insecure-skip-tls-verify`;
- a client certificate and key (file or data), a bearer token (inline or `tokenFile`), or basic auth.

Anything else (exec and auth-provider plugins, impersonation, `tls-server-name`, a proxy from the
kubeconfig or the environment) makes `endpoint()` answer None and the door uses lightkube. Failures
are translated by the same `status.translate` from the API's Status object, never from its text.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import ssl
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, urlencode, urlsplit

from kubeaccel.errors import ConfigError
from kubeaccel.kube import kubeconfig as kc
from kubeaccel.kube.status import Failure, translate, unreachable
from kubeaccel.paths import read_user_text

__all__ = [
    "CONFIGMAPS", "CREATABLE", "LEASES", "NAMESPACES", "PODS", "RESOURCEQUOTAS", "Collection", "Endpoint", "HttpError",
    "Transport", "endpoint",
]

MAX_BODY_BYTES = 1 << 30  # a list of every pod of a large cluster fits; a runaway answer does not
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
     "disable-compression"}
)
_PROXY_VARIABLES = ("https_proxy", "HTTPS_PROXY", "http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY")


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


def endpoint(document: Mapping[str, Any], context: str, kubeconfig: Path) -> Endpoint | None:
    """The fast lane's endpoint for a context `kubeconfig.select` has checked (and whose file paths it
    made absolute); None when lightkube must speak."""
    if any(os.environ.get(v) for v in _PROXY_VARIABLES):
        return None  # httpx honours the proxy variables; so must we, by handing over
    _, cluster, user = kc.context_parts(document, context)
    if set(cluster) - _CLUSTER_KEYS or set(user) - _USER_KEYS:
        return None
    authorization = None
    token = user.get("token")
    if not token and user.get("tokenFile"):
        what = f"kubeconfig {str(kubeconfig)!r}: the user's tokenFile"
        token = read_user_text(str(user["tokenFile"]), what, hint="fix the user's tokenFile path").strip()
    if token:
        token = str(token)
        if not (token.isascii() and token.isprintable()) or " " in token:
            raise ConfigError(
                f"kubeconfig {str(kubeconfig)!r}: the user's token has spaces, control or non-ASCII characters",
                hint="re-issue the token (kubectl create token ...) and paste it whole",
            )
        authorization = f"Bearer {token}"
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


class HttpError(Exception):
    """A non-2xx answer; `failure()` makes the Failure `status.translate` types."""

    def __init__(self, code: int, body: bytes) -> None:
        super().__init__(f"HTTP {code}")
        self.code = code
        self.status: Mapping[str, Any] = {}
        with contextlib.suppress(ValueError, UnicodeDecodeError):
            decoded = json.loads(body)
            if isinstance(decoded, Mapping):
                self.status = decoded

    def failure(self, verb: str, what: str, namespace: str | None) -> Failure:
        return Failure.of_status(self.status, self.code, verb, what, namespace)


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
        self._ssl = _ssl_context(ep, context_name) if self._https else None
        self._headers = {"Accept": "application/json", "User-Agent": "kubeaccel"}
        if ep.authorization:
            self._headers["Authorization"] = ep.authorization
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
            return http.client.HTTPSConnection(self._host, self._port, timeout=self._timeout, context=self._ssl)
        return http.client.HTTPConnection(self._host, self._port, timeout=self._timeout)

    def request(
        self, method: str, path: str, query: Mapping[str, str] | None = None, payload: bytes | None = None
    ) -> Any:
        """The decoded JSON answer; HttpError for a non-2xx, ApiUnavailableError when there is no API answer.

        A kept-alive connection the server closed meanwhile is retried once on a fresh one, but only for
        reads and deletes: a POST or PUT the server may have carried out is never sent twice (a repeated
        compare-and-swap PUT would fail as if someone else had written). Instead a write never goes out
        on a connection idle for longer than `WRITE_REUSE_IDLE_SECONDS`."""
        url = self._url(path, query)
        try:
            try:
                status, body = self._exchange(method, url, payload)
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError, ssl.SSLEOFError):
                self.close()
                if method in _WRITES:
                    raise
                status, body = self._exchange(method, url, payload)
        except (OSError, http.client.HTTPException, ValueError) as exc:
            self.close()
            raise unreachable(self.server, exc) from exc
        self._check(status, body)
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:  # an answer that is not the API's (a proxy's page)
            raise unreachable(self.server, f"the answer is not JSON ({exc})") from exc

    def _url(self, path: str, query: Mapping[str, str] | None) -> str:
        return self._prefix + path + (f"?{urlencode(query)}" if query else "")

    def _check(self, status: int, body: bytes) -> None:
        """HttpError for a non-2xx answer with the API's Status; unreachable for any other non-2xx."""
        if not 200 <= status < 300:
            error = HttpError(status, body)
            if error.status.get("kind") != "Status":  # not the API's answer: a proxy, or TLS expected
                snippet = body[:200].decode("utf-8", "replace")
                raise unreachable(self.server, f"HTTP {status} without a Kubernetes Status: {snippet!r}")
            raise error

    def stream(self, path: str, query: Mapping[str, str], *, idle_timeout: float | None) -> Iterator[bytes]:
        """A streamed GET (a pod's log), chunk by chunk as it arrives, on a connection of its own that is
        closed at the end. `idle_timeout` bounds the wait for each chunk once the answer has begun (None
        for `--follow`, where a quiet log is not a dead server); errors come as from `request`."""
        url = self._url(path, query)
        conn = self._new_connection()
        try:
            try:
                conn.request("GET", url, headers={**self._headers, "Accept": "*/*"})
                response = conn.getresponse()
                if not 200 <= response.status < 300:
                    self._check(response.status, response.read(MAX_ERROR_BYTES))
                if conn.sock is not None:
                    conn.sock.settimeout(idle_timeout)
                while chunk := response.read1(STREAM_CHUNK_BYTES):
                    yield chunk
            except (OSError, http.client.HTTPException, ValueError) as exc:
                raise unreachable(self.server, exc) from exc
        finally:
            conn.close()

    def _exchange(self, method: str, url: str, payload: bytes | None) -> tuple[int, bytes]:
        conn = self._connection(method)
        headers = self._headers if payload is None else {**self._headers, "Content-Type": "application/json"}
        conn.request(method, url, body=payload, headers=headers)
        response = conn.getresponse()
        body = response.read(MAX_BODY_BYTES + 1)
        self._local.used = time.monotonic()
        if len(body) > MAX_BODY_BYTES:
            raise ValueError(f"the answer is larger than {MAX_BODY_BYTES} bytes")
        return response.status, body

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        self._local.conn = None
        if conn is not None:
            conn.close()


def translated(error: HttpError, verb: str, what: str, namespace: str | None) -> Exception:
    return translate(error.failure(verb, what, namespace))
