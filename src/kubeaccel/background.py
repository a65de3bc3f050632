"""A node-side daemon on its own event loop in a thread: how tests, benchmarks and the demo run the
device-plugin daemon and the DRA daemon in-process.

``start()`` returns once the daemon serves (its ``started`` is set) and ``stop()`` ends it cleanly
through its ``stop_requested``; whatever the daemon raised is raised again by either, so a failure
inside the daemon fails the test that started it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Awaitable, Callable
from typing import Generic, Protocol, Self, TypeVar

from kubeaccel.errors import UnavailableError


class Supervised(Protocol):
    """What both daemons offer: ``run`` until ``stop_requested``, ``started`` once serving."""

    started: threading.Event
    stop_requested: asyncio.Event

    def run(self) -> Awaitable[None]: ...


D = TypeVar("D", bound=Supervised)


class InThread(Generic[D]):
    """Runs ``daemon`` on a new loop in a daemon thread named ``thread``; ``what`` names it in errors,
    ``timeout`` is how long ``start`` and ``stop`` wait by default."""

    def __init__(self, daemon: D, *, what: str, thread: str, timeout: float) -> None:
        self.daemon = daemon
        self.loop: asyncio.AbstractEventLoop | None = None
        self._what = what
        self._timeout = timeout
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, name=thread, daemon=True)

    def _main(self) -> None:
        loop = asyncio.new_event_loop()
        self.loop = loop
        try:
            loop.run_until_complete(self._run())
        except BaseException as exc:
            self._error = exc
        finally:
            self.daemon.started.set()  # never leave start() waiting on a daemon that died
            loop.close()

    async def _run(self) -> None:
        await self.daemon.run()

    def start(self, timeout: float | None = None) -> Self:
        self._thread.start()
        if not self.daemon.started.wait(self._timeout if timeout is None else timeout):
            raise UnavailableError(f"{self._what} did not start in time")
        if self._error is not None:
            self._thread.join()
            raise self._error
        return self

    def call(self, fn: Callable[[], object]) -> None:
        """Run ``fn`` on the daemon's loop (e.g. ``daemon.reload_requested.set``)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(fn)

    def stop(self, timeout: float | None = None) -> None:
        if self.loop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: the daemon ended by itself
                self.loop.call_soon_threadsafe(self.daemon.stop_requested.set)
        self._thread.join(self._timeout if timeout is None else timeout)
        if self._thread.is_alive():
            raise UnavailableError(f"{self._what} did not stop in time")
        if self._error is not None:
            raise self._error

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
