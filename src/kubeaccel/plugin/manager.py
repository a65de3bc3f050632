"""The manager: one ``ResourcePlugin`` and its gRPC server per resource, and their registration.

``Manager.tick`` is one reconcile pass: restart a server whose socket vanished, start a registration
with the kubelet where one is needed (one task per resource, with a timeout and a backoff from
``BACKOFF_MIN_S`` doubling to ``BACKOFF_MAX_S``), and say when the next backoff falls due. It never
waits for a registration. The server factory and the registrar are injected (the ``Server`` protocol,
``ServerFactory``, ``Registrar``), so the supervisor (``kubeaccel.plugin.daemon``) and this module are
testable without sockets; the defaults are the real gRPC ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from kubeaccel.devices.config import ResourceConfig
from kubeaccel.errors import KubeaccelError, UnavailableError
from kubeaccel.paths import file_identity
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin.metrics import Metrics
from kubeaccel.plugin.server import KUBELET_SOCKET, REGISTER_TIMEOUT_S, PluginServer, register
from kubeaccel.plugin.service import ResourcePlugin

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
STOP_GRACE_S = 0.3


class Server(Protocol):
    socket_path: Path

    async def start(self) -> None: ...

    def socket_intact(self) -> bool: ...

    async def stop(self, grace: float | None = None) -> None: ...


ServerFactory = Callable[[ResourcePlugin, Path], Server]
Registrar = Callable[[Path, str, str, pb.DevicePluginOptions], Awaitable[None]]


async def register_with_kubelet(kubelet: Path, endpoint: str, resource: str, options: pb.DevicePluginOptions) -> None:
    await register(kubelet, endpoint, resource, options)


@dataclass
class _Entry:
    """Supervisor state for one resource."""

    plugin: ResourcePlugin
    config: ResourceConfig | None = None
    server: Server | None = None
    registered_with: tuple[int, int] | None = None  # identity of the kubelet.sock we registered with
    attempted_with: tuple[int, int] | None = None
    next_attempt: float = 0.0
    backoff: float = BACKOFF_MIN_S
    warned: bool = False
    task: asyncio.Task[None] | None = None
    next_start: float = 0.0
    start_backoff: float = BACKOFF_MIN_S
    start_error: str | None = None
    restarts: int = 0


class Manager:
    """Owns one ``ResourcePlugin`` and its current server per resource; ``tick`` reconciles once."""

    def __init__(
        self,
        socket_dir: Path,
        *,
        server_factory: ServerFactory = PluginServer,
        registrar: Registrar = register_with_kubelet,
        metrics: Metrics | None = None,
    ) -> None:
        self.socket_dir = socket_dir
        self.kubelet_socket = socket_dir / KUBELET_SOCKET
        self.metrics = metrics or Metrics(enabled=False)
        self._factory = server_factory
        self._registrar = registrar
        self.entries: dict[str, _Entry] = {}
        self.registered = asyncio.Event()  # set whenever every resource is registered
        self.changed = asyncio.Event()  # a registration finished: the supervisor should look again

    async def add(self, plugin: ResourcePlugin, config: ResourceConfig | None = None) -> None:
        """Serve ``plugin``. A first start refused for a reason the user must fix (a live socket of
        another process, a directory at our socket name) raises; a transient one (the directory
        vanished under us) is left to supervision, which retries with backoff."""
        entry = _Entry(plugin, config)
        try:
            await self._restart(entry)
        except (OSError, RuntimeError) as exc:
            log.warning("%s: cannot start the server yet: %s", plugin.resource_name, str(exc)[:500])
            entry.server = None
            entry.start_error = str(exc)
        except BaseException:
            plugin.close()
            raise
        self.entries[plugin.resource_name] = entry
        plugin.start_watching()

    async def remove(self, name: str) -> None:
        entry = self.entries.pop(name)
        await self._stop_entry(entry)

    async def _stop_entry(self, entry: _Entry) -> None:
        self._cancel(entry)
        if entry.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(entry.server.stop(0), STOP_GRACE_S)
            entry.server = None
        entry.plugin.close()
        self.metrics.forget(entry.plugin.resource_name)

    @staticmethod
    def _cancel(entry: _Entry) -> None:
        if entry.task is not None:
            entry.task.cancel()
            entry.task = None

    async def _restart(self, entry: _Entry) -> None:
        self._cancel(entry)
        if entry.server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(entry.server.stop(0), STOP_GRACE_S)
            entry.server = None
            entry.restarts += 1
        server = self._factory(entry.plugin, self.socket_dir)
        await server.start()
        entry.server = server
        entry.registered_with = None
        entry.attempted_with = None
        entry.next_attempt = 0.0

    async def _register_once(self, entry: _Entry, kubelet: tuple[int, int]) -> None:
        assert entry.server is not None
        name = entry.plugin.resource_name
        try:
            await asyncio.wait_for(
                self._registrar(self.kubelet_socket, entry.server.socket_path.name, name, entry.plugin.options),
                REGISTER_TIMEOUT_S + 1,
            )
        except (UnavailableError, TimeoutError) as exc:
            self.metrics.registrations.labels(name, "error").inc()
            entry.next_attempt = time.monotonic() + entry.backoff
            entry.backoff = min(entry.backoff * 2, BACKOFF_MAX_S)
            if not entry.warned:
                reason = exc.message if isinstance(exc, UnavailableError) else "no answer in time"
                log.warning("%s: %s; retrying with backoff", name, reason)
                entry.warned = True
            return
        finally:
            entry.task = None
            self.changed.set()
        self.metrics.registrations.labels(name, "ok").inc()
        entry.registered_with = kubelet
        entry.backoff = BACKOFF_MIN_S
        entry.warned = False
        log.info("%s: registered with the kubelet as %s", name, entry.server.socket_path.name)

    async def _ensure_server(self, entry: _Entry, now: float) -> None:
        if entry.server is not None and entry.server.socket_intact():
            return
        if now < entry.next_start:
            return
        try:
            await self._restart(entry)
        except Exception as exc:  # e.g. another process took our socket name: keep trying, never exit
            entry.server = None
            entry.next_start = now + entry.start_backoff
            entry.start_backoff = min(entry.start_backoff * 2, BACKOFF_MAX_S)
            text = exc.message if isinstance(exc, KubeaccelError) else str(exc)
            if text != entry.start_error and self.socket_dir.is_dir():
                log.warning("%s: cannot start the server: %s", entry.plugin.resource_name, text[:500])
            entry.start_error = text
            return
        entry.start_backoff, entry.start_error = BACKOFF_MIN_S, None

    async def tick(self) -> float:
        """One reconcile pass: restart servers whose socket vanished, start registrations where needed.

        Never waits for a registration. Returns the monotonic time of the next backoff that falls
        due (``inf`` when nothing is pending), so the caller knows when to tick again.
        """
        self.changed.clear()
        now = time.monotonic()
        for entry in list(self.entries.values()):
            await self._ensure_server(entry, now)
        kubelet = file_identity(self.kubelet_socket)
        due_at = min((e.next_start for e in self.entries.values() if e.server is None), default=float("inf"))
        if kubelet is None:  # the kubelet is gone: whatever comes next must be registered with anew
            for entry in self.entries.values():
                entry.registered_with = None
            self._update_registered(kubelet)
            return due_at
        for entry in self.entries.values():
            if entry.server is None or entry.registered_with == kubelet:
                continue
            if entry.attempted_with != kubelet:  # a new kubelet: try at once, forget the backoff
                self._cancel(entry)
                entry.next_attempt, entry.backoff = 0.0, BACKOFF_MIN_S
            if entry.task is not None:
                continue
            if now >= entry.next_attempt:
                entry.attempted_with = kubelet
                entry.task = asyncio.create_task(self._register_once(entry, kubelet))
            else:
                due_at = min(due_at, entry.next_attempt)
        self._update_registered(kubelet)
        return due_at

    def _update_registered(self, kubelet: tuple[int, int] | None) -> None:
        if kubelet is not None and all(e.registered_with == kubelet for e in self.entries.values()):
            self.registered.set()
        else:
            self.registered.clear()

    async def settle(self) -> None:
        """Wait for the registrations in flight (tests), then reconcile the outcome."""
        tasks = [e.task for e in self.entries.values() if e.task is not None]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        self._update_registered(file_identity(self.kubelet_socket))

    async def close(self) -> None:
        entries = list(self.entries.values())
        self.entries.clear()
        for entry in entries:
            entry.plugin.stop_watching()  # wake every watch thread first, so no join waits
        for entry in entries:
            await self._stop_entry(entry)
