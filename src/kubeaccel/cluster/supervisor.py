"""Keeps a local control plane running: restarts a dead etcd, kube-apiserver, controller-manager, scheduler or kwok.

Why it exists: kube-controller-manager and kube-scheduler exit by design when they cannot renew their leader
lease (an API server stall longer than the renew deadline, about 10 s), and nothing else would start them
again: pods then stay Pending with no reason. The supervisor is its own detached process
(``python -m kubeaccel.cluster.supervisor STATE_DIR``), started by ``cluster up`` and stopped first by
``cluster up`` (while it repairs) and ``cluster down``. It restarts a process with the very command line
recorded in its PID file (same ports, same data), counts the restart there, and never wipes anything.

Event-driven: it blocks on one pidfd per process and wakes only when one exits (or a back-off ends).
A process that dies within ``MIN_UPTIME`` of its start is crash-looping: restarts then back off
1, 2, 4 ... ``MAX_BACKOFF`` seconds. Restarts happen under the state dir's lock, so they never interleave
with a ``cluster up`` or ``down``.

If the state dir is deleted under a running cluster (a temp dir cleaned up after a failed test, ``rm -rf``),
nobody could ever stop its processes again with ``cluster down``: the supervisor (woken by inotify on
``run/``) then stops the processes it supervises, through their pidfds (exactly those processes), and exits.
It never recreates a state dir that is gone.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from kubeaccel.cluster import process
from kubeaccel.cluster.layout import Layout
from kubeaccel.cluster.lock import try_locked

NAME = "supervisor"
SUPERVISED = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok")
MIN_UPTIME = 10.0
MAX_BACKOFF = 30.0
LOCK_RETRY = 0.2
ORPHAN_GRACE = 3.0  # SIGTERM, then SIGKILL, for the processes of a deleted state dir
_IN_DELETE_SELF = 0x400
_IN_MOVE_SELF = 0x800


def _watch_removal(path: Path) -> int:
    """An inotify fd that becomes readable when ``path`` (a directory) is deleted or moved away."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = int(libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC))
    if fd < 0:
        raise OSError(ctypes.get_errno(), "inotify_init1")
    if libc.inotify_add_watch(fd, os.fsencode(path), _IN_DELETE_SELF | _IN_MOVE_SELF) < 0:
        errno = ctypes.get_errno()
        os.close(fd)
        raise OSError(errno, f"inotify_add_watch {path}")
    return fd


def start(layout: Layout) -> process.ProcessRecord:
    """Start the supervisor of the cluster in ``layout`` (the caller holds the state lock)."""
    return process.start(layout, NAME, [sys.executable, "-m", "kubeaccel.cluster.supervisor", str(layout.root)])


def stop(layout: Layout) -> None:
    """Stop the supervisor, so that it does not restart what the caller is about to stop or restart."""
    process.stop_all(layout, grace=2.0, names=(NAME,))


@dataclass
class Supervisor:
    layout: Layout
    watched: dict[int, str] = field(default_factory=dict)  # pidfd -> name
    due: dict[str, float] = field(default_factory=dict)  # name -> monotonic time of the next restart
    backoff: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)

    def log(self, message: str) -> None:
        print(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {message}", flush=True)

    def watch(self, name: str) -> None:
        record = process.read_record(self.layout, name)
        if record is None:
            return  # not part of this cluster (e.g. the real node's processes are not supervised)
        fd = record.pidfd()
        if fd is None:
            self.exited(name, record)
            return
        self.watched[fd] = name
        self.started.setdefault(name, time.monotonic())

    def exited(self, name: str, record: process.ProcessRecord | None) -> None:
        if record is not None:
            process.reap(record.pid)
        now = time.monotonic()
        quick = now - self.started.get(name, 0.0) < MIN_UPTIME
        delay = min(max(1.0, 2 * self.backoff.get(name, 0.0)), MAX_BACKOFF) if quick else 0.0
        self.backoff[name] = delay
        self.due[name] = now + delay
        tail = process.log_tail(self.layout, name, lines=3).replace("\n", " | ")
        self.log(f"{name} exited; restarting in {delay:.0f} s (last log lines: {tail})")

    def restart_due(self) -> None:
        now = time.monotonic()
        ready = [name for name, when in self.due.items() if when <= now]
        if not ready:
            return
        with try_locked(self.layout, create=False) as got:
            if not got:
                # A `cluster up` or `down` is at work; it stops this process before touching anything.
                for name in ready:
                    self.due[name] = now + LOCK_RETRY
                return
            for name in ready:
                del self.due[name]
                record = process.read_record(self.layout, name)
                if record is None:
                    continue
                if not record.alive():
                    record = process.start(self.layout, name, record.argv, restarts=record.restarts + 1)
                    self.started[name] = time.monotonic()
                    self.log(f"restarted {name} (pid {record.pid}, restart #{record.restarts})")
                self.watch(name)

    def timeout(self) -> float | None:
        if not self.due:
            return None
        return max(0.0, min(self.due.values()) - time.monotonic())

    def state_dir_gone(self, run_inode: int) -> bool:
        try:
            return os.stat(self.layout.run).st_ino != run_inode
        except FileNotFoundError:
            return True

    def stop_orphans(self) -> None:
        """The state dir is gone: stop what this supervisor watches (pidfds: never a reused PID), then exit."""
        self.log(f"{self.layout.root} was removed: stopping {', '.join(sorted(self.watched.values())) or 'nothing'}")
        poller = select.poll()
        for fd in self.watched:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGTERM)
            poller.register(fd, select.POLLIN)
        deadline = time.monotonic() + ORPHAN_GRACE
        left = set(self.watched)
        while left and time.monotonic() < deadline:
            for fd, _ in poller.poll(max(0.0, deadline - time.monotonic()) * 1000):
                left.discard(fd)
                poller.unregister(fd)
        for fd in left:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(fd, signal.SIGKILL)

    def run(self) -> None:
        try:
            run_inode = os.stat(self.layout.run).st_ino
            removal = _watch_removal(self.layout.run)
        except FileNotFoundError:
            self.log(f"{self.layout.run} does not exist: nothing to supervise")
            return
        for name in SUPERVISED:
            self.watch(name)
        self.log(f"supervising {', '.join(sorted(set(self.watched.values()) | set(self.due)))}")
        poller = select.poll()
        poller.register(removal, select.POLLIN)
        for fd in self.watched:
            poller.register(fd, select.POLLIN)
        while True:
            wait = self.timeout()
            events = poller.poll(None if wait is None else wait * 1000)
            if any(fd == removal for fd, _ in events) and self.state_dir_gone(run_inode):
                self.stop_orphans()
                return
            for fd, _ in events:
                if fd == removal:
                    with contextlib.suppress(BlockingIOError):
                        os.read(removal, 4096)
                    continue
                name = self.watched.pop(fd)
                poller.unregister(fd)
                os.close(fd)
                self.exited(name, process.read_record(self.layout, name))
            before = set(self.watched)
            try:
                self.restart_due()
            except FileNotFoundError:
                if self.state_dir_gone(run_inode):
                    self.stop_orphans()
                    return
                raise
            for fd in set(self.watched) - before:
                poller.register(fd, select.POLLIN)


def _terminate(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m kubeaccel.cluster.supervisor STATE_DIR", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    with contextlib.suppress(KeyboardInterrupt):
        Supervisor(Layout(Path(argv[0]))).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
