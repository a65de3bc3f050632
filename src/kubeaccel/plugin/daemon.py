"""The daemon: a manager that owns one server per resource, and the supervisor loop around it.

The supervisor polls the socket directory every ``POLL_INTERVAL_S``: when the kubelet restarts
it deletes every socket there and re-creates ``kubelet.sock``, so "our socket is gone" means
*restart the server*, and "``kubelet.sock`` has a new inode" means *register again*. While the
kubelet is absent, registration backs off (``BACKOFF_MIN_S`` doubling to ``BACKOFF_MAX_S``)
and is retried at once when ``kubelet.sock`` reappears. The daemon never exits because the
kubelet went away; it exits on SIGTERM/SIGINT (``stop``) and reloads its config on SIGHUP.

The server factory and the registrar are injected, so the supervisor logic is testable without
sockets; the defaults are the real gRPC ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kubeaccel.devices.config import PluginConfig, build_backends
from kubeaccel.errors import ConfigError, KubeaccelError, UnavailableError
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin.metrics import Metrics
from kubeaccel.plugin.server import KUBELET_SOCKET, PluginServer, file_identity, register
from kubeaccel.plugin.service import ResourcePlugin

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.01
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0


class Server(Protocol):
    socket_path: Path

    async def start(self) -> None: ...

    def socket_intact(self) -> bool: ...

    async def stop(self, grace: float | None = None) -> None: ...


ServerFactory = Callable[[ResourcePlugin, Path], Server]
Registrar = Callable[[Path, str, str, pb.DevicePluginOptions], Awaitable[None]]


async def _register(kubelet: Path, endpoint: str, resource: str, options: pb.DevicePluginOptions) -> None:
    await register(kubelet, endpoint, resource, options)


def check_socket_dir(socket_dir: Path) -> None:
    """A clear error up front for a socket dir we cannot use."""
    if not socket_dir.is_dir():
        raise ConfigError(
            f"socket directory {socket_dir} does not exist",
            hint="pass --socket-dir with the kubelet's device-plugin directory "
            "(default /var/lib/kubelet/device-plugins), or create it",
        )
    if not os.access(socket_dir, os.W_OK | os.X_OK):
        raise ConfigError(
            f"socket directory {socket_dir} is not writable",
            hint="run the daemon as a user that may create sockets there (the DaemonSet runs it as root)",
        )


@dataclass
class _Entry:
    """Supervisor state for one resource."""

    plugin: ResourcePlugin
    server: Server | None = None
    registered_with: tuple[int, int] | None = None  # identity of the kubelet.sock we registered with
    attempted_with: tuple[int, int] | None = None
    next_attempt: float = 0.0
    backoff: float = BACKOFF_MIN_S
    warned: bool = False


class Manager:
    """Owns one ``ResourcePlugin`` and its current server per resource; ``tick`` reconciles once."""

    def __init__(
        self,
        socket_dir: Path,
        *,
        server_factory: ServerFactory = PluginServer,
        registrar: Registrar = _register,
        metrics: Metrics | None = None,
    ) -> None:
        self.socket_dir = socket_dir
        self.kubelet_socket = socket_dir / KUBELET_SOCKET
        self.metrics = metrics or Metrics()
        self._factory = server_factory
        self._registrar = registrar
        self.entries: dict[str, _Entry] = {}
        self.registered = asyncio.Event()  # set whenever every resource is registered

    async def add(self, plugin: ResourcePlugin) -> None:
        entry = _Entry(plugin)
        self.entries[plugin.resource_name] = entry
        plugin.start_watching()
        await self._restart(entry)

    async def _restart(self, entry: _Entry) -> None:
        if entry.server is not None:
            await entry.server.stop(0)
            entry.server = None
        server = self._factory(entry.plugin, self.socket_dir)
        await server.start()
        entry.server = server
        entry.registered_with = None
        entry.next_attempt = 0.0

    async def _try_register(self, entry: _Entry, kubelet: tuple[int, int]) -> None:
        assert entry.server is not None
        name = entry.plugin.resource_name
        entry.attempted_with = kubelet
        try:
            await self._registrar(self.kubelet_socket, entry.server.socket_path.name, name, entry.plugin.options)
        except UnavailableError as exc:
            self.metrics.registrations.labels(name, "error").inc()
            entry.next_attempt = time.monotonic() + entry.backoff
            entry.backoff = min(entry.backoff * 2, BACKOFF_MAX_S)
            if not entry.warned:
                log.warning("%s; retrying with backoff", exc.message)
                entry.warned = True
            return
        self.metrics.registrations.labels(name, "ok").inc()
        entry.registered_with = kubelet
        entry.backoff = BACKOFF_MIN_S
        entry.warned = False
        log.info("%s: registered with the kubelet as %s", name, entry.server.socket_path.name)

    async def tick(self) -> None:
        """One reconcile pass: restart servers whose socket vanished, (re-)register where needed."""
        kubelet = file_identity(self.kubelet_socket)
        for entry in self.entries.values():
            if entry.server is None or not entry.server.socket_intact():
                try:
                    await self._restart(entry)
                except Exception as exc:  # e.g. the directory vanished: keep trying, never exit
                    log.warning("%s: cannot start the server: %s", entry.plugin.resource_name, exc)
                    entry.server = None
                    continue
        if kubelet is None:  # the kubelet is gone: whatever comes next must be registered with anew
            for entry in self.entries.values():
                entry.registered_with = None
            self.registered.clear()
            return
        now = time.monotonic()
        due = []
        for entry in self.entries.values():
            if entry.server is None or entry.registered_with == kubelet:
                continue
            if entry.attempted_with != kubelet:  # a new kubelet: try at once, forget the backoff
                entry.next_attempt, entry.backoff = 0.0, BACKOFF_MIN_S
            if now >= entry.next_attempt:
                due.append(self._try_register(entry, kubelet))
        if due:
            await asyncio.gather(*due)
        if all(e.registered_with == kubelet for e in self.entries.values()):
            self.registered.set()
        else:
            self.registered.clear()

    async def close(self) -> None:
        for entry in self.entries.values():
            if entry.server is not None:
                await entry.server.stop(0)
                entry.server = None
            entry.plugin.close()
            self.metrics.forget(entry.plugin.resource_name)
        self.entries.clear()


ConfigLoader = Callable[[], PluginConfig]


class Daemon:
    """The whole node-side process: config → backends → manager, supervised until ``stop``."""

    def __init__(
        self,
        load: ConfigLoader,
        socket_dir: Path,
        *,
        root: Path = Path("/"),
        metrics_port: int | None = None,
        metrics_addr: str = "0.0.0.0",
        server_factory: ServerFactory = PluginServer,
        registrar: Registrar = _register,
    ) -> None:
        self._load = load
        self.socket_dir = socket_dir
        self.root = root
        self.metrics = Metrics()
        self.metrics_port = metrics_port
        self._metrics_addr = metrics_addr
        self.manager = Manager(socket_dir, server_factory=server_factory, registrar=registrar, metrics=self.metrics)
        self.stop_requested = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.started = threading.Event()  # servers are listening (set from the loop thread)

    def _plugins(self, config: PluginConfig) -> list[ResourcePlugin]:
        """Everything a config needs, built before anything running is touched (closed on failure)."""
        backends = build_backends(config, root=self.root)
        try:
            return [
                ResourcePlugin(backend, cdi=resource.cdi, metrics=self.metrics)
                for resource, backend in zip(config.resources, backends, strict=True)
            ]
        except BaseException:
            for backend in backends:
                backend.close()
            raise

    async def _install(self, plugins: list[ResourcePlugin]) -> None:
        for plugin in plugins:
            await self.manager.add(plugin)

    async def _reload(self) -> None:
        # The new config is loaded and its backends built first: if either fails, the running
        # resources keep serving untouched.
        try:
            config = self._load()
            plugins = self._plugins(config)
        except KubeaccelError as exc:
            log.error("config reload failed, keeping the running config: %s", exc)
            return
        except Exception:
            log.exception("config reload failed, keeping the running config")
            return
        await self.manager.close()
        await self._install(plugins)
        log.info("config reloaded: %s", ", ".join(r.name for r in config.resources))

    async def run(self, *, handle_signals: bool = False) -> None:
        check_socket_dir(self.socket_dir)
        config = self._load()
        loop = asyncio.get_running_loop()
        if handle_signals:
            loop.add_signal_handler(signal.SIGTERM, self.stop_requested.set)
            loop.add_signal_handler(signal.SIGINT, self.stop_requested.set)
            loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        try:
            if self.metrics_port is not None:
                self.metrics_port = self.metrics.serve(self.metrics_port, self._metrics_addr)
            await self._install(self._plugins(config))
            self.started.set()
            while not self.stop_requested.is_set():
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    await self._reload()
                await self.manager.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stop_requested.wait(), POLL_INTERVAL_S)
        finally:
            await self.manager.close()
            self.metrics.close()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)


class BackgroundDaemon:
    """Runs a ``Daemon`` on its own event loop in a thread: for tests, benchmarks and the demo.

    ``stop()`` ends it cleanly and re-raises whatever the daemon raised, so a failure inside the
    daemon fails the test that started it.
    """

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name="kubeaccel-plugin", daemon=True)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self.daemon.run())
        except BaseException as exc:
            self._error = exc
        finally:
            self.daemon.started.set()  # never leave start() waiting on a daemon that died
            loop.close()

    def start(self, timeout: float = 10.0) -> BackgroundDaemon:
        self._thread.start()
        if not self.daemon.started.wait(timeout):
            raise UnavailableError("the plugin daemon did not start in time")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def call(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the daemon's loop (e.g. ``daemon.reload_requested.set``)."""
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn)

    def stop(self, timeout: float = 10.0) -> None:
        if self._loop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self.daemon.stop_requested.set)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise UnavailableError("the plugin daemon did not stop in time")
        if self._error is not None:
            raise self._error

    def __enter__(self) -> BackgroundDaemon:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
