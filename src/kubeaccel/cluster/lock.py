"""One ``up``/``down`` (or supervisor restart) at a time per state dir: an flock on ``<state dir>/.lock``.

Its own small module so the long-running supervisor imports nothing heavy (no PKI, YAML or pydantic).
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator

from kubeaccel.cluster.layout import Layout
from kubeaccel.errors import KubeaccelError

# The supervisor holds the lock only for the milliseconds a restart takes; a command waits that out.
LOCK_WAIT = 3.0


@contextlib.contextmanager
def locked(layout: Layout, wait: float = LOCK_WAIT) -> Iterator[None]:
    """One ``up``/``down`` (or supervisor restart) at a time per state dir."""
    with try_locked(layout, wait) as got:
        if not got:
            raise KubeaccelError(
                f"another kubeaccel cluster command is using {layout.root}",
                hint="wait for it to finish, or use another --state-dir",
            )
        yield


@contextlib.contextmanager
def try_locked(layout: Layout, wait: float = 0.0, create: bool = True) -> Iterator[bool]:
    """Take the state dir's lock within ``wait`` seconds; yields whether it was taken.

    ``create=False`` (the supervisor): a state dir that is gone stays gone (FileNotFoundError), never recreated.
    """
    if create:
        layout.root.mkdir(parents=True, exist_ok=True)
    with open(layout.lock_file, "a") as handle:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    yield False
                    return
                time.sleep(0.05)
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
