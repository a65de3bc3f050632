"""`user_path`: whatever a user writes ends as a path or a ConfigError, never pathlib's RuntimeError; `file_identity`
of a replaced file is not the one before."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeaccel.errors import ConfigError
from kubeaccel.paths import file_identity, user_path


@given(st.text(max_size=40).map(lambda t: "~" + t) | st.text(max_size=40) | st.text(min_size=1).map(lambda t: t * 300))
def test_any_text_is_a_path_or_a_config_error(text: str) -> None:
    try:
        path = user_path(text, "--thing")
    except ConfigError as exc:
        assert "--thing" in exc.message
        encoded = os.fsencode(text)
        assert "\x00" in text or len(encoded) > 4096 or any(len(part) > 255 for part in encoded.split(b"/"))
    else:
        assert isinstance(path, Path)


def test_home_and_unknown_users_as_a_shell_reads_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/someone")
    assert user_path("~/x", "f") == Path("/home/someone/x")
    assert user_path("~no-such-user-here/x", "f") == Path("~no-such-user-here/x")
    assert user_path(Path("rel"), "f") == Path("rel")
    with pytest.raises(ConfigError):
        user_path("~/a\x00b", "f")
    assert os.fspath(user_path("/abs", "f")) == "/abs"
    with pytest.raises(ConfigError, match="longer than a file system allows"):
        user_path("x" * 256, "f")
    with pytest.raises(ConfigError, match="longer than a file system allows"):
        user_path("/".join(["x" * 200] * 21), "f")
    assert user_path("x" * 255, "f") == Path("x" * 255)


def test_file_identity_tells_a_replaced_file_from_the_one_before(tmp_path: Path) -> None:
    path = tmp_path / "x.sock"
    assert file_identity(path) is None
    path.write_text("a")
    first = file_identity(path)
    assert first is not None and file_identity(path) == first
    other = tmp_path / "new"
    other.write_text("b")
    os.replace(other, path)  # a new server's socket in the same place
    assert file_identity(path) not in (None, first)


def test_the_user_file_reader_takes_text_up_to_its_bound_and_names_the_rest(tmp_path: Path) -> None:
    from kubeaccel.errors import KubeaccelError, NotFoundError
    from kubeaccel.paths import read_user_text

    exact = tmp_path / "exact"
    exact.write_text("é" * 8)  # 16 bytes
    assert read_user_text(exact, "--x", max_bytes=16) == "é" * 8
    with pytest.raises(ConfigError, match=r"--x '.*exact' is larger than 15 bytes"):
        read_user_text(exact, "--x", max_bytes=15)
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    assert read_user_text(empty, "--x", allow_empty=True) == ""
    with pytest.raises(ConfigError, match="is empty"):
        read_user_text(empty, "--x")
    with pytest.raises(NotFoundError, match="does not exist"):
        read_user_text(tmp_path / "absent", "--x", missing=NotFoundError)
    with pytest.raises(KubeaccelError) as caught:
        read_user_text(tmp_path / "absent", "--x")
    assert caught.value.exit_code == 2


def test_a_fifo_with_a_writer_is_refused_without_reading_it(tmp_path: Path) -> None:
    from kubeaccel.paths import read_user_text

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer = os.open(fifo, os.O_WRONLY)  # a writer that never writes nor closes: a blocking read waits forever
    try:
        with pytest.raises(ConfigError, match="is a FIFO, not a regular file"):
            read_user_text(fifo, "--x")
    finally:
        os.close(writer)
        os.close(reader)
