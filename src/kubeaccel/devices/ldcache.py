"""The dynamic linker's cache (``/etc/ld.so.cache``): which directories hold a node's libraries.

A driver installed outside the distribution's library directories (``/usr/local/nvidia/lib64`` on
GPU clouds, a driver container's tree) is found the way the dynamic linker and ``nvidia-ctk`` find
it: through the cache ``ldconfig`` builds from ``ld.so.conf``. Only glibc's format is read
(``glibc-ld.so.cache1.1``, glibc 2.32's default, also found after an old-format table); facts from
glibc's ``sysdeps/generic/dl-cache.h``:

* header: magic ``glibc-ld.so.cache`` (17 bytes), version ``1.1`` (3), ``nlibs`` (u32),
  ``len_strings`` (u32), flags (u8) and 3 bytes, ``extension_offset`` (u32), 3 unused u32: 48 bytes;
* then ``nlibs`` entries of 24 bytes: flags (i32), key (u32), value (u32), osversion (u32), hwcap (u64);
* key and value are offsets of NUL-terminated strings (the soname and its path), counted from the
  header's first byte.

The file is the node's, not the user's: anything that does not parse is treated as no cache (the
caller falls back to the default directories), never an error. Reads are bounded.
"""

from __future__ import annotations

import struct
from pathlib import Path, PurePosixPath

MAGIC = b"glibc-ld.so.cache1.1"
HEADER = struct.Struct("<17s3sII B3x I 12x")
ENTRY = struct.Struct("<iIIIQ")
MAX_BYTES = 16 * 1024 * 1024  # a full distribution's cache is well under 1 MiB


def entries(data: bytes) -> list[tuple[str, str]]:
    """(soname, path) of every entry, in the cache's order; ``[]`` when ``data`` is not a glibc cache."""
    start = data.find(MAGIC, 0, 1 << 20)  # after an old-format table, if any
    if start < 0 or len(data) < start + HEADER.size:
        return []
    _, _, nlibs, _, _, _ = HEADER.unpack_from(data, start)
    table = start + HEADER.size
    if nlibs > (len(data) - table) // ENTRY.size:
        return []
    out: list[tuple[str, str]] = []
    for i in range(nlibs):
        _, key, value, _, _ = ENTRY.unpack_from(data, table + i * ENTRY.size)
        name, path = _string(data, start + key), _string(data, start + value)
        if name and path and path.startswith("/"):
            out.append((name, path))
    return out


def _string(data: bytes, offset: int) -> str | None:
    end = data.find(b"\0", offset, offset + 4096)
    if offset >= len(data) or end < 0:
        return None
    try:
        return data[offset:end].decode()
    except UnicodeDecodeError:
        return None


def read(root: Path) -> list[tuple[str, str]]:
    """The entries of ``<root>/etc/ld.so.cache`` (paths as the node sees them); ``[]`` when absent or unreadable."""
    try:
        with open(root / "etc/ld.so.cache", "rb") as fh:
            return entries(fh.read(MAX_BYTES + 1)[:MAX_BYTES])
    except OSError:
        return []


def directories(root: Path, prefixes: tuple[str, ...]) -> tuple[str, ...]:
    """Directories of the cached libraries whose names start with one of ``prefixes``, in cache order."""
    found = (str(PurePosixPath(path).parent) for name, path in read(root) if name.startswith(prefixes))
    return tuple(dict.fromkeys(found))
