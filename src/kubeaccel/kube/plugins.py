"""The door's second transport: httpx (through lightkube's connection setup), for what the standard-library
one does not do — exec and auth-provider credential plugins, impersonation, proxies from the kubeconfig or
the environment. Imported only when a kubeconfig needs it, so the fast path never loads httpx or lightkube.

It speaks the same protocol as `rest.Transport` (`request`, `stream`, `close`), with the same bounds:
the answer's size read into one buffer, its JSON nesting, a total deadline for what is not a follow.
The key material lightkube would write to temporary files reaches it as memory files (`client._in_memory`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from kubeaccel.errors import ConfigError
from kubeaccel.kube import rest
from kubeaccel.kube.status import unreachable

if TYPE_CHECKING:
    import httpx2
    from lightkube.config.kubeconfig import SingleConfig


class HttpxTransport:
    """One httpx client to one API server (httpx is thread-safe), authenticated by lightkube's auth flows."""

    def __init__(self, config: SingleConfig, timeout: float) -> None:
        import httpx2
        from lightkube import ConfigError as LightkubeConfigError
        from lightkube.config import client_adapter

        self.server = str(config.cluster.server)
        self._timeout = timeout
        self._deadline = timeout * rest.DEADLINE_FACTOR
        try:
            params = client_adapter.ConnectionParams(timeout=httpx2.Timeout(timeout), trust_env=True)
            self._client: httpx2.Client = client_adapter.Client(config, params)
        except (LightkubeConfigError, OSError, ValueError, TypeError, AssertionError, httpx2.InvalidURL) as exc:
            raise ConfigError(
                f"cannot use context {config.context_name!r}: {exc}",
                hint="check the kubeconfig's certificate and key paths",
            ) from exc

    def _failures(self) -> tuple[type[BaseException], ...]:
        import httpx2

        return (httpx2.HTTPError, httpx2.InvalidURL, OSError, ValueError, TimeoutError)

    def request(
        self,
        method: str,
        path: str,
        query: Mapping[str, str] | None = None,
        payload: bytes | None = None,
        *,
        content_type: str = "application/json",
    ) -> Any:
        headers = {"Accept": "application/json"}
        if payload is not None:
            headers["Content-Type"] = content_type
        end = time.monotonic() + self._deadline
        body = bytearray()
        with _credentials():
            try:
                with self._client.stream(method, path, params=dict(query or {}), content=payload,
                                         headers=headers) as response:
                    limit = rest.MAX_BODY_BYTES if response.is_success else rest.MAX_ERROR_BYTES
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > limit:
                            if not response.is_success:
                                break
                            raise ValueError(f"the answer is larger than {limit} bytes")
                        if time.monotonic() > end:
                            raise TimeoutError(f"no whole answer within {self._deadline:g} s")
                    status = response.status_code
            except self._failures() as exc:
                raise unreachable(self.server, exc) from exc
        _check(self.server, status, body)
        try:
            return rest.decode_json(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise unreachable(self.server, f"the answer is not JSON ({exc})") from exc

    def stream(
        self, path: str, query: Mapping[str, str], *, idle_timeout: float | None, deadline: float | None = None
    ) -> Iterator[bytes]:
        import httpx2

        end = None if deadline is None else time.monotonic() + deadline
        timeout = httpx2.Timeout(self._timeout, read=idle_timeout)
        with _credentials():
            try:
                with self._client.stream("GET", path, params=dict(query), timeout=timeout) as response:
                    if not response.is_success:
                        body = bytearray()
                        for chunk in response.iter_bytes():
                            body += chunk
                            if len(body) > rest.MAX_ERROR_BYTES:
                                break
                        _check(self.server, response.status_code, body)
                    for chunk in response.iter_bytes():
                        if end is not None and time.monotonic() > end:
                            raise TimeoutError(f"no whole answer within {deadline:g} s")
                        yield chunk
            except self._failures() as exc:
                raise unreachable(self.server, exc) from exc

    def close(self) -> None:
        self._client.close()


def _check(server: str, status: int, body: bytes | bytearray) -> None:
    if not 200 <= status < 300:
        error = rest.HttpError(status, body)
        if error.status.get("kind") != "Status":
            snippet = bytes(body[:200]).decode("utf-8", "replace")
            raise unreachable(server, f"HTTP {status} without a Kubernetes Status: {snippet!r}")
        raise error


def bridged(transport: rest.Transport) -> httpx2.BaseTransport:
    """An httpx transport that sends lightkube's typed requests through the door's standard-library
    transport: the same connections, credentials (lightkube gets none), bounds and deadline. A watch or a
    followed log streams, with no idle limit (a quiet watch is not a dead server); the rest is read whole."""
    import httpx2

    class Chunks(httpx2.SyncByteStream):
        def __init__(self, chunks: Iterator[bytes]) -> None:
            self._chunks = chunks

        def __iter__(self) -> Iterator[bytes]:
            yield from self._chunks

        def close(self) -> None:
            close = getattr(self._chunks, "close", None)
            if close is not None:
                close()

    class Bridge(httpx2.BaseTransport):
        def handle_request(self, request: httpx2.Request) -> httpx2.Response:
            target = request.url.raw_path.decode("ascii")
            params = request.url.params
            headers = {"Content-Type": "application/json"}
            if request.method == "GET" and "true" in (params.get("watch"), params.get("follow")):
                status, chunks = transport.open_stream(target, idle_timeout=None)
                return httpx2.Response(status, headers=headers, stream=Chunks(chunks), request=request)
            payload = request.read() or None
            content_type = request.headers.get("Content-Type", "application/json")
            status, body = transport.exchange(request.method, target, payload, content_type)
            return httpx2.Response(status, headers=headers, content=bytes(body), request=request)

    return Bridge()


class _credentials:  # noqa: N801 - used as a context manager, like contextlib's
    """A credential plugin that fails (an exec command gone, a token file unreadable) is a ConfigError."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        from lightkube import ConfigError as LightkubeConfigError

        if isinstance(exc, LightkubeConfigError):
            raise ConfigError(
                f"the kubeconfig's credentials cannot be used: {exc}",
                hint="check the user's exec plugin, tokenFile, certificate and key (kubectl config view)",
            ) from exc
