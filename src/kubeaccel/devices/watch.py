"""Event-driven change notification: inotify on a directory, with a wake-up for shutdown.

Both the daemon (its socket directory: a kubelet restart deletes our sockets and re-creates
``kubelet.sock``) and file-driven backends (the simulated state file, ``/dev`` for device nodes)
wait on the kernel instead of polling, so an idle daemon costs nothing between events.

inotify comes from ``inotify_simple`` (a thin ctypes wrapper: +1.2 MiB RSS and ~25 ms import on
top of grpc, no threads; ``asyncinotify`` cost +1.8 MiB and pulls its own event loop integration
we do not need; see docs/plugin.md for the measurements). The file descriptor is select()able,
so a thread waits on it with a timeout and the event loop can ``add_reader`` it.

Names are matched against the events of one directory: a file is watched through its parent so
an atomic replace (write a temp file, rename over) and an in-place rewrite are both seen, and the
file may be absent at first. ``CLOSE_WRITE`` rather than ``MODIFY`` marks an in-place write as
done, so a reader never acts on a half-written file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import threading
import time
from collections.abc import Collection, Sequence
from pathlib import Path

from inotify_simple import INotify, flags  # type: ignore[import-untyped]

__all__ = ["FILE_EVENTS", "DirWatch", "FileWatcher", "flags"]

# What changes a file we read: written and closed, replaced by rename, created, removed.
FILE_EVENTS = flags.CLOSE_WRITE | flags.MOVED_TO | flags.MOVED_FROM | flags.CREATE | flags.DELETE | flags.ATTRIB
# The watched directory itself went away (or was replaced): the watch is dead.
_GONE = flags.DELETE_SELF | flags.MOVE_SELF | flags.IGNORED | flags.UNMOUNT


class DirWatch:
    """inotify on one directory (or several), reporting events for ``names`` (every entry when None).

    ``wait(timeout)`` blocks until a relevant event, ``close()`` or the timeout; ``drain()`` is the
    non-blocking variant for an event loop reader. ``OSError`` from the constructor when the
    directory does not exist or inotify is unavailable (the caller falls back to polling).
    """

    def __init__(
        self, directory: Path | Sequence[Path], names: Collection[str] | None = None, mask: int = FILE_EVENTS
    ) -> None:
        directories = [directory] if isinstance(directory, Path) else list(directory)
        self.directory = directories[0]
        self._names = None if names is None else frozenset(names)
        self._inotify = INotify(nonblocking=True)
        try:
            for d in directories:
                self._inotify.add_watch(str(d), int(mask | _GONE) | flags.ONLYDIR)
            self._wake = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        except BaseException:
            self._inotify.close()
            raise
        self._lock = threading.Lock()
        self._waiting = False
        self.gone = False
        self.closed = False

    def fileno(self) -> int:
        return int(self._inotify.fileno())

    def drain(self) -> bool:
        """Consume pending events; True when one concerns a watched name (or the directory died)."""
        hit = False
        while True:
            try:
                events = self._inotify.read(timeout=0)
            except (BlockingIOError, ValueError, OSError):  # ValueError: read on a closed fd
                return hit
            if not events:
                return hit
            for event in events:
                if event.mask & _GONE:
                    self.gone = True
                    hit = True
                elif self._names is None or event.name in self._names:
                    hit = True

    def wait(self, timeout: float) -> bool:
        """Block until a relevant event (True), ``close()`` or ``timeout`` seconds (False)."""
        with self._lock:
            if self.closed:
                return False
            self._waiting = True
        try:
            if self.drain():
                return True
            with contextlib.suppress(InterruptedError):
                ready, _, _ = select.select([self._inotify.fileno(), self._wake], [], [], max(timeout, 0))
                if self._inotify.fileno() in ready and not self.closed:
                    return self.drain()
            return False
        finally:
            with self._lock:
                self._waiting = False
                if self.closed:
                    self._release()

    def close(self) -> None:
        """Stop watching and wake a thread blocked in ``wait`` (which then frees the descriptors).

        Idempotent and safe from any thread: descriptors are never closed under a waiting select.
        """
        with self._lock:
            if self.closed:
                return
            self.closed = True
            if self._waiting:
                with contextlib.suppress(OSError):
                    os.eventfd_write(self._wake, 1)
            else:
                self._release()

    def _release(self) -> None:
        if not self._inotify.closed:
            self._inotify.close()
            with contextlib.suppress(OSError):
                os.close(self._wake)


class FileWatcher:
    """Waits for changes to one file through inotify on its directory.

    While the directory does not exist (or inotify is unavailable) it checks every
    ``fallback_interval`` seconds and switches to inotify as soon as it can; the switch itself
    counts as a change, since the file may have appeared with it.
    """

    def __init__(self, path: Path, fallback_interval: float = 1.0) -> None:
        self.path = path
        self._fallback_interval = fallback_interval
        self._closed = threading.Event()
        self._watch: DirWatch | None = self._open()

    def _open(self) -> DirWatch | None:
        try:
            return DirWatch(self.path.parent, {self.path.name})
        except OSError:
            return None

    @property
    def event_driven(self) -> bool:
        return self._watch is not None and not self._watch.gone

    def wait(self, timeout: float) -> bool:
        """True on a change to the file, False after ``timeout`` seconds or on ``close()``."""
        deadline = time.monotonic() + timeout
        while not self._closed.is_set():
            watch = self._watch
            if watch is not None and not watch.gone:
                return watch.wait(max(deadline - time.monotonic(), 0)) and not self._closed.is_set()
            if watch is not None:
                watch.close()
            self._watch = self._open()
            if self._closed.is_set():
                if self._watch is not None:
                    self._watch.close()
                return False
            if self._watch is not None:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._closed.wait(min(self._fallback_interval, remaining))
        return False

    def close(self) -> None:
        self._closed.set()
        if self._watch is not None:
            self._watch.close()


class LoopDirWatch:
    """A ``DirWatch`` read by an asyncio loop: a relevant event sets ``wake``.

    The supervision of both node-side daemons: they sleep on ``wake`` (with a long safety timeout)
    instead of polling their sockets, and reopen the watch when ``lost`` (a watched directory went
    away, or inotify is unavailable and they fall back to the timeout).
    """

    def __init__(self, wake: asyncio.Event) -> None:
        self.wake = wake
        self._watch: DirWatch | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def lost(self) -> bool:
        return self._watch is None or self._watch.gone

    def open(self, loop: asyncio.AbstractEventLoop, directories: Sequence[Path], names: Collection[str] | None,
             mask: int) -> bool:
        """Start watching (closing any earlier watch); False when inotify cannot watch them."""
        self.close()
        try:
            watch = DirWatch(directories, names, mask)
        except OSError:
            return False
        loop.add_reader(watch.fileno(), self._on_event)
        self._watch, self._loop = watch, loop
        return True

    def close(self) -> None:
        if self._watch is not None:
            if self._loop is not None:
                with contextlib.suppress(Exception):  # the loop may be closing already
                    self._loop.remove_reader(self._watch.fileno())
            self._watch.close()
            self._watch = self._loop = None

    def _on_event(self) -> None:
        if self._watch is not None and self._watch.drain():
            self.wake.set()
