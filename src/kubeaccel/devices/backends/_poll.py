"""Change detection by polling a cheap fingerprint of the files a backend reads.

sysfs attributes can be ``poll()``ed for ``sysfs_notify`` only on a real sysfs; on the fake trees
the tests build (and on filesystems without notify) a plain file is always "ready", so polling
``poll()`` would spin. Re-reading a few small files every ``interval`` seconds costs microseconds
and behaves the same on both.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from pathlib import Path


class ChangePoller:
    """``wait(timeout)`` returns True as soon as ``fingerprint()`` differs from the last one seen."""

    def __init__(self, fingerprint: Callable[[], Hashable], interval: float) -> None:
        self._fingerprint = fingerprint
        self._interval = interval
        self._closed = threading.Event()
        self._seen = fingerprint()

    def wait(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._closed.is_set():
            current = self._fingerprint()
            if current != self._seen:
                self._seen = current
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self._closed.wait(min(self._interval, remaining))
        return False

    def changed(self) -> bool:
        """Check once, without waiting: True when the fingerprint moved since last seen."""
        current = self._fingerprint()
        if current != self._seen:
            self._seen = current
            return True
        return False

    def close(self) -> None:
        self._closed.set()


def under_root(root: Path, path: str | Path) -> Path:
    """``/dev/ve0`` under ``root`` (``/`` on a real node, a temp dir in tests)."""
    return root / Path(path).relative_to("/") if Path(path).is_absolute() else root / path


def read_int(path: Path) -> int | None:
    """A sysfs attribute as an integer (ASCII with a trailing newline); None when unreadable."""
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
