"""Fixtures for the end-to-end tests: a real Spark standalone cluster from the ``pyspark`` package.

The master and worker are started with ``spark-class`` on loopback, on free ports, with their
work and log dirs in a temp dir, and are stopped (SIGTERM, then SIGKILL) whatever the test did.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

VENV_BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spark_bin(name: str) -> str:
    found = VENV_BIN / name
    if found.exists():
        return str(found)
    which = shutil.which(name)
    assert which, f"{name} not found: install pyspark (pip install -e '.[dev]')"
    return which


def spark_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KUBEACCEL_", "SPARK_", "PYSPARK_"))}
    env.update(
        PATH=f"{VENV_BIN}:{env.get('PATH', '/usr/bin:/bin')}",
        SPARK_LOCAL_IP="127.0.0.1",
        PYSPARK_PYTHON=sys.executable,
        PYSPARK_DRIVER_PYTHON=sys.executable,
        SPARK_NO_DAEMONIZE="1",
    )
    env.update(extra or {})
    return env


@dataclass
class Daemon:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text():
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.proc.returncode}):\n{self.text()[-4000:]}")
            time.sleep(0.2)
        raise AssertionError(f"{self.name}: no {needle!r} within {timeout}s:\n{self.text()[-4000:]}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start_daemon(name: str, args: list[str], env: Mapping[str, str], log: Path) -> Daemon:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, env=dict(env), stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Daemon(name, proc, log)


@dataclass
class Standalone:
    """A running master + worker; ``submit`` runs an app in client mode and returns its stdout."""

    master_url: str
    root: Path
    daemons: list[Daemon] = field(default_factory=list)

    def submit(self, app: Path, args: list[str], confs: Mapping[str, str], timeout: float = 300) -> str:
        cmd = [spark_bin("spark-submit"), "--master", self.master_url]
        for key, value in {"spark.driver.host": "127.0.0.1", "spark.ui.enabled": "false", **confs}.items():
            cmd += ["--conf", f"{key}={value}"]
        done = subprocess.run(
            [*cmd, str(app), *args],
            env=spark_env(),
            cwd=self.root,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert done.returncode == 0, f"spark-submit failed ({done.returncode}):\n{done.stderr[-6000:]}\n{self.logs()}"
        return done.stdout

    def logs(self) -> str:
        return "\n".join(f"--- {d.name}\n{d.text()[-3000:]}" for d in self.daemons)


class StandaloneFactory:
    """Starts master + one worker per ``start`` call; the fixture stops them all."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.started: list[Standalone] = []

    def start(self, worker_env: Mapping[str, str], worker_confs: Mapping[str, str], cores: int = 2) -> Standalone:
        cluster = self._start(worker_env, worker_confs, cores)
        cluster.daemons[-1].wait_for("Successfully registered with master", 120)
        return cluster

    def start_failing_worker(self, worker_env: Mapping[str, str], worker_confs: Mapping[str, str]) -> Daemon:
        """A worker expected to exit during start-up; returns it once it has exited."""
        worker = self._start(worker_env, worker_confs, 1).daemons[-1]
        try:
            worker.proc.wait(120)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"worker still running:\n{worker.text()[-4000:]}") from None
        assert worker.proc.returncode != 0
        return worker

    def _start(self, worker_env: Mapping[str, str], worker_confs: Mapping[str, str], cores: int) -> Standalone:
        root = self.tmp_path / f"standalone-{len(self.started)}"
        (root / "work").mkdir(parents=True)
        port = free_port()
        cluster = Standalone(f"spark://127.0.0.1:{port}", root)
        self.started.append(cluster)
        master_args = ["--host", "127.0.0.1", "--port", str(port), "--webui-port", str(free_port())]
        master = start_daemon(
            "master",
            [spark_bin("spark-class"), "org.apache.spark.deploy.master.Master", *master_args],
            spark_env(),
            root / "master.log",
        )
        cluster.daemons.append(master)
        master.wait_for("I have been elected leader", 120)
        props = root / "worker.conf"
        props.write_text("".join(f"{k} {v}\n" for k, v in worker_confs.items()))
        worker_args = [
            cluster.master_url,
            *("--host", "127.0.0.1", "--port", str(free_port()), "--webui-port", str(free_port())),
            *("--cores", str(cores), "--memory", "2g", "--work-dir", str(root / "work")),
            *("--properties-file", str(props)),
        ]
        worker = start_daemon(
            "worker",
            [spark_bin("spark-class"), "org.apache.spark.deploy.worker.Worker", *worker_args],
            spark_env({"SPARK_WORKER_DIR": str(root / "work"), **worker_env}),
            root / "worker.log",
        )
        cluster.daemons.append(worker)
        return cluster

    def stop_all(self) -> None:
        for cluster in self.started:
            for daemon in reversed(cluster.daemons):
                daemon.stop()


@pytest.fixture
def spark_standalone(tmp_path: Path) -> Iterator[StandaloneFactory]:
    factory = StandaloneFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.stop_all()
