"""The fault-handling cores without a cluster: signal guard, rollback report, lease expiry, partial outcomes.

Matrix: each guarded signal raises `Interrupted` inside the guard and nothing outside it (old handlers back);
held signals are remembered, not raised; a rollback report names every leftover with a runnable kubectl
command, the ID of a pod that may run, and keeps the exit code (128 + signal, or the error's own);
a Lease is free when unheld or past renewTime + duration; Outcome's exit code is 0 / the shared code / 7.
"""

from __future__ import annotations

import os
import signal
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeaccel.errors import KubeaccelError, UnavailableError
from kubeaccel.spark.manage import PARTIAL_EXIT_CODE, Failure, Outcome
from kubeaccel.spark.reservation import LEASE_SECONDS, LeaseView, lease_manifest
from kubeaccel.spark.rollback import (
    GUARDED_SIGNALS,
    Interrupted,
    Ledger,
    Leftover,
    RollbackIncompleteError,
    SubmitInterruptedError,
    cleanup_command,
    failure_after_rollback,
    guarded_signals,
    pending_signal,
    signals_held,
)


@pytest.mark.parametrize("signum", GUARDED_SIGNALS)
def test_guarded_signal_raises_inside_and_handlers_come_back(signum: int) -> None:
    before = signal.getsignal(signum)
    with pytest.raises(Interrupted) as info, guarded_signals():
        os.kill(os.getpid(), signum)
        for _ in range(1000):  # the handler runs between bytecodes
            pass
    assert info.value.signum == signum
    assert signal.getsignal(signum) is before


@pytest.mark.parametrize("signum", GUARDED_SIGNALS)
def test_held_signal_is_remembered_not_raised(signum: int) -> None:
    with guarded_signals():
        with signals_held():
            os.kill(os.getpid(), signum)
            for _ in range(1000):  # the handler runs between bytecodes; give it some
                pass
        assert pending_signal() == signum


def _ledger() -> Ledger:
    ledger = Ledger("team-a")
    for kind, name in [("Pod", "etl-1-driver"), ("Service", "etl-1-svc"), ("ConfigMap", "spark-drv-1-conf-map")]:
        ledger.wrote(kind, name)
    ledger.uploading("s3a://bucket/up/spark-upload-1", {})
    return ledger


def test_clean_rollback_after_a_signal_is_submit_interrupted() -> None:
    error = failure_after_rollback(Interrupted(signal.SIGTERM), _ledger(), [], "team-a:etl-1-driver")
    assert isinstance(error, SubmitInterruptedError)
    assert error.exit_code == 143
    assert "interrupted by SIGTERM: rolled back (pod etl-1-driver, service etl-1-svc" in error.message


def test_clean_rollback_after_an_error_keeps_the_error() -> None:
    original = KubeaccelError("boom", exit_code=6)
    assert failure_after_rollback(original, _ledger(), [], "team-a:etl-1-driver") is original


def test_incomplete_rollback_names_everything_and_how_to_remove_it() -> None:
    left = [
        Leftover("Pod", "etl-1-driver", "team-a", "forbidden"),
        Leftover("Service", "etl-1-svc", "team-a", "forbidden"),
        Leftover("Upload", "s3a://bucket/up/spark-upload-1", None, "AccessDenied"),
    ]
    error = failure_after_rollback(Interrupted(signal.SIGHUP), _ledger(), left, "team-a:etl-1-driver")
    assert isinstance(error, RollbackIncompleteError)
    assert error.exit_code == 129
    assert "pod etl-1-driver in team-a (forbidden)" in error.message
    assert "the driver pod team-a:etl-1-driver may be running" in error.message
    assert error.hint is not None
    assert "kubectl delete --namespace team-a --ignore-not-found pod/etl-1-driver service/etl-1-svc" in error.hint
    assert "remove the upload directory s3a://bucket/up/spark-upload-1" in error.hint
    data = error.as_dict()
    assert data["exit_code"] == 129 and data["error"] == "interrupted by SIGHUP"
    assert [item["kind"] for item in data["left_behind"]] == ["Pod", "Service", "Upload"]


@given(st.lists(st.sampled_from(["Pod", "Service", "ConfigMap", "NetworkPolicy"]), min_size=1, max_size=6))
def test_cleanup_command_is_one_kubectl_call_naming_each_object(kinds: list[str]) -> None:
    left = [Leftover(kind, f"obj-{i}", "ns-1", "x") for i, kind in enumerate(kinds)]
    command = cleanup_command(left)
    assert command.startswith("kubectl delete --namespace ns-1 --ignore-not-found ")
    assert all(f"{kind.lower()}/obj-{i}" in command for i, kind in enumerate(kinds))


def test_cleanup_command_runs_in_a_shell_as_written() -> None:
    command = cleanup_command([Leftover("Pod", "p-1", "ns", "x")])
    result = subprocess.run(["bash", "-n", "-c", command], check=False)  # parses as one command
    assert result.returncode == 0


def test_lease_free_when_unheld_or_expired() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    held = LeaseView.of({**lease_manifest("ns", "me", now), "metadata": {"resourceVersion": "7"}})
    assert held.holder == "me" and held.resource_version == "7"
    assert not held.free_at(now + timedelta(seconds=LEASE_SECONDS - 1))
    assert held.free_at(now + timedelta(seconds=LEASE_SECONDS))
    assert held.expires_in(now) == LEASE_SECONDS
    released = LeaseView.of({**lease_manifest("ns", None, now), "metadata": {"resourceVersion": "8"}})
    assert released.holder is None and released.free_at(now)


@pytest.mark.parametrize(
    ("done", "codes", "expected"),
    [
        (0, [], 0),
        (2, [], 0),
        (2, [5], PARTIAL_EXIT_CODE),
        (0, [5, 5], 5),
        (0, [5, 4], PARTIAL_EXIT_CODE),
    ],
)
def test_outcome_exit_code(done: int, codes: list[int], expected: int) -> None:
    outcome = Outcome([f"a{i}" for i in range(done)], [Failure(f"f{i}", "x", c) for i, c in enumerate(codes)])
    assert outcome.exit_code == expected


def test_transient_errors_are_told_apart_by_type_and_status() -> None:
    import httpx2 as httpx
    from lightkube import ApiError

    from kubeaccel.kube.client import translate_errors
    from kubeaccel.spark.submit import _transient

    def api_error(code: int, reason: str = "") -> KubeaccelError:
        """What the door makes of the API's answer with this Status code (the real translation)."""
        body = {"kind": "Status", "apiVersion": "v1", "code": code, "reason": reason, "message": "m"}
        response = httpx.Response(code, json=body)
        response.request = httpx.Request("GET", "https://x")
        try:
            with translate_errors("get", "pod x", namespace="ns", server="https://x"):
                raise ApiError(response=response)
        except KubeaccelError as exc:
            return exc
        raise AssertionError("not translated")

    assert _transient(UnavailableError("connection refused"))
    assert _transient(api_error(503, "ServiceUnavailable")) and _transient(api_error(429, "TooManyRequests"))
    assert not _transient(api_error(404, "NotFound")) and not _transient(api_error(403, "Forbidden"))
    assert not _transient(api_error(401, "Unauthorized"))
