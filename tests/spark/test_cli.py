"""CLI error paths that need no cluster: bad input is a message and a hint, never a traceback,
and nothing is contacted when the input is already wrong (the kubeconfig given does not even exist)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from fixtures.spark import run_cli

KUBEACCEL = str(Path(sys.executable).parent / "kubeaccel")
MASTER = "k8s://https://127.0.0.1:1"


def test_errors_print_message_and_hint_without_traceback() -> None:
    result = subprocess.run(
        [KUBEACCEL, "spark", "status", "a:b:c"], check=False, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "error: 'a:b:c' is not a submission ID" in result.stderr
    assert "hint:" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--master", "yarn", "local:///a.py"], "not a Kubernetes master URL"),
        (["--master", MASTER, "local:///a.jar"], "no main class"),
        (["--master", MASTER, "--conf", "novalue", "local:///a.py"], "key=value"),
        (["--master", MASTER, "local:///a.py"], "no container image"),
        (
            [
                "--master",
                MASTER,
                "--conf",
                "spark.kubernetes.container.image=i",
                "--conf",
                "spark.executor.resource.ve.amount=1",
                "local:///a.py",
            ],
            "vendor was not specified",
        ),
        (
            [
                "--master",
                MASTER,
                "--conf",
                "spark.kubernetes.container.image=i",
                "--conf",
                "spark.executor.memory=lots",
                "local:///a.py",
            ],
            "spark.executor.memory='lots' is not a size",
        ),
        (["--master", MASTER, "--conf", "spark.kubernetes.container.image=i", "/nonexistent/job.py"], "does not exist"),
        (["--master", MASTER, "--deploy-mode", "client", "local:///a.py"], "deploy mode"),
        (["--master", MASTER, "--properties-file", "/nonexistent.conf", "local:///a.py"], "does not exist"),
    ],
)
def test_bad_submissions_fail_before_connecting(args: list[str], words: str, tmp_path: Path) -> None:
    code, _, error = run_cli(["spark", "submit", "--kubeconfig", str(tmp_path / "absent"), *args])
    assert code in (2, 3), error
    assert words in str(error)


def test_duplicate_dependency_names(tmp_path: Path) -> None:
    for directory in ("a", "b"):
        (tmp_path / directory).mkdir()
        (tmp_path / directory / "util.py").write_text("x = 1\n")
    code, _, error = run_cli(
        [
            "spark",
            "submit",
            "--kubeconfig",
            str(tmp_path / "absent"),
            "--master",
            MASTER,
            "--conf",
            "spark.kubernetes.container.image=i",
            "--conf",
            "spark.kubernetes.file.upload.path=file:///tmp/x",
            "--py-files",
            f"{tmp_path}/a/util.py,{tmp_path}/b/util.py",
            "local:///opt/app.py",
        ]
    )
    assert code == 2
    assert "both named 'util.py'" in str(error)


def test_gc_uploads_bad_age() -> None:
    code, _, error = run_cli(["spark", "gc-uploads", "--upload-path", "file:///tmp/x", "--older-than", "soon"])
    assert code == 2
    assert "not an age" in str(error)


def test_tenant_bad_quota() -> None:
    code, _, error = run_cli(["tenant", "create", "team-a", "--quota", "cpu=lots"])
    assert code == 2
    assert "not a Kubernetes quantity" in str(error)
