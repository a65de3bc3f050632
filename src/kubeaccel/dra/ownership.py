"""One DRA driver per state directory: an exclusive lock held for the process's life, and sockets
replaced only when nobody serves on them.

The lock is ``flock`` on ``<state dir>/lock``: the kernel drops it when the process dies however it
dies (SIGKILL included), so a stale lock never blocks a restart, and two opens in one process
conflict too (the in-process tests run several daemons). The holder writes its PID into the file
after taking the lock, so a second start can name it. A second start only opens the file and asks
for the lock: it touches no socket, no checkpoint, no CDI spec.

``claim_socket`` is the device plugin's ownership probe (``kubeaccel.sockets``, shared by both
node-side daemons) for our two sockets: a socket with a live server behind it is never taken over,
a stale one is removed, anything else there is never deleted.
"""

from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from kubeaccel import sockets
from kubeaccel.errors import ConfigError, KubeaccelError

LOCK_NAME = "lock"
EXIT_ALREADY_RUNNING = 1


class AlreadyRunningError(KubeaccelError):
    """Another driver holds the state directory (exit 1: nothing is wrong with the input)."""

    exit_code = EXIT_ALREADY_RUNNING


def _state_dir_error(directory: Path, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot use the state directory {directory}: {exc.strerror or exc}",
        hint="pass --state-dir with a writable directory (the DaemonSet mounts a hostPath)",
    )


class StateLock:
    """The exclusive lock on a state directory; ``release`` (or process exit) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, directory: Path, driver: str) -> StateLock:
        """Take ``directory``'s lock or raise ``AlreadyRunningError`` naming the holder's PID."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _state_dir_error(directory, exc) from None
        path = directory / LOCK_NAME
        try:
            # No O_TRUNC: a second start must not wipe the holder's PID.
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise _state_dir_error(directory, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = _read_pid(fd)
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise _state_dir_error(directory, exc) from None
            who = f"PID {holder}" if holder else "a process that has not written its PID yet"
            raise AlreadyRunningError(
                f"another DRA driver ({who}) holds the state directory {directory}",
                hint=f"one {driver} driver per node: stop the other one first, or give this one its own --state-dir",
            ) from None
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError as exc:
            os.close(fd)
            raise _state_dir_error(directory, exc) from None
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # the lock goes with the descriptor; the file stays (its PID is stale, harmless)
            self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def claim_socket(path: Path) -> None:
    """Make ``path`` free for our server (``kubeaccel.sockets.claim``), or say why it is not ours to take."""
    sockets.claim(path, busy_hint="another DRA driver with this name but another --state-dir? stop it first",
                  elsewhere_hint="use other kubelet directories")


