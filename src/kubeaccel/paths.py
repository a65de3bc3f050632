"""A path a user wrote, as the shell would read it: one place for `~` and for what no file system holds;
the one reader of every file a user names (bounded, never blocking on a FIFO, text checked);
and which file stands at a path (the node-side daemons' sockets, told apart from a later one there)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from kubeaccel.errors import ConfigError, KubeaccelError

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


FILE_MAX_BYTES = 4 * 1024 * 1024  # any file a user names: properties, templates, kubeconfigs, configs, certificates


def read_user_bytes(
    path: str | os.PathLike[str],
    what: str,
    *,
    max_bytes: int = FILE_MAX_BYTES,
    hint: str = "check the path",
    missing: type[KubeaccelError] = ConfigError,
) -> bytes:
    """The content of a file a user named (``what`` says which option or key named it), or a ConfigError
    (``missing`` when nothing is there) naming both: a directory, a FIFO, a device or a socket, an
    unreadable file, or one over ``max_bytes``. Opened with O_NONBLOCK and checked with fstat before the
    first read, so a FIFO or a terminal never blocks the command."""
    text = os.fspath(path)
    check_path(text, what)
    where = f"{what} {text[:200]!r}"
    try:
        fd = os.open(text, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except FileNotFoundError:
        raise missing(f"{where} does not exist", hint=hint) from None
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror}", hint=hint) from None
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ConfigError(f"{where} is a directory, not a file", hint=hint)
        if not stat.S_ISREG(mode):
            raise ConfigError(
                f"{where} is {_kind(mode)}, not a regular file", hint=f"{hint}; give a file saved on disk"
            )
        chunks: list[bytes] = []
        size = 0
        while size <= max_bytes:
            chunk = os.read(fd, max_bytes + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    except OSError as exc:
        raise ConfigError(f"{where} cannot be read: {exc.strerror}", hint=hint) from None
    finally:
        os.close(fd)
    if size > max_bytes:
        raise ConfigError(f"{where} is larger than {_size(max_bytes)}", hint=f"{hint}; is it the right file?")
    return b"".join(chunks)


def read_user_text(
    path: str | os.PathLike[str],
    what: str,
    *,
    max_bytes: int = FILE_MAX_BYTES,
    hint: str = "check the path",
    allow_empty: bool = False,
    missing: type[KubeaccelError] = ConfigError,
) -> str:
    """``read_user_bytes`` as UTF-8 text: a NUL byte (a binary file), bytes that are not UTF-8, and (unless
    ``allow_empty``) a file with nothing but white space are each a ConfigError naming ``what`` and the file."""
    data = read_user_bytes(path, what, max_bytes=max_bytes, hint=hint, missing=missing)
    where = f"{what} {os.fspath(path)[:200]!r}"
    if b"\0" in data:
        raise ConfigError(f"{where} is a binary file, not text", hint=f"{hint}; is it the right file?")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{where} is not UTF-8 text (bad byte at offset {exc.start})", hint=f"{hint}; save it as UTF-8"
        ) from None
    if not allow_empty and not text.strip():
        raise ConfigError(f"{where} is empty", hint=hint)
    return text


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a socket" if stat.S_ISSOCK(mode) else "a special file"


def _size(n: int) -> str:
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    return f"{n // 1024} KiB" if n % 1024 == 0 else f"{n} bytes"
