"""Event-driven change notification (inotify) and the simulated backend's state file on top of it.

Matrix: DirWatch wakes on a named file's close-after-write, rename-over, delete, ignores other
names, reports its directory gone, and close() wakes a blocked waiter; FileWatcher falls back to
polling while the directory is missing and switches to inotify when it appears; the simulated
backend never flaps on in-place rewrites (truncate, partial, malformed) and keeps the last good
state, and an idle wait costs no wake-ups.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from kubeaccel.devices.backends import simulated
from kubeaccel.devices.backends.simulated import Config, SimulatedBackend
from kubeaccel.devices.model import Health
from kubeaccel.devices.watch import DirWatch, FileWatcher


def _later(delay: float, fn) -> threading.Thread:  # type: ignore[no-untyped-def]
    def run() -> None:
        time.sleep(delay)
        fn()

    t = threading.Thread(target=run)
    t.start()
    return t


def test_dir_watch_events(tmp_path: Path) -> None:
    target = tmp_path / "state.json"
    watch = DirWatch(tmp_path, {"state.json"})
    try:
        assert watch.wait(0.05) is False  # nothing happened
        (tmp_path / "other").write_text("x")
        assert watch.wait(0.1) is False  # another name
        t = _later(0.05, lambda: target.write_text("{}"))
        start = time.perf_counter()
        assert watch.wait(5) is True
        assert time.perf_counter() - start < 1.0
        t.join()
        tmp = tmp_path / "x.tmp"
        tmp.write_text("{}")
        os.replace(tmp, target)
        assert watch.wait(1) is True
        target.unlink()
        assert watch.wait(1) is True
    finally:
        watch.close()


def test_dir_watch_reports_its_directory_gone(tmp_path: Path) -> None:
    d = tmp_path / "d"
    d.mkdir()
    watch = DirWatch(d, {"kubelet.sock"})
    shutil.rmtree(d)
    assert watch.wait(1) is True and watch.gone
    watch.close()


def test_close_wakes_a_blocked_waiter(tmp_path: Path) -> None:
    watch = DirWatch(tmp_path, {"x"})
    _later(0.1, watch.close)
    start = time.perf_counter()
    assert watch.wait(10) is False
    assert time.perf_counter() - start < 2.0
    assert watch.wait(10) is False  # closed stays closed, at once


def test_file_watcher_falls_back_until_the_directory_exists(tmp_path: Path) -> None:
    target = tmp_path / "later" / "state.json"
    watcher = FileWatcher(target, fallback_interval=0.05)
    try:
        assert not watcher.event_driven
        assert watcher.wait(0.1) is False
        target.parent.mkdir()
        assert watcher.wait(1) is True and watcher.event_driven  # switched to inotify
        _later(0.05, lambda: target.write_text("{}"))
        assert watcher.wait(5) is True
    finally:
        watcher.close()


def test_simulated_in_place_rewrites_never_flap(tmp_path: Path) -> None:
    """An operator rewriting the state file in place (truncate, write in pieces): every scan a reader
    takes meanwhile shows either the old or the new state, never "all healthy" in between."""
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"sim-1": "Unhealthy"}))
    backend = SimulatedBackend("example.com/sim", Config(count=4, state_file=state))
    seen: list[Health] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            seen.append(backend.scan()["sim-1"].health)

    t = threading.Thread(target=reader)
    t.start()
    try:
        body = json.dumps({"sim-1": "Unhealthy", "sim-2": "Unhealthy"}).encode()
        for _ in range(100):
            with state.open("r+b") as fh:  # in place: truncate, then two writes
                fh.truncate(0)
                fh.flush()
                time.sleep(0.001)
                fh.write(body[:7])
                fh.flush()
                time.sleep(0.001)
                fh.write(body[7:])
        with state.open("wb") as fh:  # a malformed in-place write keeps the last good state too
            fh.write(b'{"sim-1": "Unheal')
    finally:
        stop.set()
        t.join()
    assert seen and set(seen) == {Health.UNHEALTHY}
    assert backend.scan()["sim-1"].health is Health.UNHEALTHY
    assert backend.state_error is not None and len(backend.state_error) < 1000
    backend.close()


def test_simulated_change_is_signalled_at_once_and_idle_waits_sleep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With a 60 s fallback poll, an answer within 10 s can only be inotify's, however loaded the host.
    monkeypatch.setattr(simulated, "FALLBACK_INTERVAL_S", 60.0)
    state = tmp_path / "state.json"
    backend = SimulatedBackend("example.com/sim", Config(count=2, state_file=state))
    try:
        start = time.process_time()
        assert backend.wait_for_change(0.5) is False
        assert time.process_time() - start < 0.05  # blocked in the kernel, not polling
        _later(0.05, lambda: state.write_text(json.dumps({"sim-0": "Unhealthy"})))
        # write_text is open (CREATE, already a wake-up), write, close (CLOSE_WRITE): a scan woken by
        # the first may still read an empty file, keep the last good state and wait for the next.
        deadline = time.perf_counter() + 10.0
        wakes = 0
        while backend.scan()["sim-0"].health is not Health.UNHEALTHY:
            assert backend.wait_for_change(max(deadline - time.perf_counter(), 0.0)) is True
            wakes += 1
        assert wakes <= 3
    finally:
        backend.close()


def test_generic_backend_wakes_on_inotify_not_on_its_poll_interval(tmp_path: Path) -> None:
    from kubeaccel.devices.backends import generic

    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "ttyUSB0").write_text("")
    # A poll interval of a minute: only an inotify event can wake it within the test.
    b = generic.GenericBackend("example.com/tty", generic.Config(paths=["/dev/ttyUSB*"], pollIntervalSeconds=60),
                               root=tmp_path)
    try:
        assert b.event_driven
        b.scan()
        (dev / "unrelated").write_text("x")  # /dev churn that matches no glob: no wake-up
        assert b.wait_for_change(0.3) is False
        _later(0.05, (dev / "ttyUSB0").unlink)
        start = time.perf_counter()
        assert b.wait_for_change(10) is True
        assert time.perf_counter() - start < 1.0
        assert b.scan()["ttyUSB0"].health is Health.UNHEALTHY
    finally:
        b.close()
    missing = generic.GenericBackend("example.com/x", generic.Config(paths=["/nowhere/x*"]), root=tmp_path)
    assert not missing.event_driven  # its directory does not exist: polling
    missing.close()
