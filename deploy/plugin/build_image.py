#!/usr/bin/env python3
"""Build the kubeaccel device-plugin image with no registry and no Docker engine: an OCI image
archive that ``ctr -n k8s.io images import`` (or ``docker load``) accepts.

The same image as ``deploy/plugin/Dockerfile`` (tests/deploy/test_plugin_image.py checks that the
two agree): Debian ``BASE_RELEASE``'s packages from ``packages.txt`` (Python 3.11), kubeaccel with
the ``nvidia`` extra installed by pip into ``SITE`` and byte-compiled (the root file system is
read-only at run time), ``ENTRYPOINT``/``ENV``/``USER`` as below.

1. the Debian root filesystem from ``deploy/debroot.py`` (packages cached in ~/.cache/kubeaccel/debs);
2. ``pip install --target SITE .[nvidia]`` with this interpreter's pip (wheels for CPython 3.11 on
   glibc, which bookworm's Python runs), console scripts dropped (the entrypoint is ``python3 -m``);
3. one reproducible layer + OCI layout via ``kubeaccel.cluster.images.build_archive``.

Cached by content: the archive's name carries a hash of everything that goes in (kubeaccel's
sources, pyproject.toml, the package list, this builder), so a second run prints it at once.
Needs root, apt-get, dpkg-deb and a Debian host of the same release.

Usage: build_image.py [--cache DIR] [--name IMAGE] [--json]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
import debroot  # noqa: E402 - deploy/debroot.py, next to this directory

IMAGE_REPO = "docker.io/kubeaccel/device-plugin"
ARCHIVE_PREFIX = "kubeaccel-device-plugin-"

# What both recipes produce; the Dockerfile spells the same values (checked by the tests).
BASE_RELEASE = "bookworm"
PACKAGES_FILE = HERE / "packages.txt"
SITE = "/usr/local/lib/python3.11/dist-packages"  # on Debian's sys.path by default
PIP_EXTRAS = "nvidia"  # nvidia-ml-py: pure Python, loads the driver's library only when used
CONFIG_PATH = "/etc/kubeaccel/plugin.yaml"
ENTRYPOINT = ("/usr/bin/python3", "-m", "kubeaccel.cli", "plugin", "run", "--config", CONFIG_PATH)
ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONUNBUFFERED": "1",
    "LANG": "C.UTF-8",
}
USER = "0:0"  # root without capabilities (the DaemonSet drops them all): see docs/deploy.md
WORKDIR = "/"
METRICS_PORT = 9434
# Hashed into the content key: everything that changes what goes into the image.
INPUTS = ("pyproject.toml", "README.md", "src/kubeaccel", "deploy/plugin/packages.txt",
          "deploy/plugin/build_image.py", "deploy/debroot.py")  # fmt: skip


def log(message: str) -> None:
    print(f"[plugin-image] {message}", file=sys.stderr, flush=True)


def content_key() -> str:
    return debroot.hash_inputs(REPO, [REPO / rel for rel in INPUTS])


def install_python_packages(rootfs: Path) -> None:
    """kubeaccel[nvidia] and its dependencies into the image's site dir, byte-compiled, no scripts."""
    site = rootfs / SITE.lstrip("/")
    site.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="plugin-src-") as tmp:
        # A clean copy of the inputs, so a developer's build/ or egg-info never lands in the image.
        src = Path(tmp)
        for rel in ("pyproject.toml", "README.md"):
            shutil.copy2(REPO / rel, src / rel)
        shutil.copytree(REPO / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"))
        done = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
             "--no-warn-script-location", "--target", str(site), f"{src}[{PIP_EXTRAS}]"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
    if done.returncode != 0:
        raise debroot.BuildError(f"pip install into the image failed:\n{done.stderr.strip()[-2000:]}")
    # Scripts carry this interpreter's path in their shebang; the image runs `python3 -m kubeaccel.cli`.
    shutil.rmtree(site / "bin", ignore_errors=True)
    # Unchecked hashes: the layer zeroes every mtime, which would make timestamp-checked .pyc stale.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "-j0", "--invalidation-mode", "unchecked-hash", str(site)],
        check=True, capture_output=True,
    )  # fmt: skip


def build(cache: Path = debroot.DEFAULT_CACHE, name: str | None = None) -> dict[str, str]:
    """Build (or find) the image archive; returns ``{"archive", "image"}``."""
    from kubeaccel import __version__

    debroot.check_host()
    if sys.version_info[:2] != (3, 11):
        raise debroot.BuildError(f"run the builder with Python 3.11 (the image's), not {sys.version.split()[0]}")
    if (release := debroot.host_release()) != BASE_RELEASE:
        raise debroot.BuildError(f"the host is Debian {release}, the image is {BASE_RELEASE}: use the Dockerfile")
    key = content_key()[:16]
    image = name or f"{IMAGE_REPO}:{__version__}-{key[:8]}"
    images = cache / "images"
    images.mkdir(parents=True, exist_ok=True)
    archive = images / f"{ARCHIVE_PREFIX}{key}.tar"
    result = {"archive": str(archive), "image": image}
    stamp = archive.with_suffix(".json")
    if archive.exists() and stamp.exists() and json.loads(stamp.read_text()).get("image") == image:
        log(f"cached: {archive}")
        return result
    started = time.monotonic()
    with debroot.in_use(images, ARCHIVE_PREFIX, key):
        _build(images, archive, image, result, cache)
    debroot.prune_stale(images, ARCHIVE_PREFIX, keep=key, log=log)
    log(f"built {image} in {time.monotonic() - started:.0f}s: {archive} ({archive.stat().st_size >> 20} MiB)")
    return result


def _build(images: Path, archive: Path, image: str, result: dict[str, str], cache: Path) -> None:
    """The build itself, while this key's lock is held (so no other builder's prune removes its files)."""
    from kubeaccel import __version__
    from kubeaccel.cluster.images import ImageConfig, build_archive

    started = time.monotonic()
    stamp = archive.with_suffix(".json")
    debs = debroot.fetch_debs(debroot.read_list(PACKAGES_FILE), cache / "debs")
    rootfs = Path(tempfile.mkdtemp(prefix="plugin-rootfs-", dir=images))
    try:
        debroot.unpack(debs, rootfs)
        debroot.configure(rootfs, hostname="kubeaccel-device-plugin")
        install_python_packages(rootfs)
        (rootfs / CONFIG_PATH.lstrip("/")).parent.mkdir(parents=True, exist_ok=True)
        config = ImageConfig(
            entrypoint=ENTRYPOINT, env=ENV, workdir=WORKDIR, user=USER,
            labels={"org.opencontainers.image.title": "kubeaccel device plugin",
                    "org.opencontainers.image.version": __version__, "io.kubeaccel.built-by": "build_image.py"},
        )  # fmt: skip
        log(f"rootfs ready ({time.monotonic() - started:.0f}s); writing {archive.name}")
        partial = archive.with_suffix(".partial")
        build_archive(rootfs, image, partial, config)
        partial.rename(archive)
        stamp.write_text(json.dumps(result))
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)


def main() -> None:
    parser = debroot.arg_parser(__doc__, IMAGE_REPO)
    parser.add_argument("--json", action="store_true", help="print {archive, image} as JSON")
    args = parser.parse_args()
    result = build(args.cache, args.name)
    print(json.dumps(result) if args.json else result["archive"])


if __name__ == "__main__":
    main()
