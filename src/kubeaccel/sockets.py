"""Unix sockets a node-side daemon serves on: who is behind a path, and taking it over safely.

Both node-side daemons (the device plugin and the DRA driver) need the same two answers before they
bind: is a live server already behind this path (a connect probe), and may the path be freed (only
a socket nobody serves; never a directory or a file that merely has the name).
"""

from __future__ import annotations

import contextlib
import errno
import socket
import stat
from pathlib import Path

from kubeaccel.errors import ConfigError

PROBE_TIMEOUT_S = 0.5


def serving(path: Path, *, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True when a server accepts connections on the unix socket ``path`` (a connect probe)."""
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(timeout)
    try:
        probe.connect(str(path))
    except OSError as exc:
        if exc.errno in (errno.ECONNREFUSED, errno.ENOENT, errno.ENOTSOCK):
            return False
        raise ConfigError(f"cannot probe {path}: {exc.strerror or exc}", hint="check the socket directory") from None
    finally:
        probe.close()
    return True


def claim(path: Path, *, busy_hint: str, elsewhere_hint: str) -> None:
    """Make ``path`` free for our server, or raise ``ConfigError`` saying why it is not ours to take.

    A socket nobody listens on (left by an earlier run) is removed. A live server behind it is
    another process (two daemons would take each other's socket): an error with ``busy_hint``.
    Anything else at that name is never deleted: an error with ``elsewhere_hint``.
    """
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        kind = "a directory" if stat.S_ISDIR(st.st_mode) else "not a socket"
        raise ConfigError(f"cannot serve on {path}: it exists and is {kind}",
                          hint=f"remove it by hand (it is not ours), or {elsewhere_hint}")
    if serving(path):
        raise ConfigError(f"another process is serving on {path}", hint=busy_hint)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
