"""`user_path`: whatever a user writes ends as a path or a ConfigError, never pathlib's RuntimeError."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeaccel.errors import ConfigError
from kubeaccel.paths import user_path


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
