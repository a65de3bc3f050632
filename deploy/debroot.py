"""A Debian root filesystem from packages, without a registry or a Docker engine.

What ``FROM debian:<release>-slim`` + ``apt-get install --no-install-recommends PKGS`` gives an
image, done with the host's apt (which must be the same Debian release): resolve the package
closure against an *empty* dpkg status (what a fresh Debian would install), download the missing
``.deb`` files into a cache, unpack them (no maintainer scripts run: distroless-style), and write
the few files those scripts and ``base-passwd`` would have. Stdlib only, so the image builders in
``deploy/`` can use it from any interpreter.

Shared by the image builders under ``deploy/``: the device-plugin and the Spark image.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

# Where the builders keep the downloaded packages (``debs/``) and the images they built (``images/``).
DEFAULT_CACHE = Path(os.environ.get("KUBEACCEL_CACHE", Path.home() / ".cache" / "kubeaccel"))
# Not needed at run time and large.
PRUNE = ("usr/share/doc", "usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian")


class BuildError(SystemExit):
    """A build step failed; the message says which and how to fix it (exit status 1)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)


class User(NamedTuple):
    """An account of the image besides root and nobody, with a group of the same name and number."""

    name: str
    uid: int
    gecos: str
    home: str
    shell: str


def _log(message: str) -> None:
    print(f"[debroot] {message}", file=sys.stderr, flush=True)


def arg_parser(doc: str, image_repo: str) -> argparse.ArgumentParser:
    """An image builder's command line with its first options, ``--cache`` and ``--name``, described by ``doc``'s
    first paragraph."""
    parser = argparse.ArgumentParser(description=doc.partition("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=DEFAULT_CACHE, help="cache dir (default ~/.cache/kubeaccel)")
    parser.add_argument("--name", help=f"image name (default {image_repo}:<version>-<content hash>)")
    return parser


def read_list(path: Path) -> list[str]:
    """A package list: one name a line, ``#`` comments and blank lines ignored."""
    lines = (line.split("#", 1)[0].strip() for line in path.read_text().splitlines())
    return [line for line in lines if line]


def hash_inputs(repo: Path, inputs: Iterable[Path], extra: bytes = b"") -> str:
    """SHA-256 of ``extra`` and of every file under ``inputs`` (its path relative to ``repo``, its bytes), in
    sorted order, bytecode left out: an image builder's content key, so an unchanged image is never rebuilt."""
    digest = hashlib.sha256(extra)
    for root in inputs:
        files = sorted(p for p in ([root] if root.is_file() else root.rglob("*")) if p.is_file())
        for path in files:
            if "__pycache__" in path.parts or path.suffix == ".pyc":
                continue
            digest.update(str(path.relative_to(repo)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def host_release() -> str:
    """The host's Debian codename (``bookworm``): the release the packages come from."""
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME":
            return value.strip().strip('"')
    raise BuildError("/etc/os-release has no VERSION_CODENAME: the local image build needs a Debian host")


def resolve_closure(packages: Iterable[str]) -> list[str]:
    """Every package a fresh Debian would install for ``packages`` (no recommends), sorted."""
    packages = list(packages)
    with tempfile.NamedTemporaryFile("w", prefix="empty-dpkg-status-") as status:
        done = subprocess.run(
            ["apt-get", "-s", "-o", f"Dir::State::status={status.name}", "-o", "Debug::NoLocking=1",
             "install", "--no-install-recommends", *packages],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        raise BuildError(f"apt cannot resolve {' '.join(packages)}:\n{done.stderr.strip()}\nhint: run apt-get update")
    names = sorted({line.split()[1] for line in done.stdout.splitlines() if line.startswith("Inst ")})
    if not names:
        raise BuildError("apt resolved no packages; is this a Debian machine with apt sources?")
    return names


def download_debs(names: list[str], debs: Path, log: Callable[[str], None] = _log) -> list[Path]:
    """The ``.deb`` of each package (candidate version) in ``debs``, downloading only the missing ones."""
    debs.mkdir(parents=True, exist_ok=True)
    uris = subprocess.run(["apt-get", "download", "--print-uris", *names], capture_output=True, text=True, check=False)
    if uris.returncode != 0:
        raise BuildError(f"apt-get download --print-uris failed:\n{uris.stderr.strip()}")
    files = [debs / line.split()[1] for line in uris.stdout.splitlines() if line.startswith("'")]
    missing = [f.name.split("_", 1)[0] for f in files if not f.exists()]
    if missing:
        log(f"downloading {len(missing)} of {len(files)} Debian packages into {debs}")
        fetched = subprocess.run(
            ["apt-get", "download", *missing], cwd=debs, capture_output=True, text=True, check=False
        )
        if fetched.returncode != 0:
            raise BuildError(f"apt-get download failed:\n{fetched.stderr.strip()}\nhint: check the apt mirror")
    absent = [f.name for f in files if not f.exists()]
    if absent:
        raise BuildError(f"apt-get download did not produce {', '.join(absent)}")
    return files


def fetch_debs(packages: list[str], debs: Path, log: Callable[[str], None] = _log) -> list[Path]:
    """Resolve and download; on a machine with no (or stale) package lists, ``apt-get update`` once and retry."""
    try:
        return download_debs(resolve_closure(packages), debs, log)
    except BuildError:
        log("apt failed; running apt-get update and retrying")
        subprocess.run(["apt-get", "update", "-qq"], check=False)
        return download_debs(resolve_closure(packages), debs, log)


def unpack(debs: Iterable[Path], rootfs: Path) -> None:
    """Unpack the packages' files into ``rootfs`` (merged /usr, as Debian 12 has it)."""
    for top in ("bin", "sbin", "lib", "lib64"):
        (rootfs / "usr" / top).mkdir(parents=True, exist_ok=True)
        if not (rootfs / top).is_symlink():
            (rootfs / top).symlink_to(f"usr/{top}")
    for deb in debs:
        data = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
        subprocess.run(["tar", "-x", "-C", str(rootfs), "--keep-directory-symlink"], stdin=data.stdout, check=True)
        if data.wait() != 0:
            raise BuildError(f"dpkg-deb could not read {deb}")


def configure(rootfs: Path, hostname: str, links: dict[str, str] | None = None, users: Sequence[User] = ()) -> None:
    """What maintainer scripts and base-passwd would have done: users, hosts, tmp dirs, ldconfig.

    ``links``: symlinks to add (path in the image: target) besides ``/bin/sh``; ``users``: accounts
    besides root and nobody.
    """
    for rel in PRUNE:
        shutil.rmtree(rootfs / rel, ignore_errors=True)
    for rel, target in {"bin/sh": "dash", **(links or {})}.items():
        path = rootfs / rel
        if not path.exists() and not path.is_symlink():
            path.symlink_to(target)
    etc = rootfs / "etc"
    etc.mkdir(exist_ok=True)
    (etc / "passwd").write_text(
        "root:x:0:0:root:/root:/bin/sh\n"
        + "".join(f"{u.name}:x:{u.uid}:{u.uid}:{u.gecos}:{u.home}:{u.shell}\n" for u in users)
        + "nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
    )
    (etc / "group").write_text("root:x:0:\n" + "".join(f"{u.name}:x:{u.uid}:\n" for u in users) + "nogroup:x:65534:\n")
    (etc / "hostname").write_text(f"{hostname}\n")
    # Kubernetes mounts its own /etc/hosts; this one serves plain runc/chroot runs of the image.
    (etc / "hosts").write_text("127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    (etc / "nsswitch.conf").write_text("passwd: files\ngroup: files\nhosts: files dns\n")
    for rel in ("tmp", "var/tmp"):
        (rootfs / rel).mkdir(parents=True, exist_ok=True)
        os.chmod(rootfs / rel, 0o1777)
    for rel in ("proc", "sys", "dev", "root", "run"):
        (rootfs / rel).mkdir(parents=True, exist_ok=True)
    subprocess.run(["ldconfig", "-r", str(rootfs)], check=False, capture_output=True)


def check_host() -> None:
    """Root and the Debian tools, or a message that says what is missing."""
    if os.geteuid() != 0:
        raise BuildError("building the image needs root (file ownership inside the image); run it with sudo")
    for tool in ("apt-get", "dpkg-deb", "tar", "ldconfig"):
        if shutil.which(tool) is None:
            raise BuildError(f"{tool} not found: the local image build needs a Debian host (or use the Dockerfile)")


def _mount_points() -> list[str]:
    # /proc/self/mountinfo field 5 is the mount point, with space, tab, newline and backslash as \ooo octal.
    text = Path("/proc/self/mountinfo").read_text()
    fields = (line.split() for line in text.splitlines())
    return [re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), f[4]) for f in fields if len(f) > 4]


def _lock_file(images: Path, prefix: str, key: str) -> Path:
    return images / f".{prefix}{key}.lock"


@contextlib.contextmanager
def in_use(images: Path, prefix: str, key: str) -> Iterator[None]:
    """Hold while building (or using the rootfs of) the image ``prefix + key``: no other builder prunes it."""
    images.mkdir(parents=True, exist_ok=True)
    with open(_lock_file(images, prefix, key), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_SH)
        yield


def prune_stale(images: Path, prefix: str, keep: str, log: Callable[[str], None]) -> None:
    """Remove older builds (``prefix + key + suffix``, any key but ``keep``): they are only disk space.

    Left in place, and logged: a build in progress or in use in another process (its lock is held, see
    ``in_use``), and a directory with a mount point at or below it (removing it would delete the mounted
    files: a host /dev bind-mounted into a rootfs for a chroot).
    """
    mounts = _mount_points()
    for path in sorted(images.glob(f"{prefix}*")):
        key = path.name[len(prefix):].split(".", 1)[0]
        if key == keep:
            continue
        below = [m for m in mounts if m == str(path) or m.startswith(f"{path}/")]
        if below:
            log(f"not removing {path}: mount point(s) under it: {', '.join(below)}")
            continue
        with open(_lock_file(images, prefix, key), "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log(f"not removing {path}: another process is building or using it")
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
