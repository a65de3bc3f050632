"""Loopback ports: check that a requested one is free, or pick free ones."""

from __future__ import annotations

import errno
import random
import socket
import time

from kubeaccel.errors import ConfigError

# Below Linux's ephemeral range (32768+), so outgoing connections do not grab a port between our pick and use.
_PICK_RANGE = (20000, 32000)


def is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As the Go servers bind: connections of a just-killed server in TIME_WAIT do not block the port,
        # only a live listener does (a repairing `up` restarts the API server on its port right away).
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_soon(port: int, timeout: float = 5.0) -> bool:
    """Whether ``port`` is free now or within ``timeout`` s: a killed multi-threaded server looks dead (its
    main thread is a zombie) a moment before its last thread exits and the kernel closes its listener."""
    deadline = time.monotonic() + timeout
    while not is_free(port):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def require_free(port: int, option: str) -> int:
    if not is_free(port):
        raise ConfigError(
            f"port {port} on 127.0.0.1 is already in use",
            hint=f"stop what listens there (ss -ltnp 'sport = :{port}'), choose another {option}, "
            "or leave it out to pick a free port",
        )
    return port


def pick_free(count: int, exclude: set[int] | None = None) -> list[int]:
    """``count`` distinct free ports, chosen at random so parallel test sessions rarely collide."""
    taken = set(exclude or ())
    picked: list[int] = []
    rng = random.SystemRandom()
    for _ in range(count * 200):
        if len(picked) == count:
            break
        port = rng.randrange(*_PICK_RANGE)
        if port not in taken and is_free(port):
            taken.add(port)
            picked.append(port)
    if len(picked) < count:
        raise ConfigError("no free loopback ports found", hint="stop some local servers and retry")
    return picked
