"""The node's devices, live: one watch thread per backend, one version number for every change.

Readers take ``pools`` (an immutable mapping replaced as a whole) without locks; coroutines that
publish slices or stream health wait on ``changed(since)`` and wake on the next version.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Mapping, Sequence

from kubeaccel.devices.model import Backend, Devices
from kubeaccel.dra.model import Pool, pools

log = logging.getLogger(__name__)

# Backends wake their watch on a change (inotify, NVML events, their own sysfs poll); the rescan
# after this long without one is only a safety net, as in the device plugin (an idle node: no work).
RESCAN_INTERVAL_S = 30.0
RETRY_INTERVAL_S = 1.0


class Inventory:
    def __init__(self, node: str, backends: Sequence[Backend]) -> None:
        self.node = node
        self.backends: dict[str, Backend] = {b.resource_name: b for b in backends}
        self._snapshots: dict[str, Devices] = {name: b.scan() for name, b in self.backends.items()}
        self.pools: Mapping[str, Pool] = pools(node, self._snapshots.items())
        self.version = 1
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event = asyncio.Event()

    def start(self) -> None:
        """Start watching (call from the event loop that awaits ``changed``)."""
        self._loop = asyncio.get_running_loop()
        for name, backend in self.backends.items():
            thread = threading.Thread(target=self._watch, args=(name, backend), name=f"dra watch {name}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def _watch(self, name: str, backend: Backend) -> None:
        while not self._stop.is_set():
            try:
                backend.wait_for_change(RESCAN_INTERVAL_S)
                if self._stop.is_set():
                    return
                self.rescan(name)
            except Exception:  # a flaky backend must not end the watch
                log.exception("%s: rescan failed", name)
                self._stop.wait(RETRY_INTERVAL_S)

    def rescan(self, name: str) -> bool:
        """Scan one backend now; True (and a new version) when its devices changed."""
        found = self.backends[name].scan()
        with self._lock:
            if found == self._snapshots[name]:
                return False
            self._snapshots[name] = found
            self.pools = pools(self.node, self._snapshots.items())
            self.version += 1
            log.info("%s: devices changed (%d, %d healthy)", name, len(found), len(found.healthy()))
        if self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._wake)
        return True

    def _wake(self) -> None:
        self._event.set()
        self._event = asyncio.Event()

    async def changed(self, since: int, timeout: float | None = None) -> int:
        """Wait until the version passes ``since`` (or ``timeout``); returns the current version."""
        while self.version <= since:
            event = self._event
            try:
                await asyncio.wait_for(event.wait(), timeout)
            except TimeoutError:
                break
        return self.version

    def close(self) -> None:
        self._stop.set()
        for backend in self.backends.values():
            backend.close()
        for thread in self._threads:
            thread.join(RETRY_INTERVAL_S * 2)
