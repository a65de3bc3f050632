"""The image builders' prune (deploy/debroot.py): older builds go, but never one another process is building or
using (its lock is held), nor a directory with a mount point below it (rmtree would delete the mounted files)."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
sys.path.insert(0, str(DEPLOY))
import debroot  # noqa: E402 - deploy/debroot.py is a script module, not part of the package

PREFIX = "kubeaccel-spark-"


def _images(tmp_path: Path) -> Path:
    images = tmp_path / "images"
    for key in ("aaaa", "bbbb", "cccc"):
        (images / f"{PREFIX}{key}.rootfs" / "usr").mkdir(parents=True)
        (images / f"{PREFIX}{key}.tar").write_bytes(b"x")
    return images


def test_prune_keeps_the_current_build_and_one_in_progress_elsewhere(tmp_path: Path) -> None:
    images = _images(tmp_path)
    said: list[str] = []
    with open(images / f".{PREFIX}bbbb.lock", "a") as other:  # another builder's shared hold on key bbbb
        fcntl.flock(other, fcntl.LOCK_SH)
        debroot.prune_stale(images, PREFIX, keep="aaaa", log=said.append)
    left = sorted(p.name for p in images.iterdir() if not p.name.startswith("."))
    assert left == [f"{PREFIX}aaaa.rootfs", f"{PREFIX}aaaa.tar", f"{PREFIX}bbbb.rootfs", f"{PREFIX}bbbb.tar"]
    assert any("bbbb" in line and "another process" in line for line in said)
    # Once that build is done, the next prune removes it.
    debroot.prune_stale(images, PREFIX, keep="aaaa", log=said.append)
    assert not (images / f"{PREFIX}bbbb.tar").exists()


def test_prune_skips_a_directory_with_a_mount_point_below_it(tmp_path: Path) -> None:
    images = _images(tmp_path)
    mounted = images / f"{PREFIX}cccc.rootfs" / "dev"
    mounted.mkdir()
    # A tmpfs (never a host path) in a private mount namespace that ends with the command.
    script = (
        f"import sys; sys.path.insert(0, {str(DEPLOY)!r}); import debroot, pathlib, subprocess; "
        f"subprocess.run(['mount', '-t', 'tmpfs', 'tmpfs', {str(mounted)!r}], check=True); "
        f"pathlib.Path({str(mounted / 'keep')!r}).write_text('x'); "
        f"debroot.prune_stale(pathlib.Path({str(images)!r}), {PREFIX!r}, keep='aaaa', log=print); "
        f"print('file under the mount kept:', pathlib.Path({str(mounted / 'keep')!r}).exists())"
    )
    done = subprocess.run(["unshare", "--mount", "--propagation", "private", sys.executable, "-c", script],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert f"not removing {images / (PREFIX + 'cccc.rootfs')}: mount point(s) under it: {mounted}" in done.stdout
    assert "file under the mount kept: True" in done.stdout
    assert (images / f"{PREFIX}cccc.rootfs").is_dir() and not (images / f"{PREFIX}bbbb.rootfs").exists()
