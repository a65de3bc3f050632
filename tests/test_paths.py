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
