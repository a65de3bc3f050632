"""All-or-nothing for a submit: signals become exceptions, every write is recorded before it is made,
and a failure or a signal at any point deletes what was written, or says exactly what is left.

    with guarded_signals():                 # SIGINT / SIGTERM / SIGHUP now raise Interrupted
        ledger = Ledger(namespace)
        ledger.wrote("Pod", name)           # before the POST: a signal inside it may still create it
        kube.create(...)
        ledger.step_done()
    ...
    except BaseException: left = ledger.roll_back(kube)    # signals are held while it runs

Why a record *before* each write: a signal or timeout can arrive after the API server stored the object
and before its answer reached us; deleting by name with "already gone is fine" covers both outcomes.

The signal guard itself is `kubeaccel.kube.interrupts` (tenant creation uses it too), re-exported here.
`KUBEACCEL_TEST_SIGNAL_AFTER_WRITE=N:TERM` (test-only, undocumented for users) makes the submitter send
itself SIGTERM (or INT, HUP) right after its N-th write, so tests can interrupt every step deterministically.
"""

from __future__ import annotations

import contextlib
import shlex
import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubeaccel.errors import KubeaccelError, NotFoundError, UnavailableError
from kubeaccel.kube.client import Kube
from kubeaccel.kube.interrupts import (  # re-exported: the submit's guard is the one tenants use too
    GUARDED_SIGNALS,
    TEST_SIGNAL_ENV,
    Interrupted,
    SignalAfterWrite,
    exit_code_for,
    guarded_signals,
    pending_signal,
    raise_if_signalled,
    signals_held,
)

__all__ = [
    "GUARDED_SIGNALS",
    "TEST_SIGNAL_ENV",
    "Interrupted",
    "Ledger",
    "Leftover",
    "RollbackIncompleteError",
    "SubmitInterruptedError",
    "cleanup_command",
    "exit_code_for",
    "failure_after_rollback",
    "guarded_signals",
    "pending_signal",
    "raise_if_signalled",
    "signals_held",
]

# kinds a submit creates, as `kubectl delete` and lightkube name them
_KUBECTL_KIND = {"Pod": "pod", "Service": "service", "ConfigMap": "configmap", "NetworkPolicy": "networkpolicy",
                 "ResourceClaimTemplate": "resourceclaimtemplate.resource.k8s.io"}


class SubmitInterruptedError(KubeaccelError):
    """The submit was interrupted by a signal and everything it had written was removed."""


class RollbackIncompleteError(KubeaccelError):
    """The submit failed (or was interrupted) and some of what it wrote could not be removed."""

    def __init__(self, message: str, *, hint: str, exit_code: int, left: list[Leftover], cause: str) -> None:
        super().__init__(message, hint=hint, exit_code=exit_code)
        self.left = left
        self.cause = cause

    def as_dict(self) -> dict[str, Any]:
        return {
            "error": self.cause,
            "exit_code": self.exit_code,
            "left_behind": [item.as_dict() for item in self.left],
            "cleanup": self.hint,
        }


@dataclass(frozen=True)
class Leftover:
    """One object or upload directory a failed rollback could not remove, and why."""

    kind: str  # Pod, Service, ConfigMap, NetworkPolicy, or Upload
    name: str  # object name, or the upload directory's URL
    namespace: str | None
    reason: str

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "namespace": self.namespace, "reason": self.reason}


@dataclass
class Ledger:
    """What a submit wrote, in order: API objects in one namespace and one upload directory."""

    namespace: str
    objects: list[tuple[str, str]] = field(default_factory=list)
    upload_url: str | None = None
    upload_storage: Mapping[str, Any] = field(default_factory=dict)  # the plan's fsspec options
    _counter: SignalAfterWrite = field(default_factory=SignalAfterWrite)

    def wrote(self, kind: str, name: str) -> None:
        """Record an object about to be created (before the request: see the module docstring)."""
        self.objects.append((kind, name))

    def forget(self, kind: str, name: str) -> None:
        """The create of a recorded object was refused because one of that name existed: not ours."""
        self.objects.remove((kind, name))

    def uploading(self, url: str, storage: Mapping[str, Any]) -> None:
        self.upload_url, self.upload_storage = url, storage

    def step_done(self) -> None:
        """Called after each write; the test hook fires here."""
        self._counter.step_done()

    @property
    def writes(self) -> int:
        return self._counter.writes

    def roll_back(self, kube: Kube | None) -> list[Leftover]:
        """Delete every recorded object (the driver pod first: it is what runs) and the uploads.

        Returns what could not be removed. After the first "cannot reach the API server" no more API
        calls are tried: each would wait out the same timeout, and the user needs the report now.
        """
        left: list[Leftover] = []
        with signals_held():
            pods = [item for item in self.objects if item[0] == "Pod"]
            others = [item for item in reversed(self.objects) if item[0] != "Pod"]
            unreachable: str | None = None
            for kind, name in pods + others:
                if unreachable is not None or kube is None:
                    left.append(Leftover(kind, name, self.namespace, unreachable or "no connection"))
                    continue
                try:
                    _delete(kube, kind, name, self.namespace)
                except UnavailableError as exc:
                    unreachable = exc.message
                    left.append(Leftover(kind, name, self.namespace, exc.message))
                except KubeaccelError as exc:
                    left.append(Leftover(kind, name, self.namespace, exc.message))
            if self.upload_url is not None:
                problem = _remove_uploads(self.upload_url, self.upload_storage)
                if problem:
                    left.append(Leftover("Upload", self.upload_url, None, problem))
        return left

    def removed(self) -> str:
        parts = [f"{kind.lower()} {name}" for kind, name in self.objects]
        if self.upload_url:
            parts.append(f"uploads {self.upload_url}")
        return ", ".join(parts) or "nothing had been created yet"


def _delete(kube: Kube, kind: str, name: str, namespace: str) -> None:
    from lightkube.resources.core_v1 import ConfigMap, Pod, Service
    from lightkube.resources.networking_v1 import NetworkPolicy
    from lightkube.resources.resource_v1 import ResourceClaimTemplate

    resources: dict[str, Any] = {"Pod": Pod, "Service": Service, "ConfigMap": ConfigMap, "NetworkPolicy": NetworkPolicy,
                                 "ResourceClaimTemplate": ResourceClaimTemplate}
    if kind == "PodGroup":  # a gang's (kubeaccel.spark.gang): the core one or Volcano's, whichever it was
        from kubeaccel.spark.gangkube import NATIVE_PODGROUPS, VOLCANO_PODGROUPS

        for collection in (NATIVE_PODGROUPS, VOLCANO_PODGROUPS):
            # a group the server does not serve answers a bare 404, which reads as "unreachable": ask first
            if kube.serves(f"{collection.group}/{collection.version}", collection.plural) is False:
                continue
            with contextlib.suppress(NotFoundError):
                kube.delete(collection, name, namespace=namespace, missing_ok=True)
        return
    grace = 0 if kind == "Pod" else None
    kube.delete(resources[kind], name, namespace=namespace, grace_period=grace, missing_ok=True)


def _remove_uploads(url: str, storage: Mapping[str, Any]) -> str | None:
    """Remove the upload directory; None when it is gone, else why not."""
    from kubeaccel.spark import uploads

    try:
        fs, root = uploads.filesystem(url, storage)
        if fs.exists(root):
            fs.rm(root, recursive=True)
        if fs.exists(root):
            return "still there after removing it"
    except KubeaccelError as exc:
        return exc.message
    except Exception as exc:  # fsspec backends raise their own families (botocore, OSError, ...)
        return f"{type(exc).__name__}: {exc}"[:500]
    return None


def cleanup_command(left: list[Leftover]) -> str:
    """The commands that remove what a failed rollback left (kubectl for objects; the upload URL)."""
    commands = []
    by_namespace: dict[str, list[str]] = {}
    for item in left:
        if item.kind in _KUBECTL_KIND and item.namespace:
            by_namespace.setdefault(item.namespace, []).append(f"{_KUBECTL_KIND[item.kind]}/{item.name}")
    for namespace, names in by_namespace.items():
        commands.append(shlex.join(["kubectl", "delete", "--namespace", namespace, "--ignore-not-found", *names]))
    commands += [f"remove the upload directory {item.name}" for item in left if item.kind == "Upload"]
    return "; ".join(commands)


def failure_after_rollback(
    error: BaseException, ledger: Ledger, left: list[Leftover], pod_id: str | None
) -> BaseException:
    """The exception to raise once a rollback ran: the original error when all is clean (a signal
    becomes `SubmitInterruptedError`), else `RollbackIncompleteError` naming every leftover."""
    if isinstance(error, Interrupted):
        code = exit_code_for(error.signum)
        cause = f"interrupted by {signal.Signals(error.signum).name}"
    elif isinstance(error, KeyboardInterrupt):
        code, cause = exit_code_for(signal.SIGINT), "interrupted by SIGINT"
    elif isinstance(error, KubeaccelError):
        code, cause = error.exit_code, error.message
    else:
        return error  # a bug: keep its traceback; the rollback already ran
    if not left:
        if isinstance(error, KubeaccelError):
            return error
        return SubmitInterruptedError(f"{cause}: rolled back ({ledger.removed()})", exit_code=code)
    running = next((item for item in left if item.kind == "Pod"), None)
    lines = [f"{item.kind.lower()} {item.name}" + (f" in {item.namespace}" if item.namespace else "") for item in left]
    message = f"{cause}; the rollback could not remove:\n    " + "\n    ".join(
        f"{line} ({item.reason})" for line, item in zip(lines, left, strict=True)
    )
    if running is not None and pod_id is not None:
        message += f"\n  the driver pod {pod_id} may be running"
    return RollbackIncompleteError(
        message, hint=f"remove them with: {cleanup_command(left)}", exit_code=code, left=left, cause=cause
    )
