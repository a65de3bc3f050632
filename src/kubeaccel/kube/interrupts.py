"""Signals as exceptions, for operations that must finish or undo what they wrote (submit, tenant create).

    with guarded_signals():      # SIGINT / SIGTERM / SIGHUP now raise Interrupted (main thread only)
        ...writes...
        with signals_held():     # a rollback: signals are remembered, not raised
            ...undo...

`KUBEACCEL_TEST_SIGNAL_AFTER_WRITE=N:TERM` (test-only, not an interface for users) makes the process send
itself SIGTERM (or INT, HUP) right after its N-th write (`SignalAfterWrite.step_done`), so tests can
interrupt every step deterministically.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

GUARDED_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
TEST_SIGNAL_ENV = "KUBEACCEL_TEST_SIGNAL_AFTER_WRITE"


class Interrupted(BaseException):
    """A guarded signal arrived. BaseException, like KeyboardInterrupt, so `except Exception` in
    libraries between us and the signal cannot swallow it."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def exit_code_for(signum: int) -> int:
    """The shell's convention: 128 + the signal number (130 INT, 143 TERM, 129 HUP)."""
    return 128 + signum


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


class _SignalState:
    def __init__(self) -> None:
        self.holding = 0  # > 0: record signals instead of raising (rollback, lock release)
        self.pending: int | None = None

    def handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.pending is None:
            self.pending = signum
        if not self.holding:
            raise Interrupted(signum)


_state: _SignalState | None = None


@contextlib.contextmanager
def guarded_signals() -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP raise `Interrupted` inside; the previous handlers come back after.

    Only in the main thread (Python delivers signals there); elsewhere this does nothing.
    """
    global _state
    if threading.current_thread() is not threading.main_thread() or _state is not None:
        yield
        return
    _state = _SignalState()
    previous = {signum: signal.getsignal(signum) for signum in GUARDED_SIGNALS}
    try:
        for signum in GUARDED_SIGNALS:
            signal.signal(signum, _state.handle)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        _state = None


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Inside, a guarded signal is remembered (see `pending_signal`) but raises nothing: a rollback
    must not be cut short by the Ctrl-C that started it, or by a second one."""
    state = _state
    if state is None:
        yield
        return
    state.holding += 1
    try:
        yield
    finally:
        state.holding -= 1


def pending_signal() -> int | None:
    """The first guarded signal received inside `guarded_signals`, if any."""
    return _state.pending if _state is not None else None


def raise_if_signalled() -> None:
    """Raise `Interrupted` for a signal that arrived while held (call where stopping is safe)."""
    if _state is not None and _state.pending is not None and not _state.holding:
        raise Interrupted(_state.pending)


def _test_signal_plan() -> tuple[int, int] | None:
    raw = os.environ.get(TEST_SIGNAL_ENV)
    if not raw:
        return None
    step, _, name = raw.partition(":")
    return int(step), int(signal.Signals[f"SIG{name.upper().removeprefix('SIG')}"])


class SignalAfterWrite:
    """Counts writes; the test hook (see the module docstring) fires after the configured one."""

    def __init__(self) -> None:
        self.writes = 0
        self._plan = _test_signal_plan()

    def step_done(self) -> None:
        self.writes += 1
        if self._plan and self._plan[0] == self.writes:
            os.kill(os.getpid(), self._plan[1])
