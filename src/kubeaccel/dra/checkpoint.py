"""Prepared claims on disk, so a daemon restart neither loses nor duplicates them.

One JSON file, replaced atomically (temp file, fsync, rename, fsync of the directory) before the
kubelet gets its answer. A claim is recorded with exactly what was answered, so a repeated
NodePrepareResources after a restart returns the same devices without asking the API server.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubeaccel.errors import ConfigError

VERSION = 1
FILE_NAME = "checkpoint.json"


@dataclass(frozen=True)
class PreparedDevice:
    requests: tuple[str, ...]
    pool: str
    device: str
    cdi_ids: tuple[str, ...]


@dataclass(frozen=True)
class PreparedClaim:
    uid: str
    namespace: str
    name: str
    devices: tuple[PreparedDevice, ...]
    spec: Mapping[str, Any] = field(default_factory=dict)  # the CDI spec, rewritten if the CDI dir was cleared

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PreparedClaim:
        return cls(
            uid=str(data["uid"]),
            namespace=str(data["namespace"]),
            name=str(data["name"]),
            devices=tuple(
                PreparedDevice(tuple(d["requests"]), str(d["pool"]), str(d["device"]), tuple(d["cdi_ids"]))
                for d in data["devices"]
            ),
            spec=dict(data.get("spec") or {}),
        )


class Checkpoint:
    """The prepared claims, keyed by UID; ``save`` is the only write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.claims: dict[str, PreparedClaim] = {}

    @classmethod
    def load(cls, directory: Path) -> Checkpoint:
        """Read ``directory/checkpoint.json`` (missing: empty); an unreadable file is a clear error."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot create the state directory {directory}: {exc.strerror or exc}",
                hint="pass --state-dir with a writable directory (the DaemonSet mounts a hostPath)",
            ) from None
        found = cls(directory / FILE_NAME)
        try:
            text = found.path.read_text()
        except FileNotFoundError:
            return found
        try:
            data = json.loads(text)
            if data.get("version") != VERSION:
                raise ValueError(f"version {data.get('version')!r}")
            found.claims = {uid: PreparedClaim.from_dict(c) for uid, c in data["claims"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise ConfigError(
                f"checkpoint {found.path} is unreadable ({exc})",
                hint="it was damaged outside the daemon; move it away to start empty (prepared claims are then "
                "prepared again on the kubelet's next call)",
            ) from None
        return found

    def save(self) -> None:
        document = {"version": VERSION, "claims": {uid: asdict(c) for uid, c in sorted(self.claims.items())}}
        directory = self.path.parent
        fd, tmp = tempfile.mkstemp(prefix=".checkpoint.", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(document, fh, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
