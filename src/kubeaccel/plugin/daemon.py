"""The daemon: the event-driven supervisor around the manager (``kubeaccel.plugin.manager``).

The supervisor sleeps on inotify events of the socket directory (``kubeaccel.devices.watch``):
when the kubelet restarts it deletes every socket there and re-creates ``kubelet.sock``, so "our
socket is gone" means *restart the server*, and "``kubelet.sock`` has a new inode" means
*register again*. Between events it does nothing, except a safety-net reconcile every
``SAFETY_TICK_S`` and the retries of a backoff that is due.

Registration runs as one task per resource with a timeout: a kubelet that accepts the connection
but never answers delays only that resource's registration, never supervision, other resources,
a reload or shutdown. A refused or timed-out registration backs off (``BACKOFF_MIN_S`` doubling to
``BACKOFF_MAX_S``) and is retried at once when ``kubelet.sock`` is replaced. When the socket
directory itself disappears, the daemon says so in one log line, waits for it with the same
backoff, and serves again when it is back. The daemon never exits because the kubelet went away;
it exits on SIGTERM/SIGINT (``stop_requested``) and reloads on SIGHUP, restarting only the
resources whose config changed.

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
from collections.abc import Callable
from pathlib import Path

from kubeaccel.background import InThread
from kubeaccel.devices.cdi import DEFAULT_SPEC_DIR, CdiError
from kubeaccel.devices.config import PluginConfig, ResourceConfig, build_resources
from kubeaccel.devices.watch import LoopDirWatch, flags
from kubeaccel.errors import ConfigError, KubeaccelError
from kubeaccel.plugin.manager import (
    BACKOFF_MAX_S,
    BACKOFF_MIN_S,
    Manager,
    Registrar,
    ServerFactory,
    register_with_kubelet,
)
from kubeaccel.plugin.metrics import Metrics
from kubeaccel.plugin.server import (
    PluginServer,
    check_socket_path,
)
from kubeaccel.plugin.service import ResourcePlugin

log = logging.getLogger(__name__)

# Reconcile this often even without an event (a missed event cannot wedge the daemon).
SAFETY_TICK_S = 30.0
# What a kubelet restart does in the socket directory: sockets removed and created.
_DIR_EVENTS = flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO


def check_socket_dir(socket_dir: Path) -> None:
    """A clear error up front for a socket dir we cannot use."""
    if not socket_dir.is_absolute():
        raise ConfigError(
            f"socket directory {socket_dir} is a relative path",
            hint=f"pass an absolute --socket-dir, e.g. {socket_dir.absolute()}",
        )
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


def check_cdi_dir(cdi_dir: Path) -> None:
    """Where CDI specs go: created (with a warning) when missing; ``ConfigError`` when unusable.

    A runtime with CDI support (containerd >= 1.7 with ``enable_cdi``, CRI-O) reads ``/etc/cdi``
    and ``/var/run/cdi``. A device plugin cannot ask the runtime whether it does, so a missing
    directory is the sign we can see: we say so, since on such a node the names we return are
    ignored and containers get no devices.
    """
    if not cdi_dir.is_absolute():
        raise ConfigError(f"CDI directory {cdi_dir} is a relative path", hint="pass an absolute --cdi-dir")
    if not cdi_dir.is_dir():
        log.warning(
            "cdi: true, but the CDI spec directory %s did not exist: creating it. If this node's container "
            "runtime has no CDI support (containerd < 1.7, or enable_cdi off), containers will get no devices",
            cdi_dir,
        )
        try:
            cdi_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cdi: true, but the CDI spec directory {cdi_dir} cannot be created: {exc.strerror}",
                hint="mount the host's /var/run/cdi into the plugin (--cdi-dir), or set cdi: false on a node "
                "whose runtime has no CDI support",
            ) from None
    if not os.access(cdi_dir, os.W_OK | os.X_OK):
        raise ConfigError(
            f"cdi: true, but the CDI spec directory {cdi_dir} is not writable",
            hint="mount the host's /var/run/cdi read-write into the plugin, or set cdi: false",
        )


ConfigLoader = Callable[[], PluginConfig]


class Daemon:
    """The whole node-side process: config → backends → manager, supervised until ``stop_requested``."""

    def __init__(
        self,
        load: ConfigLoader,
        socket_dir: Path,
        *,
        root: Path = Path("/"),
        metrics_port: int | None = None,
        metrics_addr: str = "127.0.0.1",
        cdi_dir: Path = DEFAULT_SPEC_DIR,
        server_factory: ServerFactory = PluginServer,
        registrar: Registrar = register_with_kubelet,
        pod_resources_socket: Path | None = None,
    ) -> None:
        self._load = load
        self.socket_dir = socket_dir
        self.root = root
        self.cdi_dir = cdi_dir
        self.metrics = Metrics(enabled=metrics_port is not None)
        self.metrics_port = metrics_port
        self._metrics_addr = metrics_addr
        self.manager = Manager(socket_dir, server_factory=server_factory, registrar=registrar, metrics=self.metrics)
        if pod_resources_socket is not None:  # read per scrape, only with --metrics-port
            self.metrics.watch_allocations(pod_resources_socket, self.manager.entries.keys)
        self.stop_requested = asyncio.Event()
        self.reload_requested = asyncio.Event()
        self.started = threading.Event()  # servers are listening (set from the loop thread)
        self.reloads = 0  # completed reloads (tests wait on this)
        self._wake = asyncio.Event()
        self._dirs = LoopDirWatch(self._wake)

    # -- building --------------------------------------------------------------------------------

    def _plugins(self, config: PluginConfig, only: list[ResourceConfig] | None = None) -> list[
        tuple[ResourceConfig, ResourcePlugin]
    ]:
        """Everything a config needs, built before anything running is touched (closed on failure)."""
        for resource in config.resources:
            check_socket_path(self.socket_dir, resource.name)
        if any(r.cdi for r in config.resources if only is None or r in only):
            check_cdi_dir(self.cdi_dir)
        pairs = build_resources(config, root=self.root, only=only)
        plugins: list[tuple[ResourceConfig, ResourcePlugin]] = []
        try:
            for resource, backend in pairs:
                try:
                    plugin = ResourcePlugin(backend, cdi=resource.cdi, metrics=self.metrics, cdi_dir=self.cdi_dir)
                except CdiError as exc:
                    raise ConfigError(f"{resource.name}: {exc}", hint="check --cdi-dir and the resource name") from None
                plugins.append((resource, plugin))
        except BaseException:
            for _, plugin in plugins:
                plugin.close()
            for _, backend in pairs[len(plugins):]:
                backend.close()
            raise
        return plugins

    async def _install(self, plugins: list[tuple[ResourceConfig, ResourcePlugin]]) -> None:
        for i, (resource, plugin) in enumerate(plugins):
            try:
                await self.manager.add(plugin, resource)
            except BaseException:
                for _, rest in plugins[i + 1:]:
                    rest.close()
                raise

    async def _reload(self) -> None:
        """Apply a new config: unchanged resources keep serving (their streams stay open); added,
        removed and changed ones are started, stopped or restarted. If the new config or any of its
        new backends fails, the running resources keep serving untouched."""
        current = {name: e.config for name, e in self.manager.entries.items()}
        try:
            config = self._load()
            wanted = {r.name: r for r in config.resources}
            changed = [r for r in config.resources if current.get(r.name) != r]
            plugins = self._plugins(config, only=changed)
        except KubeaccelError as exc:
            log.error("config reload failed, keeping the running config: %s", exc.message)
            return
        except Exception as exc:
            log.error("config reload failed, keeping the running config: %s", str(exc)[:500])
            return
        stale = [n for n in current if n not in wanted or current[n] != wanted[n]]
        for name in stale:
            await self.manager.remove(name)
        try:
            await self._install(plugins)
        except KubeaccelError as exc:
            log.error("config reload: %s", exc.message)
        self.reloads += 1
        log.info(
            "config reloaded: %d unchanged, %d started, %d stopped",
            len(current) - len(stale), len(plugins), len(stale),
        )

    # -- supervision ----------------------------------------------------------------------------

    def _open_watch(self, loop: asyncio.AbstractEventLoop) -> bool:
        return self._dirs.open(loop, [self.socket_dir], None, _DIR_EVENTS)

    async def _sleep(self, timeout: float) -> None:
        """Until stop, reload, a directory event, a finished registration or ``timeout``."""
        if self.stop_requested.is_set() or self.reload_requested.is_set() or self._wake.is_set():
            return
        waits = [asyncio.ensure_future(e.wait())
                 for e in (self.stop_requested, self.reload_requested, self._wake, self.manager.changed)]
        try:
            await asyncio.wait(waits, timeout=max(timeout, 0), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()

    async def _wait_for_dir(self, loop: asyncio.AbstractEventLoop) -> None:
        """The socket directory vanished: one log line, backoff until it is back (or stop)."""
        log.warning("socket directory %s disappeared; waiting for it to come back", self.socket_dir)
        backoff = BACKOFF_MIN_S
        while not self.stop_requested.is_set():
            if self.socket_dir.is_dir() and self._open_watch(loop):
                log.info("socket directory %s is back; serving again", self.socket_dir)
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop_requested.wait(), backoff)
            backoff = min(backoff * 2, BACKOFF_MAX_S)

    async def run(self, *, handle_signals: bool = False) -> None:
        loop = asyncio.get_running_loop()
        if handle_signals:  # before anything that can take time or receive a signal
            loop.add_signal_handler(signal.SIGTERM, self.stop_requested.set)
            loop.add_signal_handler(signal.SIGINT, self.stop_requested.set)
            loop.add_signal_handler(signal.SIGHUP, self.reload_requested.set)
        try:
            check_socket_dir(self.socket_dir)
            config = self._load()
            plugins = self._plugins(config)
            try:
                if self.metrics_port is not None:
                    self.metrics_port = await self.metrics.serve(self.metrics_port, self._metrics_addr)
            except BaseException:
                for _, plugin in plugins:
                    plugin.close()
                raise
            await self._install(plugins)
            self._open_watch(loop)
            self.started.set()
            due = 0.0
            while not self.stop_requested.is_set():
                if self.reload_requested.is_set():
                    self.reload_requested.clear()
                    await self._reload()
                if self._dirs.lost:
                    self._dirs.close()
                    await self._wait_for_dir(loop)
                    continue
                self._wake.clear()
                due = await self.manager.tick()
                await self._sleep(min(due - time.monotonic(), SAFETY_TICK_S))
        finally:
            self._dirs.close()
            await self.manager.close()
            await self.metrics.close()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                    loop.remove_signal_handler(sig)


class BackgroundDaemon(InThread[Daemon]):
    """Runs a ``Daemon`` on its own event loop in a thread: for tests, benchmarks and the demo.

    ``stop()`` ends it cleanly and re-raises whatever the daemon raised, so a failure inside the
    daemon fails the test that started it.
    """

    def __init__(self, daemon: Daemon) -> None:
        super().__init__(daemon, what="the plugin daemon", thread="kubeaccel-plugin", timeout=10.0)
