"""The DRA daemon: config → backends → inventory; the registration and DRA sockets; the slice publisher.

Ownership first: the state directory's lock (``kubeaccel.dra.ownership``) is taken before anything
else is touched, so a second driver for the same directories exits 1 naming the holder and changes
nothing. Then the kubelet's contract: the checkpoint is loaded and the CDI specs restored, the DRA
endpoint listens, and only then the registration socket appears (the kubelet dials the endpoint as
soon as it has read ``GetInfo``). A socket path is only taken when nothing serves there.

Supervision is event-driven, as in the device plugin: inotify on the registry directory and the
endpoint's directory wakes the supervisor when either socket is deleted or replaced (a kubelet
restart that cleared the directory, an operator), and it serves again there so the kubelet's
watcher re-registers the driver. Between events it sleeps (a safety-net pass every
``SAFETY_TICK_S``; a backoff while a directory is gone or a socket cannot be re-created). The API
server may be down at start or later: the publisher retries with backoff and prepared claims keep
being served from the checkpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from kubeaccel.background import InThread
from kubeaccel.devices.cdi import DEFAULT_SPEC_DIR
from kubeaccel.devices.config import PluginConfig, build_backends
from kubeaccel.devices.watch import LoopDirWatch, flags
from kubeaccel.dra._generated import dra_v1_pb2_grpc, dra_v1beta1_pb2_grpc, health_v1_pb2_grpc
from kubeaccel.dra._generated import pluginregistration_pb2_grpc as reg_grpc
from kubeaccel.dra.checkpoint import Checkpoint
from kubeaccel.dra.inventory import Inventory
from kubeaccel.dra.metrics import Metrics
from kubeaccel.dra.model import DEFAULT_DRIVER, check_driver_name, device_class
from kubeaccel.dra.ownership import StateLock, claim_socket
from kubeaccel.dra.publisher import Publisher, SliceApi
from kubeaccel.dra.registration import (
    DEFAULT_PLUGINS_DIR,
    DEFAULT_REGISTRY_DIR,
    RegistrationService,
    registration_socket_name,
)
from kubeaccel.dra.service import DRAServiceV1, DRAServiceV1beta1, Driver, HealthService
from kubeaccel.errors import ConfigError, KubeaccelError
from kubeaccel.paths import file_identity

log = logging.getLogger(__name__)

SAFETY_TICK_S = 30.0  # a pass even without an event: a missed event cannot wedge the daemon
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 5.0
PUBLISH_STOP_WAIT_S = 0.5  # how long a stop waits for a ResourceSlice write under way
CLAIMS_STOP_WAIT_S = 0.3  # claims under way when the servers stop get this long to finish
DEFAULT_STATE_DIR = Path("/var/lib/kubeaccel/dra")
# What a kubelet restart (or an operator) does to our sockets: removed, created, renamed over.
_DIR_EVENTS = flags.CREATE | flags.DELETE | flags.MOVED_FROM | flags.MOVED_TO


@dataclass(frozen=True)
class Options:
    node: str
    driver: str = DEFAULT_DRIVER
    registry_dir: Path = DEFAULT_REGISTRY_DIR
    plugins_dir: Path = DEFAULT_PLUGINS_DIR
    state_dir: Path = DEFAULT_STATE_DIR
    cdi_dir: Path = DEFAULT_SPEC_DIR
    root: Path = Path("/")
    publish: bool = True  # ResourceSlices (off: a checker-only run without an API server)
    device_classes: bool = False  # apply a DeviceClass per resource (cluster-scoped: usually the installer's job)
    withdraw: bool = False  # delete our slices on a clean stop (the node leaves DRA for good)
    metrics_port: int | None = None
    metrics_addr: str = "0.0.0.0"

    @property
    def endpoint(self) -> Path:
        return self.plugins_dir / self.driver / "dra.sock"

    @property
    def registration_socket(self) -> Path:
        return self.registry_dir / registration_socket_name(self.driver)


class SocketServer:
    """One gRPC server on one unix socket; ``intact`` is False once the socket file was deleted or replaced.

    ``start`` takes the path only when nothing serves there (``claim_socket``): a stale socket is
    removed, a live one or anything that is not a socket is a ``ConfigError``.
    """

    def __init__(self, path: Path, install: Callable[[grpc.aio.Server], None]) -> None:
        self.path = path
        self._install = install
        self._server: grpc.aio.Server | None = None
        self._identity: tuple[int, int] | None = None

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        claim_socket(self.path)
        server = grpc.aio.server()
        self._install(server)
        try:
            server.add_insecure_port(f"unix://{self.path}")
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {self.path}: {exc}", hint="check the kubelet's directories") \
                from None
        await server.start()
        self._server = server
        self._identity = file_identity(self.path)

    def intact(self) -> bool:
        return self._identity is not None and file_identity(self.path) == self._identity

    async def stop(self, grace: float | None = 0) -> None:
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None
        if self._identity is not None and file_identity(self.path) == self._identity:
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
        self._identity = None


ClaimReaderFactory = Callable[[], Callable[[str, str], Awaitable[Mapping[str, Any]]]]


class KubeAccess:
    """The API server through ``kube.dra``, connected on first use (a daemon starts without one)."""

    def __init__(self, kubeconfig: Path | None = None) -> None:
        self._kubeconfig = kubeconfig
        self._kube: Any = None
        self._lock = threading.Lock()

    def kube(self) -> Any:
        with self._lock:
            if self._kube is None:
                from kubeaccel.kube.dra import connect

                self._kube = connect(self._kubeconfig)
            return self._kube

    async def read_claim(self, namespace: str, name: str) -> Mapping[str, Any]:
        from kubeaccel.kube.dra import get_claim

        return await asyncio.to_thread(lambda: get_claim(self.kube(), namespace, name))

    def slice_api(self, driver: str, node: str) -> SliceApi:
        from kubeaccel.kube import dra as kdra

        return SliceApi(
            lambda: kdra.list_slices(self.kube(), driver=driver, node=node),
            lambda manifest: kdra.apply_slice(self.kube(), manifest),
            lambda name: kdra.delete_slice(self.kube(), name),
        )

    def apply_device_class(self, manifest: Mapping[str, Any]) -> None:
        from kubeaccel.kube.dra import apply_device_class

        apply_device_class(self.kube(), manifest)

    def close(self) -> None:
        """Close the client; a later use (a daemon started again with this access) connects anew."""
        with self._lock:
            if self._kube is not None:
                self._kube.close()
                self._kube = None


def check_dirs(options: Options) -> None:
    """A clear error up front for a kubelet directory we cannot use."""
    for what, option, path, default in (
        ("plugin registry", "--registry-dir", options.registry_dir, DEFAULT_REGISTRY_DIR),
        ("plugins", "--plugins-dir", options.plugins_dir, DEFAULT_PLUGINS_DIR),
    ):
        if not path.is_dir():
            raise ConfigError(f"the kubelet's {what} directory {path} does not exist",
                              hint=f"pass {option} with the kubelet's directory (default {default}), or create it")
        if not os.access(path, os.W_OK | os.X_OK):
            raise ConfigError(f"the {what} directory {path} is not writable",
                              hint="run the daemon as root (the DaemonSet does)")


@dataclass
class DraDaemon:
    """The whole DRA node process, supervised until ``stop_requested``."""

    load: Callable[[], PluginConfig]
    options: Options
    access: KubeAccess = field(default_factory=KubeAccess)
    stop_requested: asyncio.Event = field(default_factory=asyncio.Event)
    started: threading.Event = field(default_factory=threading.Event)
    inventory: Inventory | None = None
    driver: Driver | None = None
    registration: RegistrationService | None = None
    publisher: Publisher | None = None
    servers: list[SocketServer] = field(default_factory=list)
    restarts: int = 0
    passes: int = 0  # supervision passes (idle: one per SAFETY_TICK_S)
    metrics: Metrics = field(default_factory=Metrics)
    metrics_port: int | None = None  # the bound port once serving
    _wake: asyncio.Event = field(default_factory=asyncio.Event)
    _dirs: LoopDirWatch = field(init=False)
    _blocked: set[Path] = field(default_factory=set)  # socket paths someone else serves on (warned once)

    def __post_init__(self) -> None:
        self._dirs = LoopDirWatch(self._wake)

    async def run(self, *, handle_signals: bool = False) -> None:
        options = self.options
        loop = asyncio.get_running_loop()
        if handle_signals:  # first: a SIGTERM during start ends it cleanly
            loop.add_signal_handler(signal.SIGTERM, self.stop_requested.set)
            loop.add_signal_handler(signal.SIGINT, self.stop_requested.set)
        try:
            check_driver_name(options.driver)
            lock = StateLock.acquire(options.state_dir, options.driver)  # before any file or socket is touched
            try:
                check_dirs(options)
                config = self.load()
                checkpoint = Checkpoint.load(options.state_dir)
                try:
                    await self._serve(config, checkpoint)
                finally:
                    await checkpoint.drain()
                    checkpoint.close()
            finally:
                lock.release()
        finally:
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)

    async def _serve(self, config: PluginConfig, checkpoint: Checkpoint) -> None:
        """Start in order (devices, metrics, sockets, the driver and its servers, publishing), serve until
        stopped, then stop in reverse."""
        options = self.options
        loop = asyncio.get_running_loop()
        inventory = self.inventory = Inventory(options.node, build_backends(config, root=options.root))
        tasks: list[asyncio.Task[None]] = []
        publish_task: asyncio.Task[None] | None = None
        try:
            inventory.start()
            if options.metrics_port is not None:
                self.metrics_port = self.metrics.serve(options.metrics_port, options.metrics_addr)
            for path in (options.endpoint, options.registration_socket):
                claim_socket(path)  # before restore touches the CDI dir: a live driver there is not ours to disturb
            await self._start_servers(inventory, checkpoint)
            publish_task = await self._start_publishing(config, inventory)
            tasks.append(asyncio.create_task(self._follow_inventory(inventory)))
            self._open_watch(loop)
            self.started.set()
            log.info("DRA driver %s serving %s on node %s (endpoint %s)", options.driver,
                     ", ".join(r.name for r in config.resources), options.node, options.endpoint)
            await self._supervise_until_stopped(loop)
        finally:
            await self._stop(inventory, tasks, publish_task)

    async def _start_servers(self, inventory: Inventory, checkpoint: Checkpoint) -> None:
        """The driver (its claims restored from the checkpoint), then the DRA endpoint and the registration socket."""
        options = self.options
        driver = self.driver = Driver(options.driver, inventory, checkpoint, options.cdi_dir,
                                      self.access.read_claim, metrics=self.metrics)
        driver.restore()
        registration = self.registration = RegistrationService(options.driver, options.endpoint)

        def install_dra(server: grpc.aio.Server) -> None:
            dra_v1_pb2_grpc.add_DRAPluginServicer_to_server(DRAServiceV1(driver), server)
            dra_v1beta1_pb2_grpc.add_DRAPluginServicer_to_server(DRAServiceV1beta1(driver), server)
            health_v1_pb2_grpc.add_DRAResourceHealthServicer_to_server(HealthService(inventory), server)

        def install_registration(server: grpc.aio.Server) -> None:
            reg_grpc.add_RegistrationServicer_to_server(registration, server)

        self.servers = [SocketServer(options.endpoint, install_dra),
                        SocketServer(options.registration_socket, install_registration)]
        for server in self.servers:  # the endpoint first: the kubelet dials it right after GetInfo
            await server.start()

    async def _start_publishing(self, config: PluginConfig, inventory: Inventory) -> asyncio.Task[None] | None:
        """DeviceClasses (when asked) and the ResourceSlice publisher; None with publishing off."""
        options = self.options
        if not options.publish:
            return None
        if options.device_classes:
            await self._apply_device_classes(config)
        self.publisher = Publisher(options.driver, inventory, self.access.slice_api(options.driver, options.node),
                                   self.metrics)
        return asyncio.create_task(self.publisher.run(self.stop_requested))

    async def _stop(
        self, inventory: Inventory, tasks: list[asyncio.Task[None]], publish_task: asyncio.Task[None] | None
    ) -> None:
        """Servers first (no new calls), then claims in flight, publishing, devices, the API and metrics."""
        self.stop_requested.set()
        self._dirs.close()
        for task in tasks:
            task.cancel()
        for server in reversed(self.servers):
            await server.stop(0)
        if self.driver is not None:
            await self.driver.drain(CLAIMS_STOP_WAIT_S)
        if publish_task is not None:
            await self._end_publishing(publish_task)
        inventory.close()
        self.access.close()
        self.metrics.close()

    async def _end_publishing(self, task: asyncio.Task[None]) -> None:
        """The publisher sees ``stop_requested``; a write under way gets a moment, then is left to its
        thread (its result no longer matters). ``--withdraw`` deletes the slices last."""
        done, _ = await asyncio.wait({task}, timeout=PUBLISH_STOP_WAIT_S)
        if not done:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.options.withdraw and self.publisher is not None:
            try:
                await asyncio.to_thread(self.publisher.withdraw)
            except KubeaccelError as exc:
                log.warning("could not delete the ResourceSlices: %s", exc.message)

    async def _follow_inventory(self, inventory: Inventory) -> None:
        version = 0
        while True:
            self.metrics.set_pools(inventory.pools)
            version = await inventory.changed(version)

    async def _apply_device_classes(self, config: PluginConfig) -> None:
        for resource in config.resources:
            manifest = device_class(self.options.driver, resource.name)
            try:
                await asyncio.to_thread(self.access.apply_device_class, manifest)
            except KubeaccelError as exc:
                log.warning("cannot apply DeviceClass %s: %s", manifest["metadata"]["name"], exc.message)

    # -- supervision --------------------------------------------------------------------------------

    def _open_watch(self, loop: asyncio.AbstractEventLoop) -> bool:
        names = {s.path.name for s in self.servers}
        dirs = list(dict.fromkeys(s.path.parent for s in self.servers))
        return self._dirs.open(loop, dirs, names, _DIR_EVENTS)

    async def _supervise_until_stopped(self, loop: asyncio.AbstractEventLoop) -> None:
        backoff = BACKOFF_MIN_S
        while not self.stop_requested.is_set():
            self._wake.clear()
            healthy = await self._supervise()
            if self._dirs.lost:  # a directory went away (or inotify is unavailable)
                healthy = self._open_watch(loop) and healthy
            if healthy:
                backoff, timeout = BACKOFF_MIN_S, SAFETY_TICK_S
            else:
                timeout, backoff = backoff, min(backoff * 2, BACKOFF_MAX_S)
            waits = [asyncio.ensure_future(e.wait()) for e in (self.stop_requested, self._wake)]
            try:
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()

    async def _supervise(self) -> bool:
        """One pass: serve again on every socket that was deleted or replaced; True when all are ours."""
        self.passes += 1
        healthy = True
        for server in self.servers:
            if server.intact():
                continue
            if server.path not in self._blocked:
                log.info("socket %s was removed: serving it again", server.path)
            try:
                await server.stop(0)
                await server.start()
                self.restarts += 1
                self._blocked.discard(server.path)
            except ConfigError as exc:  # someone else serves there now: never taken over
                if server.path not in self._blocked:
                    log.warning("%s; retrying", exc.message)
                    self._blocked.add(server.path)
                healthy = False
            except Exception as exc:  # the directory vanished: keep trying, never exit
                log.warning("cannot re-create %s: %s", server.path, exc)
                healthy = False
        return healthy


class BackgroundDraDaemon(InThread[DraDaemon]):
    """Runs a ``DraDaemon`` on its own loop in a thread (tests, benchmarks, the demo); errors re-raise on stop."""

    def __init__(self, daemon: DraDaemon) -> None:
        super().__init__(daemon, what="the DRA daemon", thread="kubeaccel-dra", timeout=15.0)

    async def _run(self) -> None:
        self.daemon.stop_requested = asyncio.Event()  # bound to this loop
        await self.daemon.run()
