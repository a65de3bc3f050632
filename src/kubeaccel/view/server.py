"""``kubeaccel ui``'s server: a read-only page on 127.0.0.1, like ``kubectl proxy``, with the user's kubeconfig.

The standard library's threaded HTTP server, no framework: the page is three packaged files and two
JSON endpoints, and the stdlib adds nothing to install (a framework would add more import time than
the whole view takes to read). What it guards:

- it binds to loopback only and answers only requests whose ``Host`` is this loopback address and
  port (a DNS-rebinding page elsewhere in the browser gets 403);
- GET and HEAD only; a strict Content-Security-Policy (``'self'`` only, no inline script), ``nosniff``;
- at most ``MAX_STREAMS`` live event streams.

Live updates: watches on pods, ResourceClaims and ResourceSlices change the held objects and the
refresher builds the document again at once from them (``kubeaccel.view.live``, nothing fetched); it
also reads the whole view every ``interval`` seconds, because the device plugins' health and holders
are only in their metrics, which cannot be watched. It pushes the view to every open ``/events`` stream
(server-sent events) only when it changed.
"""

from __future__ import annotations

import errno
import json
import logging
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from kubeaccel.errors import ConfigError, KubeaccelError

log = logging.getLogger(__name__)

ADDRESS = "127.0.0.1"
MAX_STREAMS = 32
KEEPALIVE_S = 15.0
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
}
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; "
                               "base-uri 'none'; form-action 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def asset(name: str) -> bytes:
    return resources.files("kubeaccel.view").joinpath("assets", name).read_bytes()


class Feed:
    """The latest page document and its version; readers wait for a newer one."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.version = 0
        self.body = b"{}"
        self.stopped = False

    def publish(self, document: dict[str, Any]) -> None:
        body = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
        with self._cond:
            if body != self.body:
                self.body = body
                self.version += 1
                self._cond.notify_all()

    def wait_newer(self, seen: int, timeout: float) -> tuple[int, bytes] | None:
        """The document once newer than ``seen``; None after ``timeout`` or when stopped."""
        with self._cond:
            self._cond.wait_for(lambda: self.version != seen or self.stopped, timeout)
            if self.stopped or self.version == seen:
                return None
            return self.version, self.body

    def stop(self) -> None:
        with self._cond:
            self.stopped = True
            self._cond.notify_all()


class Refresher(threading.Thread):
    """Reads the document every ``interval`` seconds into the feed; a failed read keeps the last one
    and says why (``error``), so the page shows the cluster is unreachable rather than going blank.

    With ``render`` (the document from what is held, no I/O: ``LiveSources.render``), ``read`` only
    refreshes what is held (``LiveSources.update``) and a second thread, the only one that publishes,
    builds the document after each full read and at once on ``changed`` (a watched object changed),
    coalescing a burst of events into one build; so an event never waits for a full read under way.
    Without ``render``, ``wake`` and ``changed`` both mean a full read now."""

    def __init__(self, read: Callable[[], dict[str, Any] | None], feed: Feed, interval: float,
                 render: Callable[[], dict[str, Any] | None] | None = None) -> None:
        super().__init__(name="kubeaccel-ui-refresh", daemon=True)
        self._read, self._feed, self._interval, self._render = read, feed, interval, render
        self._stop = threading.Event()
        self._woken = threading.Event()
        self._dirty = threading.Event()
        self._error: str | None = None
        self._renderer = threading.Thread(target=self._rendering, name="kubeaccel-ui-render", daemon=True)
        self.last: dict[str, Any] = {}

    @property
    def rendering(self) -> bool:
        return self._render is not None

    def wake(self) -> None:
        """Read everything again now, not at the next interval."""
        self._woken.set()

    def changed(self) -> None:
        """A watched object changed: build the document again now (a full read without ``render``)."""
        if self._render is None:
            self.wake()
        else:
            self._dirty.set()

    def _failed(self, exc: Exception) -> str:
        if isinstance(exc, KubeaccelError):
            return exc.message[:500]
        log.exception("kubeaccel ui: reading the view failed", exc_info=exc)  # a bug: on the page and in the log
        return f"internal error: {type(exc).__name__}: {str(exc)[:300]}"

    def refresh(self) -> None:
        if self._render is not None:
            try:
                self._read()
                self._error = None
            except Exception as exc:
                self._error = self._failed(exc)
            self._dirty.set()
            return
        try:
            document = self._read()
            if document is not None:
                self.last = document
                self._feed.publish(document)
        except Exception as exc:
            self._feed.publish({**self.last, "error": self._failed(exc)})

    def render_now(self) -> None:
        """Build and publish the document from what is held (the render thread's step; tests call it)."""
        assert self._render is not None
        error = self._error
        try:
            document = self._render()
        except Exception as exc:
            document, error = None, self._failed(exc)
        if document is not None:
            self.last = document
        if document is not None or error:
            self._feed.publish({**self.last, "error": error} if error else self.last)

    def _rendering(self) -> None:
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                break
            self._dirty.clear()
            self.render_now()

    def start(self) -> None:
        super().start()
        if self._render is not None:
            self._renderer.start()

    def run(self) -> None:
        # start to start: a read that takes longer than the interval is followed at once by the next,
        # so a change shows within about two reads however large the cluster
        while not self._stop.is_set():
            started = time.monotonic()
            self._woken.clear()
            self.refresh()
            self._woken.wait(max(0.05, self._interval - (time.monotonic() - started)))

    def stop(self) -> None:
        self._stop.set()
        self._woken.set()
        self._dirty.set()


def _handler(feed: Feed, allowed_hosts: frozenset[str], streams: threading.BoundedSemaphore) -> type:
    class Handler(BaseHTTPRequestHandler):
        server_version = "kubeaccel-ui"
        sys_version = ""

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("ui: " + format, *args)

        def _head(self, status: int, ctype: str, length: int | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            for key, value in SECURITY_HEADERS.items():
                self.send_header(key, value)
            if length is not None:
                self.send_header("Content-Length", str(length))
            self.end_headers()

        def _send(self, status: int, body: bytes, ctype: str = "text/plain; charset=utf-8") -> None:
            self._head(status, ctype, len(body))
            if self.command != "HEAD":
                self.wfile.write(body)

        def _checked(self) -> str | None:
            if self.headers.get("Host", "") not in allowed_hosts:
                self._send(403, b"this server answers only on its own loopback address\n")
                return None
            return self.path.split("?", 1)[0]

        def do_GET(self) -> None:
            path = self._checked()
            if path is None:
                return
            if path in ASSETS:
                name, ctype = ASSETS[path]
                self._send(200, asset(name), ctype)
            elif path == "/api/view":
                self._send(200, feed.body, "application/json")
            elif path == "/events" and self.command == "GET":
                self._events()
            else:
                self._send(404, b"not found\n")

        do_HEAD = do_GET  # noqa: N815 - http.server dispatches on do_<METHOD>

        def _refuse(self) -> None:
            self._send(405, b"read-only: GET only\n")

        do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

        def _events(self) -> None:
            if not streams.acquire(blocking=False):
                self._send(503, b"too many open pages\n")
                return
            try:
                self._head(200, "text/event-stream")
                seen = -1
                while not feed.stopped:
                    newer = feed.wait_newer(seen, KEEPALIVE_S)
                    if newer is None:
                        self.wfile.write(b": keepalive\n\n")
                    else:
                        seen, body = newer
                        self.wfile.write(b"event: view\ndata: " + body + b"\n\n")
                    self.wfile.flush()
            except OSError:
                pass  # the page went away
            finally:
                streams.release()

    return Handler


class UiServer:
    """The page's HTTP server and its refresher; ``start`` binds (a port in use is a ConfigError)."""

    def __init__(self, read: Callable[[], dict[str, Any] | None], *, port: int, interval: float,
                 watch: Callable[[Callable[[], None]], object] | None = None,
                 render: Callable[[], dict[str, Any] | None] | None = None) -> None:
        self.feed = Feed()
        self.refresher = Refresher(read, self.feed, interval, render)
        self._watch = watch
        self._port = port
        self._http: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._http is not None
        return int(self._http.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{ADDRESS}:{self.port}/"

    def start(self) -> None:
        http = ThreadingHTTPServer((ADDRESS, self._port), BaseHTTPRequestHandler, bind_and_activate=False)
        http.daemon_threads = True
        http.allow_reuse_address = False
        try:
            http.server_bind()
            http.server_activate()
        except (OSError, OverflowError) as exc:
            http.server_close()
            if isinstance(exc, OverflowError):
                raise ConfigError(f"--port {self._port} is not a port", hint="--port takes 0-65535") from None
            if exc.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {self._port} on {ADDRESS} is already in use",
                                  hint="pick another --port (0: any free one), or stop what listens there") from None
            raise ConfigError(f"cannot listen on {ADDRESS}:{self._port}: {exc.strerror or exc}",
                              hint="--port takes 0-65535; ports below 1024 need root") from None
        port = int(http.server_address[1])
        hosts = frozenset({f"{ADDRESS}:{port}", f"localhost:{port}"})
        http.RequestHandlerClass = _handler(self.feed, hosts, threading.BoundedSemaphore(MAX_STREAMS))
        self._http = http
        self.refresher.refresh()  # the first document is there before the first page asks
        if self.refresher.rendering:
            self.refresher.render_now()
        self.refresher.start()
        if self._watch is not None:
            self._watch(self.refresher.changed)
        self._thread = threading.Thread(target=http.serve_forever, name="kubeaccel-ui", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self.refresher.stop()
        self.feed.stop()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
