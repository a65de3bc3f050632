"""Prepared claims on disk, so a daemon restart neither loses nor duplicates them: a snapshot and a journal.

``checkpoint.json`` is a snapshot (``{"version": 2, "journal": G, "claims": {uid: claim}}``) and
``journal-G.log`` the changes since, one record a line: ``kdj1 <crc32> {"put": claim}`` or
``{"del": uid}``. A prepare or unprepare appends one record and ``fdatasync``s, O(1) whatever the
number of claims; records that arrive while a write is under way go out together in the next one
(group commit), so a call naming a thousand claims costs a few writes, not a thousand. Writes run
in a thread, never on the event loop; the in-memory ``claims`` change only once their record is on
disk. When the journal holds more than ``max(COMPACT_MIN_RECORDS, 2 * claims)`` records, the
claims are written as a new snapshot with the next journal number (temp file, fsync, rename, fsync
of the directory) and the old journal is removed: amortized O(1) per record.

Crash safety: a snapshot replaces the old one atomically and names its journal, so a crash in
the middle of a compaction leaves either the old snapshot with its journal or the new one with an
empty journal (journals of other numbers are leftovers and removed at load). A kill or power loss
during an append can leave a torn last record (no newline, or zeros); ``load`` cuts it off, keeps
every record before it, and logs it. Anything else that is not what we write — random bytes, a
complete record with a bad checksum, a wrong type, non-UTF-8, a directory where a file belongs — is
one ``ConfigError`` (exit 2) naming the file, never a traceback. Temp files of interrupted writes
are removed at load. Version 1 (one JSON file, rewritten whole) is read and becomes snapshot 0.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import tempfile
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from kubeaccel.errors import ConfigError

log = logging.getLogger(__name__)

VERSION = 2
FILE_NAME = "checkpoint.json"
JOURNAL_PREFIX = "journal-"
JOURNAL_SUFFIX = ".log"
TEMP_PREFIX = ".checkpoint."
MAGIC = b"kdj1 "
COMPACT_MIN_RECORDS = 4096
# A Kubernetes UID is a UUID; anything else could not name a claim, and must not name a file.
UID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,252}")
_JOURNAL = re.compile(re.escape(JOURNAL_PREFIX) + r"(\d{1,18})" + re.escape(JOURNAL_SUFFIX))
_HINT = ("it was damaged outside the daemon; move the state directory's files away to start empty (prepared "
         "claims are then prepared again on the kubelet's next call)")


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
    # Who holds it, as the claim said at prepare time (``kubeaccel_device_allocated`` after a restart): the pods
    # in ``status.reservedFor`` and the claim's ``spark-app-selector`` label. Optional: older records lack them.
    pods: tuple[str, ...] = ()
    app: str = ""

    @classmethod
    def from_dict(cls, data: object) -> PreparedClaim:
        """Strictly: every field of the type we write (``ValueError`` otherwise)."""
        if not isinstance(data, dict):
            raise ValueError("a claim is not an object")
        uid = _text(data, "uid")
        if not UID.fullmatch(uid):
            raise ValueError(f"{uid[:64]!r} is not a claim UID")
        devices = data.get("devices")
        if not isinstance(devices, list):
            raise ValueError(f"claim {uid}: devices is not a list")
        spec = data.get("spec", {})
        if not isinstance(spec, dict):
            raise ValueError(f"claim {uid}: spec is not an object")
        pods = _texts(data, "pods") if "pods" in data else ()
        app = _text(data, "app") if "app" in data else ""
        return cls(uid, _text(data, "namespace"), _text(data, "name"),
                   tuple(_device(uid, d) for d in devices), spec, pods, app)


def _text(data: Mapping[str, Any], key: str) -> str:
    value = data.get(key)
    if not isinstance(value, str):
        raise ValueError(f"{key} is missing or not a string")
    return value


def _texts(data: Mapping[str, Any], key: str) -> tuple[str, ...]:
    value = data.get(key)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError(f"{key} is not a list of strings")
    return tuple(value)


def _device(uid: str, data: object) -> PreparedDevice:
    if not isinstance(data, dict):
        raise ValueError(f"claim {uid}: a device is not an object")
    return PreparedDevice(_texts(data, "requests"), _text(data, "pool"), _text(data, "device"),
                          _texts(data, "cdi_ids"))


def _record(op: Mapping[str, Any]) -> bytes:
    body = json.dumps(op, sort_keys=True, separators=(",", ":")).encode()  # ASCII: never a raw newline
    return MAGIC + b"%08x " % zlib.crc32(body) + body + b"\n"


def _parse_record(line: bytes) -> tuple[str, PreparedClaim | str]:
    """``("put", claim)`` or ``("del", uid)`` from one complete line (without its newline)."""
    if not line.startswith(MAGIC) or len(line) < len(MAGIC) + 9 or line[len(MAGIC) + 8:len(MAGIC) + 9] != b" ":
        raise ValueError("not a journal record")
    body = line[len(MAGIC) + 9:]
    if line[len(MAGIC):len(MAGIC) + 8] != b"%08x" % zlib.crc32(body):
        raise ValueError("checksum mismatch")
    op = json.loads(body.decode("utf-8"))
    if not isinstance(op, dict) or len(op) != 1:
        raise ValueError("a record is not one operation")
    if "put" in op:
        return "put", PreparedClaim.from_dict(op["put"])
    uid = op.get("del")
    if not isinstance(uid, str):
        raise ValueError("a record is neither put nor del")
    return "del", uid


def _torn(tail: bytes) -> bool:
    """Whether bytes after the last newline are what an interrupted append leaves: a record's
    beginning, possibly followed by zeros (a power loss), rather than someone else's bytes."""
    head = tail.rstrip(b"\0")
    return MAGIC.startswith(head[: len(MAGIC)]) and b"\0" not in head


def _damaged(path: Path, why: object) -> ConfigError:
    return ConfigError(f"checkpoint {path} is unreadable ({str(why)[:300]})", hint=_HINT)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:  # a directory, no permission, an I/O error
        raise _damaged(path, exc.strerror or exc) from None


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


Pending = tuple[bytes, Callable[[], None], "asyncio.Future[None]"]


class Checkpoint:
    """The prepared claims, keyed by UID: ``claims`` is what is on disk; ``put`` and ``delete`` change both."""

    def __init__(self, directory: Path, claims: dict[str, PreparedClaim] | None = None, journal: int = 0) -> None:
        self.directory = directory
        self.path = directory / FILE_NAME
        self.claims: dict[str, PreparedClaim] = claims or {}
        self.journal = journal  # the number of the journal appended to
        self.records = 0  # records in that journal
        self.compactions = 0
        self.writes = 0  # journal appends (each one fdatasync), however many records each carried
        self._fd: int | None = None
        self._retry_compaction_at = 0  # after a failed compaction: not before the journal holds this many
        self._stale = False  # the journal's tail is unknown (a failed write) or the file is gone: compact first
        self._pending: list[Pending] = []
        self._flusher: asyncio.Task[None] | None = None

    @property
    def journal_path(self) -> Path:
        return self.directory / f"{JOURNAL_PREFIX}{self.journal}{JOURNAL_SUFFIX}"

    # -- loading ----------------------------------------------------------------------------------

    @classmethod
    def load(cls, directory: Path) -> Checkpoint:
        """Read the snapshot and replay its journal (missing: empty); damage is one ``ConfigError``."""
        try:
            directory.mkdir(parents=True, exist_ok=True)
            names = os.listdir(directory)
        except OSError as exc:
            raise ConfigError(f"cannot use the state directory {directory}: {exc.strerror or exc}",
                              hint="pass --state-dir with a writable directory (the DaemonSet mounts a hostPath)") \
                from None
        found = cls(directory)
        for name in names:
            if name.startswith(TEMP_PREFIX) and name.endswith(".tmp"):
                log.info("removing %s, left by an interrupted write", directory / name)
                _unlink(directory / name)
        found._read_snapshot()
        found._replay()
        for name in names:
            match = _JOURNAL.fullmatch(name)
            if match and int(match[1]) != found.journal:
                _unlink(directory / name)  # an older compaction's journal, or a newer one that never got its snapshot
        found._open_journal()
        return found

    def _read_snapshot(self) -> None:
        data = _read(self.path)
        if data is None:
            return
        try:
            document = json.loads(data.decode("utf-8"))
            if not isinstance(document, dict):
                raise ValueError("not a JSON object")
            version = document.get("version")
            if version not in (1, VERSION):
                raise ValueError(f"version {str(version)[:20]!r}")
            journal = document.get("journal", 0) if version == VERSION else 0
            if not isinstance(journal, int) or isinstance(journal, bool) or not 0 <= journal < 10**18:
                raise ValueError("journal is not a number")
            claims = document.get("claims")
            if not isinstance(claims, dict):
                raise ValueError("claims is not an object")
            parsed = {uid: PreparedClaim.from_dict(c) for uid, c in claims.items()}
            if any(uid != c.uid for uid, c in parsed.items()):
                raise ValueError("a claim is filed under another UID")
        except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            raise _damaged(self.path, exc) from None
        self.claims, self.journal = parsed, journal

    def _replay(self) -> None:
        path = self.journal_path
        data = _read(path)
        if data is None:
            return
        end = data.rfind(b"\n") + 1
        tail = data[end:]
        if tail and not _torn(tail):
            raise _damaged(path, f"{len(tail)} bytes after the last record are not a record")
        for number, line in enumerate(data[:end].split(b"\n")[:-1], start=1):
            try:
                op, value = _parse_record(line)
            except (ValueError, RecursionError) as exc:
                raise _damaged(path, f"record {number}: {exc}") from None
            if op == "put":
                assert isinstance(value, PreparedClaim)
                self.claims[value.uid] = value
            else:
                assert isinstance(value, str)
                self.claims.pop(value, None)
            self.records += 1
        if tail:
            log.warning("journal %s: cutting off a torn last record (%d bytes, an interrupted write); "
                        "%d records kept", path, len(tail), self.records)
            try:
                os.truncate(path, end)
            except OSError as exc:
                raise _damaged(path, f"cannot cut off its torn end: {exc.strerror or exc}") from None

    def _open_journal(self) -> None:
        try:
            self._open_journal_or_raise()
        except OSError as exc:
            raise _damaged(self.journal_path, exc.strerror or exc) from None

    # -- writing ----------------------------------------------------------------------------------

    async def put(self, claim: PreparedClaim) -> None:
        """Record a prepared claim; ``OSError`` when it could not be made durable (then nothing changed)."""
        def apply() -> None:
            self.claims[claim.uid] = claim

        await self._commit(_record({"put": asdict(claim)}), apply)

    async def delete(self, uid: str) -> None:
        """Forget a claim (a no-op record when it is not there: cheap, and keeps the order of calls)."""
        if uid not in self.claims:
            return

        def apply() -> None:
            self.claims.pop(uid, None)

        await self._commit(_record({"del": uid}), apply)

    async def _commit(self, line: bytes, apply: Callable[[], None]) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((line, apply, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush())
        await asyncio.shield(future)  # a cancelled caller leaves the write to finish; memory follows the disk

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                if self._stale:
                    await asyncio.to_thread(self._compact_sync, dict(self.claims))
                await asyncio.to_thread(self._append_sync, b"".join(line for line, _, _ in batch))
            except Exception as exc:  # every waiter gets an answer, whatever went wrong
                if not isinstance(exc, OSError):
                    log.exception("checkpoint write failed")
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                for _, _, future in batch:
                    if not future.done():
                        future.set_exception(OSError(getattr(exc, "errno", None) or 0,
                                                     f"cannot save the checkpoint in {self.directory}: {why}"))
                continue
            for _, apply, future in batch:
                apply()
                if not future.done():
                    future.set_result(None)
            self.records += len(batch)
            if self.records > max(COMPACT_MIN_RECORDS, 2 * len(self.claims), self._retry_compaction_at):
                try:
                    await asyncio.to_thread(self._compact_sync, dict(self.claims))
                except OSError as exc:  # the journal still holds everything: log, and wait before a retry
                    log.warning("cannot compact the checkpoint in %s: %s", self.directory, exc)
                    self._retry_compaction_at = self.records + max(COMPACT_MIN_RECORDS, len(self.claims))

    def _append_sync(self, data: bytes) -> None:
        if self._fd is None:
            raise OSError(0, "the checkpoint is closed")
        try:
            _write_all(self._fd, data)
            os.fdatasync(self._fd)
            self.writes += 1
            if os.fstat(self._fd).st_nlink == 0:  # the file (or its directory) was removed under us
                raise FileNotFoundError(2, f"{self.journal_path} was removed")
        except OSError:
            self._stale = True  # the tail may hold part of this batch: the next write starts a new journal
            raise

    def _compact_sync(self, claims: Mapping[str, PreparedClaim]) -> None:
        """Write ``claims`` as the snapshot of the next journal number and switch to that journal."""
        following = self.journal + 1
        document = {"version": VERSION, "journal": following,
                    "claims": {uid: asdict(c) for uid, c in sorted(claims.items())}}
        fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(document, fh, sort_keys=True, separators=(",", ":"))
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            _unlink(Path(tmp))
            raise
        _fsync_dir(self.directory)
        old_path, old_fd = self.journal_path, self._fd
        self.journal, self.records, self._stale, self._retry_compaction_at = following, 0, False, 0
        if old_fd is not None:
            os.close(old_fd)
        self._fd = None
        _unlink(old_path)
        self._open_journal_or_raise()
        self.compactions += 1

    def _open_journal_or_raise(self) -> None:
        self._fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW,
                           0o600)
        _fsync_dir(self.directory)

    async def drain(self) -> None:
        """Wait for every queued write (stop)."""
        while self._flusher is not None and not self._flusher.done():
            await asyncio.shield(self._flusher)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _unlink(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError as exc:
        log.warning("cannot remove %s: %s", path, exc.strerror or exc)
