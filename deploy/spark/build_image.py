#!/usr/bin/env python3
"""Build the kubeaccel Spark image with no registry and no Docker engine: an OCI image archive
that ``ctr -n k8s.io images import`` (or ``docker load``) accepts.

What ``deploy/spark/Dockerfile`` does with ``FROM debian:bookworm-slim`` + ``apt-get install``,
done here from Debian's packages directly:

1. the Debian root filesystem of ``packages.txt`` from ``deploy/debroot.py``: the package closure
   resolved with apt against an *empty* dpkg status (what a fresh Debian would install), the
   ``.deb`` files downloaded into a cache (``~/.cache/kubeaccel/debs``) and unpacked
   (distroless-style: no maintainer scripts run, so the few things they would do are done there),
   plus the ``spark`` user and its work dir;
2. add Spark (the ``pyspark`` package of the running interpreter: jars, ``bin/``, Python),
   ``py4j``, kubeaccel's discovery script and package, the entrypoint and the example app, and
   ``/opt/spark/examples/jars/spark-examples.jar`` (as in Apache's image): our own JVM examples from
   ``examples/java/``, compiled with the host's ``javac`` against the image's Spark jars;
3. pack the rootfs as one uncompressed layer (reproducible: sorted, mtime 0) and write an OCI
   image layout (index, manifest, config) plus Docker's ``manifest.json``, as one tar.

Cached by content: the archive's name carries a hash of everything that goes in, so a second
run prints the existing archive at once. Stdlib only; needs root (to keep file ownership),
``apt-get``, ``dpkg-deb``, GNU ``tar`` and a JDK 17 ``javac``.

Usage: build_image.py [--cache DIR] [--name IMAGE] [--keep-rootfs] [--json]
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
import debroot  # noqa: E402 - deploy/debroot.py, next to this directory

IMAGE_REPO = "docker.io/kubeaccel/spark"
ARCHIVE_PREFIX = "kubeaccel-spark-"
PACKAGES_FILE = HERE / "packages.txt"
EXAMPLES_JAVA = HERE / "examples" / "java"  # org/apache/spark/examples/*.java -> spark-examples.jar
EXAMPLES_JAR = "examples/jars/spark-examples.jar"  # under SPARK_HOME: /opt/spark/examples/jars/... in the image
JAVA_RELEASE = "17"  # the image's JRE

JAVA_HOME = "/usr/lib/jvm/java-17-openjdk-amd64"
PY_SITE = "/usr/local/lib/python3.11/dist-packages"  # on Debian's sys.path by default
SPARK_HOME = f"{PY_SITE}/pyspark"
WORKDIR = "/opt/spark/work-dir"
SPARK_UID = 185  # the UID of Apache Spark's own images

IMAGE_ENV = {
    "PATH": f"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:{JAVA_HOME}/bin",
    "JAVA_HOME": JAVA_HOME,
    "SPARK_HOME": SPARK_HOME,
    "PYSPARK_PYTHON": "/usr/bin/python3",
    "PYSPARK_DRIVER_PYTHON": "/usr/bin/python3",
    "LANG": "C.UTF-8",
}
ENTRYPOINT = ["/usr/bin/tini", "-s", "--", "/usr/bin/python3", "/opt/kubeaccel/entrypoint.py"]

# Not needed at run time (docs, man pages and locales go in debroot.configure): Spark's test bits.
PYSPARK_SKIP = {"__pycache__", "tests", "testing"}
# Exactly the import closure of the discovery script (stdlib only), so the image neither needs
# kubeaccel's third-party dependencies nor is rebuilt when the rest of kubeaccel changes.
KUBEACCEL_FILES = [
    "kubeaccel/__init__.py",
    "kubeaccel/errors.py",
    "kubeaccel/devices/__init__.py",
    "kubeaccel/devices/naming.py",
    "kubeaccel/spark/__init__.py",
    "kubeaccel/spark/discover.py",
]


def log(message: str) -> None:
    print(f"[spark-image] {message}", file=sys.stderr, flush=True)


def configure_rootfs(rootfs: Path) -> None:
    """debroot's configuration (with the ``spark`` user) and what Spark needs besides."""
    links = {"usr/bin/python3": "python3.11", "usr/bin/java": f"{JAVA_HOME}/bin/java"}
    spark = debroot.User("spark", SPARK_UID, "Spark", WORKDIR, "/bin/false")
    debroot.configure(rootfs, hostname="spark", links=links, users=[spark])
    # The entrypoint adds a passwd line for arbitrary UIDs (as Spark's image does), so the group may write it.
    os.chmod(rootfs / "etc" / "passwd", 0o664)
    (rootfs / "etc/ssl/certs/java").mkdir(parents=True, exist_ok=True)
    work = rootfs / WORKDIR.lstrip("/")
    work.mkdir(parents=True, exist_ok=True)
    # The Spark user's home: `--packages` makes the driver's Ivy write its cache under ~/.ivy2.5.2 here.
    # Group root and g+w, so an arbitrary UID (run with GID 0, OpenShift-style) may write it too.
    os.chown(work, SPARK_UID, 0)
    os.chmod(work, 0o775)


def _copytree(src: Path, dst: Path, skip: set[str] = PYSPARK_SKIP) -> None:
    shutil.copytree(
        src, dst, symlinks=True, ignore=lambda _d, names: [n for n in names if n in skip or n.endswith(".pyc")]
    )


def find_javac() -> str:
    javac = shutil.which("javac")
    if javac is None:
        raise debroot.BuildError(
            "javac not found: the image's spark-examples.jar is compiled here; install a JDK 17 "
            "(apt-get install openjdk-17-jdk-headless)"
        )
    return javac


def build_examples_jar(spark_jars: Path, jar: Path, sources: Path = EXAMPLES_JAVA) -> Path:
    """Compile ``sources`` (``*.java``) against ``spark_jars`` with the host's JDK into ``jar``: reproducible
    (entries sorted, timestamps fixed), so the same sources and Spark give the same bytes."""
    javac = find_javac()
    files = sorted(str(p) for p in sources.rglob("*.java"))
    with tempfile.TemporaryDirectory(prefix="spark-examples-") as tmp:
        classes = Path(tmp)
        done = subprocess.run(
            [javac, "--release", JAVA_RELEASE, "-Xlint:all,-path", "-Werror", "-encoding", "UTF-8",
             "-d", str(classes), "-cp", f"{spark_jars}/*", *files],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            raise debroot.BuildError(f"javac failed on {sources}:\n{done.stdout}{done.stderr}")
        jar.parent.mkdir(parents=True, exist_ok=True)
        manifest = b"Manifest-Version: 1.0\r\nCreated-By: kubeaccel deploy/spark/build_image.py\r\n\r\n"
        with zipfile.ZipFile(jar, "w", zipfile.ZIP_DEFLATED) as out:
            stamp = (1980, 1, 1, 0, 0, 0)
            out.writestr(zipfile.ZipInfo("META-INF/MANIFEST.MF", stamp), manifest, zipfile.ZIP_DEFLATED)
            for path in sorted(p for p in classes.rglob("*") if p.is_file()):
                info = zipfile.ZipInfo(path.relative_to(classes).as_posix(), stamp)
                out.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
    os.chmod(jar, 0o644)
    return jar


def add_app(rootfs: Path) -> None:
    """Spark, py4j and kubeaccel's discovery into the image's Python; entrypoint and examples."""
    import py4j
    import pyspark

    site = rootfs / PY_SITE.lstrip("/")
    site.mkdir(parents=True, exist_ok=True)
    _copytree(Path(pyspark.__file__).parent, site / "pyspark")
    _copytree(Path(py4j.__file__).parent, site / "py4j")
    for rel in KUBEACCEL_FILES:
        (site / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / "src" / rel, site / rel)
    for script in ("spark-submit", "spark-class", "pyspark", "find-spark-home", "load-spark-env.sh"):
        os.chmod(site / "pyspark" / "bin" / script, 0o755)
    build_examples_jar(site / "pyspark" / "jars", site / "pyspark" / EXAMPLES_JAR)
    (rootfs / "opt/spark").mkdir(parents=True, exist_ok=True)
    for name in ("jars", "bin", "python", "examples"):  # /opt/spark/... as in Spark's own image
        (rootfs / "opt/spark" / name).symlink_to(f"{SPARK_HOME}/{name}")
    bindir = rootfs / "usr/local/bin"
    bindir.mkdir(parents=True, exist_ok=True)
    discover = bindir / "kubeaccel-discover"
    discover.write_text(
        "#!/usr/bin/python3 -s\nimport sys\n\nfrom kubeaccel.spark.discover import main\n\nsys.exit(main())\n"
    )
    os.chmod(discover, 0o755)
    opt = rootfs / "opt/kubeaccel"
    (opt / "examples").mkdir(parents=True, exist_ok=True)
    shutil.copy2(HERE / "entrypoint.py", opt / "entrypoint.py")
    shutil.copy2(HERE / "examples" / "accel_pi.py", opt / "examples" / "accel_pi.py")


def content_key(packages: list[str]) -> str:
    """Hash of everything that goes into the image, so an unchanged image is never rebuilt."""
    import pyspark

    roots = [HERE / "entrypoint.py", HERE / "build_image.py", HERE / "examples", HERE.parent / "debroot.py"]
    roots += [REPO / "src" / rel for rel in KUBEACCEL_FILES]
    return debroot.hash_inputs(REPO, roots, extra=("\n".join(packages) + pyspark.__version__).encode())


def _sha256_file(path: Path) -> tuple[str, int]:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest(), path.stat().st_size


def _blob(layout: Path, data: bytes) -> tuple[str, int]:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    (layout / "blobs/sha256" / digest.split(":")[1]).write_bytes(data)
    return digest, len(data)


def write_oci_archive(rootfs: Path, archive: Path, image: str, created: str = "1970-01-01T00:00:00Z") -> None:
    layout = archive.with_suffix(".layout")
    shutil.rmtree(layout, ignore_errors=True)
    (layout / "blobs/sha256").mkdir(parents=True)
    layer = layout / "layer.tar"
    subprocess.run(
        [
            "tar",
            "-c",
            "-f",
            str(layer),
            "--sort=name",
            "--mtime=@0",
            "--numeric-owner",
            "--xattrs",
            "-C",
            str(rootfs),
            ".",
        ],
        check=True,
    )
    layer_digest, layer_size = _sha256_file(layer)
    layer.rename(layout / "blobs/sha256" / layer_digest.split(":")[1])
    config = {
        "architecture": "amd64",
        "os": "linux",
        "created": created,
        "config": {
            "Env": [f"{k}={v}" for k, v in IMAGE_ENV.items()],
            "Entrypoint": ENTRYPOINT,
            "WorkingDir": WORKDIR,
            "User": str(SPARK_UID),
            "Labels": {"org.opencontainers.image.title": "kubeaccel Spark", "io.kubeaccel.built-by": "build_image.py"},
        },
        "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        "history": [{"created": created, "created_by": "kubeaccel deploy/spark/build_image.py"}],
    }
    config_digest, config_size = _blob(layout, json.dumps(config, sort_keys=True).encode())
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest, "size": layer_size}],
    }
    manifest_digest, manifest_size = _blob(layout, json.dumps(manifest, sort_keys=True).encode())
    index = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": manifest_digest,
                "size": manifest_size,
                "annotations": {"io.containerd.image.name": image, "org.opencontainers.image.ref.name": image},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index, sort_keys=True))
    (layout / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    docker_manifest = [
        {
            "Config": f"blobs/sha256/{config_digest.split(':')[1]}",
            "RepoTags": [image.removeprefix("docker.io/")],
            "Layers": [f"blobs/sha256/{layer_digest.split(':')[1]}"],
        }
    ]
    (layout / "manifest.json").write_text(json.dumps(docker_manifest))
    partial = archive.with_suffix(".partial")
    subprocess.run(
        ["tar", "-c", "-f", str(partial), "--sort=name", "--mtime=@0", "--numeric-owner", "-C", str(layout), "."],
        check=True,
    )
    partial.rename(archive)
    shutil.rmtree(layout)


def build(cache: Path = debroot.DEFAULT_CACHE, name: str | None = None, keep_rootfs: bool = False) -> dict[str, str]:
    """Build (or find) the image archive; returns ``{"archive", "image", "rootfs"?}``."""
    debroot.check_host()
    find_javac()
    packages = debroot.read_list(PACKAGES_FILE)
    key = content_key(packages)[:16]
    import kubeaccel

    image = name or f"{IMAGE_REPO}:{kubeaccel.__version__}-{key[:8]}"
    images = cache / "images"
    images.mkdir(parents=True, exist_ok=True)
    archive = images / f"{ARCHIVE_PREFIX}{key}.tar"
    rootfs = images / f"{ARCHIVE_PREFIX}{key}.rootfs"
    result = {"archive": str(archive), "image": image}
    if archive.exists() and (not keep_rootfs or rootfs.is_dir()):
        if keep_rootfs:
            result["rootfs"] = str(rootfs)
        log(f"cached: {archive}")
        return result
    started = time.monotonic()
    debs = debroot.fetch_debs(packages, cache / "debs", log)
    log(f"{len(debs)} Debian packages for: {' '.join(packages)}")
    build_root = Path(tempfile.mkdtemp(prefix="rootfs-", dir=images))
    # This key's lock, held through the build: another builder's prune never removes what is being made.
    with debroot.in_use(images, ARCHIVE_PREFIX, key):
        try:
            debroot.unpack(debs, build_root)
            configure_rootfs(build_root)
            add_app(build_root)
            log(f"rootfs ready ({time.monotonic() - started:.0f}s); writing {archive.name}")
            write_oci_archive(build_root, archive, image)
            if keep_rootfs:
                shutil.rmtree(rootfs, ignore_errors=True)
                build_root.rename(rootfs)
                result["rootfs"] = str(rootfs)
        finally:
            shutil.rmtree(build_root, ignore_errors=True)
    debroot.prune_stale(images, ARCHIVE_PREFIX, keep=key, log=log)
    log(f"built {image} in {time.monotonic() - started:.0f}s: {archive} ({archive.stat().st_size >> 20} MiB)")
    return result


def main() -> None:
    parser = debroot.arg_parser(__doc__, IMAGE_REPO)
    parser.add_argument("--keep-rootfs", action="store_true", help="also keep the unpacked rootfs next to the archive")
    parser.add_argument("--json", action="store_true", help="print {archive, image[, rootfs]} as JSON")
    args = parser.parse_args()
    result = build(args.cache, args.name, args.keep_rootfs)
    print(json.dumps(result) if args.json else result["archive"])


if __name__ == "__main__":
    main()
