"""The checkpoint's journal on its own: durability rules, compaction, and damage of every kind.

Matrix: put/delete survive a reload; concurrent records share writes (group commit); compaction
keeps every claim and leaves one journal; a torn last record (a prefix, or zeros after a power
loss) is cut and the rest kept; a version-1 file is read; every other kind of damage — random
bytes, truncated JSON, a directory, wrong types, non-UTF-8, deep nesting, a bad checksum in the
middle — is one ``ConfigError``, and Hypothesis checks that for arbitrary bytes and JSON values
and that a valid journal cut anywhere loads the records before the cut.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeaccel.dra import checkpoint as ckpt
from kubeaccel.dra.checkpoint import Checkpoint, PreparedClaim, PreparedDevice
from kubeaccel.errors import ConfigError

SETTINGS = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def claim(i: int) -> PreparedClaim:
    uid = f"00000000-0000-0000-0000-{i:012d}"
    return PreparedClaim(uid, "ns", f"c{i}", (PreparedDevice(("req",), "node/example.com/sim", f"sim-{i % 4}",
                                                            (f"dra.kubeaccel.io/claim={uid}-sim-{i % 4}",)),),
                         {"cdiVersion": "0.5.0", "kind": "dra.kubeaccel.io/claim", "devices": []})


def load(directory: Path) -> Checkpoint:
    found = Checkpoint.load(directory)
    found.close()
    return found


def fill(directory: Path, puts: range, deletes: range = range(0)) -> Checkpoint:
    async def main() -> Checkpoint:
        cp = Checkpoint.load(directory)
        for i in puts:
            await cp.put(claim(i))
        for i in deletes:
            await cp.delete(claim(i).uid)
        cp.close()
        return cp

    return asyncio.run(main())


def journal(directory: Path) -> Path:
    (path,) = directory.glob("journal-*.log")
    return path


def test_put_and_delete_survive_a_reload(tmp_path: Path) -> None:
    fill(tmp_path, range(5), range(1, 3))
    assert sorted(load(tmp_path).claims) == [claim(i).uid for i in (0, 3, 4)]
    assert load(tmp_path).claims[claim(3).uid] == claim(3)


def test_concurrent_records_share_writes(tmp_path: Path) -> None:
    async def main() -> Checkpoint:
        cp = Checkpoint.load(tmp_path)
        await asyncio.gather(*(cp.put(claim(i)) for i in range(500)))
        cp.close()
        return cp

    cp = asyncio.run(main())
    assert len(cp.claims) == 500
    assert cp.writes <= 3  # one fdatasync per batch, not per claim
    assert len(load(tmp_path).claims) == 500


def test_compaction_keeps_every_claim_and_one_journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ckpt, "COMPACT_MIN_RECORDS", 10)
    cp = fill(tmp_path, range(100), range(0, 90))  # churn: the journal outgrows twice the live claims
    assert cp.compactions >= 1
    found = load(tmp_path)
    assert sorted(found.claims) == sorted(claim(i).uid for i in range(90, 100))
    snapshot = json.loads((tmp_path / "checkpoint.json").read_text())
    assert journal(tmp_path).name == f"journal-{snapshot['journal']}.log"
    assert found.records < 10 + 2 * len(found.claims)


@pytest.mark.parametrize("tail", ["prefix", "zeros", "prefix and zeros"])
def test_a_torn_last_record_is_cut_and_the_rest_kept(tmp_path: Path, tail: str,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    fill(tmp_path, range(3))
    path = journal(tmp_path)
    intact = path.read_bytes()
    torn = ckpt._record({"put": {"uid": "x"}})[:17]
    path.write_bytes(intact + {"prefix": torn, "zeros": b"\0" * 300, "prefix and zeros": torn + b"\0" * 50}[tail])
    with caplog.at_level(logging.WARNING):
        assert sorted(load(tmp_path).claims) == [claim(i).uid for i in range(3)]
    assert "torn last record" in caplog.text
    assert path.read_bytes() == intact  # cut, so the next append follows a whole record
    fill(tmp_path, range(3, 4))
    assert len(load(tmp_path).claims) == 4


def test_version_1_is_read(tmp_path: Path) -> None:
    from dataclasses import asdict

    (tmp_path / "checkpoint.json").write_text(json.dumps({"version": 1, "claims": {claim(7).uid: asdict(claim(7))}}))
    assert load(tmp_path).claims == {claim(7).uid: claim(7)}
    fill(tmp_path, range(2))  # an upgraded driver journals on top of the old file
    assert sorted(load(tmp_path).claims) == sorted([claim(0).uid, claim(1).uid, claim(7).uid])


def _valid_document() -> dict[str, Any]:
    from dataclasses import asdict

    return {"version": 2, "journal": 0, "claims": {claim(1).uid: asdict(claim(1))}}


def _damage(tmp_path: Path, kind: str) -> None:
    snapshot = tmp_path / "checkpoint.json"
    doc = _valid_document()
    entry = doc["claims"][claim(1).uid]
    if kind == "random bytes":
        snapshot.write_bytes(bytes(range(256)) * 8)
    elif kind == "truncated":
        snapshot.write_text(json.dumps(doc)[:100])
    elif kind == "a directory":
        snapshot.mkdir()
    elif kind == "non-UTF-8":
        snapshot.write_bytes(json.dumps(doc).encode().replace(b'"ns"', b'"\xff\xfe"'))
    elif kind == "deep nesting":
        snapshot.write_text('{"version": 2, "claims": ' + "[" * 100_000 + "]" * 100_000 + "}")
    elif kind == "a list":
        snapshot.write_text("[]")
    elif kind == "another version":
        snapshot.write_text(json.dumps({**doc, "version": 3}))
    elif kind == "claims a list":
        snapshot.write_text(json.dumps({**doc, "claims": []}))
    elif kind == "devices a string":
        entry["devices"] = "sim-0"
        snapshot.write_text(json.dumps(doc))
    elif kind == "uid a number":
        entry["uid"] = 5
        snapshot.write_text(json.dumps(doc))
    elif kind == "requests of numbers":
        entry["devices"][0]["requests"] = [1]
        snapshot.write_text(json.dumps(doc))
    elif kind == "a UID that is a path":
        doc["claims"] = {"../../etc": {**entry, "uid": "../../etc"}}
        snapshot.write_text(json.dumps(doc))
    elif kind == "filed under another UID":
        doc["claims"] = {claim(2).uid: entry}
        snapshot.write_text(json.dumps(doc))
    elif kind == "journal with a bad record in the middle":
        fill(tmp_path, range(3))
        lines = journal(tmp_path).read_bytes().split(b"\n")
        lines[1] = lines[1].replace(b"sim-1", b"sim-9")
        journal(tmp_path).write_bytes(b"\n".join(lines))
    elif kind == "journal of random bytes":
        (tmp_path / "journal-0.log").write_bytes(bytes(range(256)) * 8)
    elif kind == "journal a directory":
        (tmp_path / "journal-0.log").mkdir()
    else:
        raise AssertionError(kind)


@pytest.mark.parametrize("kind", [
    "random bytes", "truncated", "a directory", "non-UTF-8", "deep nesting", "a list", "another version",
    "claims a list", "devices a string", "uid a number", "requests of numbers", "a UID that is a path",
    "filed under another UID", "journal with a bad record in the middle", "journal of random bytes",
    "journal a directory",
])
def test_damage_is_one_clear_error(tmp_path: Path, kind: str) -> None:
    _damage(tmp_path, kind)
    with pytest.raises(ConfigError, match="is unreadable") as info:
        Checkpoint.load(tmp_path)
    assert info.value.hint and "move the state directory's files away" in info.value.hint


@SETTINGS
@given(data=st.binary(max_size=2000))
def test_any_bytes_as_the_snapshot_load_or_fail_clearly(tmp_path: Path, data: bytes) -> None:
    (tmp_path / "checkpoint.json").write_bytes(data)
    try:
        found = load(tmp_path)
    except ConfigError:
        return
    assert isinstance(found.claims, dict)  # (a few byte strings are a valid empty checkpoint)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                   max_size=4), max_leaves=20)


@SETTINGS
@given(value=_json, where=st.sampled_from(["document", "claims", "claim", "uid", "devices", "device", "requests",
                                           "spec", "journal", "version"]))
def test_any_json_in_any_place_loads_or_fails_clearly(tmp_path: Path, value: Any, where: str) -> None:
    doc = _valid_document()
    entry = doc["claims"][claim(1).uid]
    if where == "document":
        doc = value
    elif where in ("claims", "journal", "version"):
        doc[where] = value
    elif where == "claim":
        doc["claims"][claim(1).uid] = value
    elif where in ("uid", "devices", "spec"):
        entry[where] = value
    elif where == "device":
        entry["devices"] = [value]
    else:
        entry["devices"][0]["requests"] = value
    (tmp_path / "checkpoint.json").write_text(json.dumps(doc))
    try:
        found = load(tmp_path)
    except ConfigError:
        return
    for uid, c in found.claims.items():  # what loads is well-typed
        assert c.uid == uid and all(isinstance(r, str) for d in c.devices for r in d.requests)


@SETTINGS
@given(suffix=st.binary(min_size=1, max_size=300))
def test_any_bytes_after_a_valid_journal_keep_it_or_fail_clearly(tmp_path: Path, suffix: bytes) -> None:
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    fill(tmp_path, range(3), range(1, 2))
    path = journal(tmp_path)
    path.write_bytes(path.read_bytes() + suffix)
    try:
        found = load(tmp_path)
    except ConfigError:
        return
    assert sorted(found.claims) == [claim(0).uid, claim(2).uid]


@SETTINGS
@given(cut=st.integers(min_value=0, max_value=10**6))
def test_a_journal_cut_anywhere_loads_the_records_before_the_cut(tmp_path: Path, cut: int) -> None:
    for leftover in tmp_path.iterdir():
        leftover.unlink()
    fill(tmp_path, range(4), range(1, 2))
    path = journal(tmp_path)
    data = path.read_bytes()
    cut %= len(data) + 1
    path.write_bytes(data[:cut])
    whole = data[:cut].count(b"\n")  # records before the cut: put 0, put 1, put 2, put 3, del 1
    expected = {0: set(), 1: {0}, 2: {0, 1}, 3: {0, 1, 2}, 4: {0, 1, 2, 3}, 5: {0, 2, 3}}[whole]
    assert set(load(tmp_path).claims) == {claim(i).uid for i in expected}


def test_a_journal_removed_under_the_driver_fails_that_write_and_the_next_starts_anew(tmp_path: Path) -> None:
    async def main() -> None:
        cp = Checkpoint.load(tmp_path)
        await cp.put(claim(0))
        journal(tmp_path).unlink()  # an operator, a cleanup job
        with pytest.raises(OSError, match="cannot save the checkpoint"):
            await cp.put(claim(1))
        assert sorted(cp.claims) == [claim(0).uid]  # memory follows the disk
        await cp.put(claim(2))  # a new snapshot with everything, then a new journal
        cp.close()
        assert cp.compactions == 1

    asyncio.run(main())
    assert sorted(load(tmp_path).claims) == [claim(0).uid, claim(2).uid]
