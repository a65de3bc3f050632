"""Start, find and stop the cluster's processes by PID; each one's output goes to a log in the state dir.

A PID file records the PID *and* the process start time (from /proc), so a PID reused by an
unrelated process after a crash or reboot is never signalled. It also counts how often the process
was restarted (by the supervisor or a repairing ``up``), which ``cluster status`` shows.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from kubeaccel.cluster.layout import Layout
from kubeaccel.errors import KubeaccelError


def _start_ticks(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses; fields after the last ')' are plain.
    fields = stat.rsplit(")", 1)[1].split()
    state = fields[0]
    if state in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass(frozen=True)
class ProcessRecord:
    name: str
    pid: int
    start_ticks: int
    argv: tuple[str, ...]
    restarts: int = 0

    def alive(self) -> bool:
        return _start_ticks(self.pid) == self.start_ticks

    def pidfd(self) -> int | None:
        """A pidfd that becomes readable when this very process exits, or None if it is gone already.

        Opened before the start time is checked, so a PID reused in between is never mistaken for ours.
        """
        try:
            fd = os.pidfd_open(self.pid)
        except OSError:
            return None
        if not self.alive():
            os.close(fd)
            return None
        return fd


def read_record(layout: Layout, name: str) -> ProcessRecord | None:
    try:
        data = json.loads(layout.pid_file(name).read_text())
        return ProcessRecord(name, int(data["pid"]), int(data["start_ticks"]), tuple(data["argv"]),
                             int(data.get("restarts", 0)))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def records(layout: Layout) -> list[ProcessRecord]:
    if not layout.run.is_dir():
        return []
    found = [read_record(layout, p.stem) for p in sorted(layout.run.glob("*.pid"))]
    return [r for r in found if r is not None]


def start(
    layout: Layout, name: str, argv: Sequence[str], *, env: Mapping[str, str] | None = None, cwd: Path | None = None,
    restarts: int = 0,
) -> ProcessRecord:
    """Start ``argv`` detached (own session, so a Ctrl-C of ``up`` does not kill it) with output to its log."""
    layout.logs.mkdir(parents=True, exist_ok=True)
    layout.run.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    if env:
        full_env.update(env)
    with open(layout.log(name), "ab") as log:
        try:
            proc = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=full_env, cwd=cwd, start_new_session=True,
            )
        except OSError as exc:
            raise KubeaccelError(
                f"cannot start {name} ({argv[0]}): {exc.strerror}",
                hint="run scripts/bootstrap.sh to build or install the missing binaries",
            ) from exc
    ticks = _start_ticks(proc.pid)
    record = ProcessRecord(name, proc.pid, ticks if ticks is not None else -1, tuple(argv), restarts)
    data = {"pid": record.pid, "start_ticks": record.start_ticks, "argv": list(record.argv), "restarts": restarts}
    # Written whole then renamed: the supervisor and `status` read these files while they change.
    tmp = layout.pid_file(name).with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(layout.pid_file(name))
    return record


def reap(pid: int) -> None:
    # Our own children (started in this Python process) would stay zombies, and look alive, until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def stop_all(layout: Layout, grace: float = 3.0, names: Sequence[str] | None = None) -> list[str]:
    """SIGTERM every recorded process (or those in ``names``), SIGKILL what is left after ``grace`` seconds.

    The kubelet, API server and scheduler can take minutes to exit on SIGTERM; nothing here needs a
    clean shutdown, so the grace is short. Returns the names that were running.
    """
    targets = [r for r in records(layout) if names is None or r.name in names]
    running = [r for r in targets if r.alive()]
    for r in running:
        with contextlib.suppress(ProcessLookupError):
            os.kill(r.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        for r in running:
            reap(r.pid)
        if not any(r.alive() for r in running):
            break
        time.sleep(0.05)
    for r in running:
        if r.alive():
            with contextlib.suppress(ProcessLookupError):
                os.kill(r.pid, signal.SIGKILL)
    for r in running:
        for _ in range(100):
            reap(r.pid)
            if not r.alive():
                break
            time.sleep(0.02)
    for r in targets:
        layout.pid_file(r.name).unlink(missing_ok=True)
    return [r.name for r in running]


def log_tail(layout: Layout, name: str, lines: int = 15) -> str:
    try:
        text = layout.log(name).read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])
