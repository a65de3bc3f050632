"""OCI image archives built from a root filesystem: valid layout, digests that match, reproducible bytes."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from kubeaccel.cluster.images import ImageConfig, build_archive, busybox_rootfs, layer_tar
from kubeaccel.errors import ConfigError, NotFoundError


def _rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "app").mkdir(parents=True)
    (root / "app" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (root / "app" / "run.sh").chmod(0o755)
    (root / "app" / "link").symlink_to("run.sh")
    return root


def _blobs(archive: Path) -> tuple[dict[str, object], dict[str, bytes]]:
    with tarfile.open(archive) as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]
    return json.loads(files["index.json"]), files


def test_archive_is_a_consistent_oci_layout(tmp_path: Path) -> None:
    archive = build_archive(_rootfs(tmp_path), "kubeaccel.local/app:1.0", tmp_path / "app.tar",
                            ImageConfig(entrypoint=("/app/run.sh",), env={"A": "1"}))
    index, files = _blobs(archive)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    entry = index["manifests"][0]  # type: ignore[index]
    assert entry["annotations"]["io.containerd.image.name"] == "kubeaccel.local/app:1.0"
    for name, data in files.items():
        if name.startswith("blobs/sha256/"):
            assert hashlib.sha256(data).hexdigest() == name.rsplit("/", 1)[1]
    manifest = json.loads(files[f"blobs/sha256/{entry['digest'].split(':')[1]}"])
    config = json.loads(files[f"blobs/sha256/{manifest['config']['digest'].split(':')[1]}"])
    assert config["config"]["Entrypoint"] == ["/app/run.sh"] and config["config"]["Env"] == ["A=1"]
    layer = files[f"blobs/sha256/{manifest['layers'][0]['digest'].split(':')[1]}"]
    assert config["rootfs"]["diff_ids"] == [manifest["layers"][0]["digest"]]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert members["app/run.sh"].mode & 0o111 and members["app/link"].issym()
    assert all(m.mtime == 0 and m.uid == 0 for m in members.values())


def test_layer_is_reproducible(tmp_path: Path) -> None:
    root = _rootfs(tmp_path)
    assert layer_tar(root) == layer_tar(root)


def test_bad_name_and_missing_rootfs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="repository and a tag"):
        build_archive(_rootfs(tmp_path), "no-tag", tmp_path / "x.tar")
    with pytest.raises(NotFoundError):
        build_archive(tmp_path / "missing", "a/b:1", tmp_path / "x.tar")


def test_busybox_rootfs_has_a_shell(tmp_path: Path) -> None:
    root = busybox_rootfs(tmp_path / "bb")
    assert (root / "bin" / "sh").is_symlink() and (root / "bin" / "busybox").stat().st_size > 100_000
