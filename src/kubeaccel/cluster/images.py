"""Container images without a registry: an OCI image archive built from a root filesystem, imported into containerd.

The archive is the OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/...``) in a tar: one
uncompressed, reproducible layer (sorted entries, zero mtimes and owners), its config and manifest.
``ctr images import`` reads it; the ``io.containerd.image.name`` annotation names the image.
Used for the real node's pause and busybox images, and by anyone who needs an app image in tests.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from kubeaccel.errors import ConfigError, KubeaccelError, NotFoundError

MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar"
NAMESPACE = "k8s.io"  # the containerd namespace the CRI plugin (and so the kubelet) uses

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_REPO_RE = re.compile(r"^[a-z0-9][a-z0-9._/:-]*$")
_TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")

PAUSE_IMAGE = "kubeaccel.local/pause:1.0"
BUSYBOX_IMAGE = "kubeaccel.local/busybox:1.0"
BUSYBOX_BINARY = Path("/bin/busybox")  # Debian busybox-static: one static binary, all applets


@dataclass(frozen=True)
class ImageConfig:
    entrypoint: Sequence[str] = ()
    cmd: Sequence[str] = ()
    env: Mapping[str, str] = field(default_factory=lambda: {"PATH": DEFAULT_PATH})
    workdir: str = "/"
    user: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)


def _walk(rootfs: Path) -> Iterator[Path]:
    """Every path under ``rootfs`` in sorted order, parents before children, symlinks not followed."""
    for dirpath, dirnames, filenames in os.walk(rootfs):
        dirnames.sort()
        base = Path(dirpath)
        for name in sorted([*dirnames, *filenames]):
            yield base / name


def write_layer(rootfs: Path, target: IO[bytes]) -> None:
    """A reproducible tar of ``rootfs`` into ``target``: same tree, same bytes (so the same digest)."""
    if not rootfs.is_dir():
        raise NotFoundError(f"root filesystem {rootfs} is not a directory", hint="pass the directory to pack")
    with tarfile.open(fileobj=target, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for path in _walk(rootfs):
            info = tar.gettarinfo(str(path), arcname=str(path.relative_to(rootfs)))
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if info.isreg():
                with open(path, "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)


def layer_tar(rootfs: Path) -> bytes:
    buffer = io.BytesIO()
    write_layer(rootfs, buffer)
    return buffer.getvalue()


def _file_digest(path: Path) -> str:
    with open(path, "rb") as handle:
        return "sha256:" + hashlib.file_digest(handle, "sha256").hexdigest()


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _validate_name(name: str) -> None:
    repo, _, tag = name.rpartition(":")
    if not _REPO_RE.match(repo) or not _TAG_RE.match(tag):
        raise ConfigError(f"image name {name!r} needs a repository and a tag", hint="e.g. kubeaccel.local/app:1.0")


def build_archive(rootfs: Path, name: str, out: Path, config: ImageConfig | None = None) -> Path:
    """Write an OCI image archive of ``rootfs`` named ``name`` to ``out``; returns ``out``."""
    _validate_name(name)
    config = config or ImageConfig()
    out.parent.mkdir(parents=True, exist_ok=True)
    # The layer goes through a temp file next to the output: app images are hundreds of MB, not for RAM.
    with tempfile.NamedTemporaryFile(dir=out.parent, prefix=".layer-", suffix=".tar") as layer_file:
        write_layer(rootfs, layer_file)
        layer_file.flush()
        layer_path = Path(layer_file.name)
        _write_archive(layer_path, name, out, config)
    return out


def _write_archive(layer_path: Path, name: str, out: Path, config: ImageConfig) -> None:
    layer_digest = _file_digest(layer_path)
    layer_size = layer_path.stat().st_size
    image_config = _json({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": list(config.entrypoint) or None,
            "Cmd": list(config.cmd) or None,
            "Env": [f"{k}={v}" for k, v in config.env.items()],
            "WorkingDir": config.workdir,
            "User": config.user,
            "Labels": dict(config.labels),
        },
        # An uncompressed layer: its diff ID is its digest.
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created_by": "kubeaccel.cluster.images"}],
    })
    manifest = _json({
        "schemaVersion": 2,
        "mediaType": MEDIA_MANIFEST,
        "config": {"mediaType": MEDIA_CONFIG, "digest": _digest(image_config), "size": len(image_config)},
        "layers": [{"mediaType": MEDIA_LAYER, "digest": layer_digest, "size": layer_size}],
    })
    index = _json({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": MEDIA_MANIFEST,
            "digest": _digest(manifest),
            "size": len(manifest),
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {
                "io.containerd.image.name": name,
                "org.opencontainers.image.ref.name": name.rpartition(":")[2],
            },
        }],
    })
    entries = [("oci-layout", _json({"imageLayoutVersion": "1.0.0"})), ("index.json", index)]
    entries += [(f"blobs/sha256/{_digest(b).split(':')[1]}", b) for b in (image_config, manifest)]
    with tarfile.open(out, "w") as tar:
        for arcname in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(arcname)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for arcname, data in entries:
            info = tarfile.TarInfo(arcname)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
        tar.add(str(layer_path), arcname=f"blobs/sha256/{layer_digest.split(':')[1]}", recursive=False)


def import_archive(archive: Path, containerd_address: str, ctr: str | None = None) -> None:
    """``ctr -n k8s.io images import``: the image becomes usable by pods on the node behind ``containerd_address``.

    ``ctr`` defaults to the one built with the node's containerd (scripts/containerd/build.sh).
    """
    if ctr is None:
        from kubeaccel.cluster.binaries import locate

        ctr = locate(("ctr",))["ctr"]
    elif shutil.which(ctr) is None and not Path(ctr).exists():
        raise NotFoundError(f"ctr (containerd's client) not found at {ctr}", hint="run scripts/bootstrap.sh")
    proc = subprocess.run(
        [ctr, f"--address={containerd_address}", f"--namespace={NAMESPACE}", "images", "import", str(archive)],
        capture_output=True, text=True, check=False, timeout=600,
    )
    if proc.returncode != 0:
        raise KubeaccelError(
            f"importing {archive} into containerd failed: {proc.stderr.strip() or proc.stdout.strip()}",
            hint="is the real node up (`kubeaccel cluster up --real-node`) and the archive an OCI image archive?",
        )


def busybox_rootfs(dest: Path) -> Path:
    """A minimal root filesystem: static busybox with its applets linked in /bin, /etc/passwd, /tmp."""
    if not BUSYBOX_BINARY.exists():
        raise NotFoundError(f"{BUSYBOX_BINARY} is missing", hint="apt-get install busybox-static")
    for d in ("bin", "etc", "tmp", "proc", "sys", "dev", "root", "var"):
        (dest / d).mkdir(parents=True, exist_ok=True)
    (dest / "tmp").chmod(0o1777)
    shutil.copy2(BUSYBOX_BINARY, dest / "bin" / "busybox")
    applets = subprocess.run([str(BUSYBOX_BINARY), "--list"], capture_output=True, text=True, check=True).stdout
    for applet in applets.split():
        link = dest / "bin" / applet
        if applet != "busybox" and not link.exists():
            link.symlink_to("busybox")
    (dest / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n")
    (dest / "etc" / "group").write_text("root:x:0:\nnogroup:x:65534:\n")
    return dest


# The pod sandbox's only job is to hold the namespaces until it is told to stop; as PID 1 a shell needs an
# explicit trap to exit on SIGTERM.
PAUSE_CONFIG = ImageConfig(entrypoint=("/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait; done"))


def build_base_images(out_dir: Path) -> dict[str, Path]:
    """The pause and busybox image archives (the same rootfs, different entrypoints), built in ``out_dir``."""
    with tempfile.TemporaryDirectory() as tmp:
        rootfs = busybox_rootfs(Path(tmp) / "rootfs")
        return {
            PAUSE_IMAGE: build_archive(rootfs, PAUSE_IMAGE, out_dir / "pause.oci.tar", PAUSE_CONFIG),
            BUSYBOX_IMAGE: build_archive(rootfs, BUSYBOX_IMAGE, out_dir / "busybox.oci.tar", ImageConfig(cmd=("sh",))),
        }
