"""The linker-cache reader (``kubeaccel.devices.ldcache``) against caches the real ``ldconfig`` builds,
and against any bytes at all (the node's file: never an error, at worst no entries)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from fixtures.nvdriver import VERSION, elf_shared_object
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel.devices import ldcache


def _cache(tmp_path: Path, fmt: str) -> Path:
    lib = tmp_path / "opt/drv/lib64"
    lib.mkdir(parents=True)
    for stem in ("libcuda", "libnvidia-ml"):
        (lib / f"{stem}.so.{VERSION}").write_bytes(elf_shared_object(f"{stem}.so.1"))
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/ld.so.conf").write_text("/opt/drv/lib64\n")
    subprocess.run(["ldconfig", "-r", str(tmp_path), f"--format={fmt}"], check=True, capture_output=True, timeout=60)
    return tmp_path


def test_reads_what_ldconfig_wrote_in_each_format(tmp_path: Path) -> None:
    for fmt in ("new", "compat"):  # compat: an old-format table before the new one
        root = _cache(tmp_path / fmt, fmt)
        found = dict(ldcache.read(root))
        assert found["libcuda.so.1"] == "/opt/drv/lib64/libcuda.so.1", fmt
        assert found["libnvidia-ml.so.1"] == "/opt/drv/lib64/libnvidia-ml.so.1", fmt
        assert ldcache.directories(root, ("libnvidia",)) == ("/opt/drv/lib64",)


def test_no_cache_is_no_entries(tmp_path: Path) -> None:
    assert ldcache.read(tmp_path) == []
    (tmp_path / "etc/ld.so.cache").mkdir(parents=True)  # a directory where the file should be
    assert ldcache.read(tmp_path) == []


@settings(deadline=None, max_examples=300)
@given(st.binary(max_size=400), st.integers(min_value=0, max_value=2**32 - 1))
def test_any_bytes_give_entries_or_none_never_an_error(junk: bytes, nlibs: int) -> None:
    # Garbage after a valid-looking header too: counts and offsets beyond the data are refused.
    header = ldcache.MAGIC[:17] + b"1.1" + nlibs.to_bytes(4, "little") + bytes(24)
    for data in (junk, header + junk, junk + header + junk):
        for name, path in ldcache.entries(data):
            assert isinstance(name, str) and path.startswith("/")
