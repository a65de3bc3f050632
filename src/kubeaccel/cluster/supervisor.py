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
"""

from __future__ import annotations

import contextlib
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
        with try_locked(self.layout) as got:
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

    def run(self) -> None:
        for name in SUPERVISED:
            self.watch(name)
        self.log(f"supervising {', '.join(sorted(set(self.watched.values()) | set(self.due)))}")
        poller = select.poll()
        for fd in self.watched:
            poller.register(fd, select.POLLIN)
        while True:
            wait = self.timeout()
            for fd, _ in poller.poll(None if wait is None else wait * 1000):
                name = self.watched.pop(fd)
                poller.unregister(fd)
                os.close(fd)
                self.exited(name, process.read_record(self.layout, name))
            before = set(self.watched)
            self.restart_due()
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
