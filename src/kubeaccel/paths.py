"""A path a user wrote, as the shell would read it: one place for `~` and for what no file system holds;
and which file stands at a path (the node-side daemons' sockets, told apart from a later one there)."""

from __future__ import annotations

import os
from pathlib import Path

from kubeaccel.errors import ConfigError

NAME_MAX = 255  # bytes in one path component, on Linux file systems
PATH_MAX = 4096  # bytes in a whole path


def user_path(value: str | os.PathLike[str], what: str) -> Path:
    """`~` and `~user` expanded as a shell does (an unknown user leaves the text as written, where
    pathlib's `expanduser` raises RuntimeError), then checked by `check_path`."""
    text = os.fspath(value)
    check_path(text, what)  # before expanding: a NUL byte after `~user` is a ValueError there
    expanded = os.path.expanduser(text)
    check_path(expanded, what)
    return Path(expanded)


def check_path(value: str | os.PathLike[str], what: str) -> None:
    """What no file system can name — a NUL byte, a component over 255 bytes, a path over 4096 — is a
    ConfigError naming `what`, so callers' later `is_file()` and `open()` never meet ValueError or
    ENAMETOOLONG."""
    text = os.fspath(value)
    if "\x00" in text:
        raise ConfigError(f"{what} {text[:100]!r} contains a NUL byte", hint="give a file system path")
    encoded = os.fsencode(text)
    if len(encoded) > PATH_MAX or any(len(part) > NAME_MAX for part in encoded.split(b"/")):
        raise ConfigError(
            f"{what} {text[:100]!r}... is longer than a file system allows",
            hint=f"each name is at most {NAME_MAX} bytes and a path at most {PATH_MAX}",
        )


def file_identity(path: Path) -> tuple[int, int] | None:
    """Which file is at ``path``: a freed inode number may be reused at once, the ctime is not."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_ctime_ns)
