"""Local dependencies -> `spark.kubernetes.file.upload.path/spark-upload-<uuid>/`, through fsspec.

Spark uploads local files to the same directory and silently overwrites one `util.py` with another;
we refuse duplicate base names up front. Each upload is verified by size, and the whole directory
is removed again when the submit fails. `gc_uploads` removes directories older than a cutoff
(Spark never cleans them). `s3a://` is Hadoop's name for S3: the conf keeps it for the driver, fsspec
is handed `s3://`, configured from the same `spark.hadoop.fs.s3a.*` confs the driver will use.
"""

from __future__ import annotations

import os
import posixpath
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from kubeaccel.errors import ConfigError, KubeaccelError, NotFoundError, UnavailableError
from kubeaccel.paths import user_path
from kubeaccel.spark.conf import SubmitRequest, split_list

UPLOAD_PATH_KEY = "spark.kubernetes.file.upload.path"
UPLOAD_DIR_PREFIX = "spark-upload-"
_LIST_KEYS = ("spark.jars", "spark.files", "spark.archives", "spark.submit.pyFiles")
_CHUNK = 8 * 2**20
Progress = Callable[[str, int, int], None]  # (file name, bytes sent, total bytes)


def is_local(uri: str) -> bool:
    scheme = urlparse(uri).scheme
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def _local_path(uri: str) -> Path:
    return user_path(urlparse(uri).path if uri.startswith("file:") else uri, "the local file")


StorageOptions = Mapping[str, Any]  # fsspec's options for one store, resolved once from the conf


def storage_options(url: str, conf: Mapping[str, str]) -> StorageOptions:
    """fsspec options from the Hadoop confs the driver uses for the same store (read once per submit or gc)."""
    if not url.startswith(("s3://", "s3a://")):
        return {}
    options: dict[str, Any] = {}
    endpoint = conf.get("spark.hadoop.fs.s3a.endpoint")
    if endpoint:
        options["client_kwargs"] = {"endpoint_url": endpoint if "://" in endpoint else f"https://{endpoint}"}
    if conf.get("spark.hadoop.fs.s3a.access.key"):
        options["key"] = conf["spark.hadoop.fs.s3a.access.key"]
        options["secret"] = conf.get("spark.hadoop.fs.s3a.secret.key", "")
    return options


def filesystem(url: str, storage: StorageOptions) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for an upload URL; `s3a://` is opened as `s3://`."""
    import fsspec  # only submits with local files and gc-uploads pay for it

    fs_url = "s3://" + url[len("s3a://") :] if url.startswith("s3a://") else url
    try:
        fs, path = fsspec.core.url_to_fs(fs_url, **storage)
    except (ImportError, ValueError) as exc:
        raise ConfigError(
            f"cannot open {UPLOAD_PATH_KEY}={url!r}: {exc}",
            hint="install the fsspec driver for this scheme (s3fs for s3a://, gcsfs for gs://)",
        ) from exc
    return fs, path


@dataclass(frozen=True)
class Upload:
    source: Path
    uri: str  # as the driver will see it


@dataclass
class UploadPlan:
    base_url: str  # .../spark-upload-<uuid>, in the conf's scheme
    uploads: list[Upload] = field(default_factory=list)
    request: SubmitRequest | None = None
    conf: dict[str, str] = field(default_factory=dict)
    storage: StorageOptions = field(default_factory=dict)  # how to reach base_url, from the conf's s3a keys


def plan_uploads(request: SubmitRequest, conf: Mapping[str, str], upload_id: str | None = None) -> UploadPlan:
    """Decide what to upload and rewrite request + conf to the uploaded URIs. Pure apart from stat()."""
    conf = dict(conf)
    base = conf.get(UPLOAD_PATH_KEY, "").rstrip("/")
    base_url = f"{base}/{UPLOAD_DIR_PREFIX}{upload_id or uuid.uuid4()}"
    plan = UploadPlan(base_url=base_url)
    seen: dict[str, str] = {}

    def rewrite(uri: str) -> str:
        if not is_local(uri):
            return uri
        path_part, _, fragment = uri.partition("#")  # archives may carry '#alias'
        source = _local_path(path_part)
        if source.exists() and not source.is_file():
            raise ConfigError(
                f"local dependency {uri!r} is not a regular file (a directory, FIFO or device)",
                hint="give the file to upload, or use local:// for files already inside the image",
            )
        if not source.is_file():
            raise NotFoundError(
                f"local dependency {uri!r} does not exist",
                hint="check the path, or use local:// for files already inside the image",
            )
        name = source.name
        if name in seen and seen[name] != str(source.resolve()):
            raise ConfigError(
                f"two dependencies are both named {name!r}: {seen[name]} and {source}",
                hint="they would overwrite each other in the upload directory; rename one of them",
            )
        if not base:
            raise ConfigError(
                f"{uri!r} is a local file, but there is nowhere to upload it",
                hint=f"set {UPLOAD_PATH_KEY} (e.g. s3a://bucket/spark-uploads), or use local:// for files in the image",
            )
        target = f"{base_url}/{name}"
        if name not in seen:
            seen[name] = str(source.resolve())
            plan.uploads.append(Upload(source, target))
        return f"{target}#{fragment}" if fragment else target

    app_resource = rewrite(request.app_resource)
    for key in _LIST_KEYS:
        if conf.get(key):
            conf[key] = ",".join(rewrite(uri) for uri in split_list(conf[key]))
    for key in ("spark.kubernetes.driver.podTemplateFile", "spark.kubernetes.executor.podTemplateFile"):
        # only absence here: what else is wrong with the file (a FIFO, binary, too big) the template reader says
        if key in conf and is_local(conf[key]) and not _local_path(conf[key]).exists():
            raise NotFoundError(f"{key}={conf[key]!r} does not exist", hint="check the pod template path")
    plan.request = replace(request, app_resource=app_resource)
    plan.conf = conf
    if plan.uploads:
        plan.storage = storage_options(base_url, conf)
    return plan


def execute(plan: UploadPlan, progress: Progress | None = None) -> None:
    """Upload and verify every file; on any failure remove what was uploaded and raise."""
    if not plan.uploads:
        return
    fs, root = filesystem(plan.base_url, plan.storage)
    try:
        if not _is_object_store(fs):  # local and HDFS need the directory; on S3 it could create a bucket
            fs.makedirs(root, exist_ok=True)
        for upload in plan.uploads:
            _, target = filesystem(upload.uri, plan.storage)
            size = upload.source.stat().st_size
            _copy(upload.source, fs, target, progress)
            remote = fs.info(target).get("size")
            if remote != size:
                raise KubeaccelError(
                    f"upload of {upload.source} to {upload.uri} is incomplete: {remote} of {size} bytes",
                    hint="retry the submit",
                )
    except KubeaccelError:
        remove(plan)
        raise
    except Exception as exc:  # fsspec backends raise their own families (botocore, OSError, ...)
        remove(plan)
        raise UnavailableError(
            f"cannot upload to {plan.base_url}: {exc}",
            hint=f"check {UPLOAD_PATH_KEY} and the store's credentials/endpoint",
        ) from exc


def _is_object_store(fs: Any) -> bool:
    protocols = {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)
    return bool(protocols & {"s3", "s3a", "gs", "gcs", "abfs", "az", "oss"})


def _copy(source: Path, fs: Any, target: str, progress: Progress | None) -> None:
    """Stream one file in chunks so every backend reports progress the same way."""
    size = source.stat().st_size
    sent = 0
    with source.open("rb") as reader, fs.open(target, "wb") as writer:
        while chunk := reader.read(_CHUNK):
            writer.write(chunk)
            sent += len(chunk)
            if progress:
                progress(source.name, sent, size)
    if progress and size == 0:
        progress(source.name, 0, 0)


def remove(plan: UploadPlan) -> None:
    """Best-effort removal of an upload directory (used on rollback; never masks the first error)."""
    if not plan.uploads:
        return
    try:
        fs, root = filesystem(plan.base_url, plan.storage)
        if fs.exists(root):
            fs.rm(root, recursive=True)
    except Exception:
        pass


@dataclass(frozen=True)
class UploadDir:
    url: str
    modified: datetime
    files: int
    size: int


def _modified(info: Mapping[str, Any]) -> datetime | None:
    for key in ("LastModified", "mtime", "last_modified", "modified", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value if value.tzinfo else value.replace(tzinfo=UTC)
        if isinstance(value, int | float):
            return datetime.fromtimestamp(value, UTC)
    return None


def list_upload_dirs(upload_path: str, storage: StorageOptions) -> list[UploadDir]:
    """Every `spark-upload-*` directory under the upload path, aged by its newest file."""
    fs, root = filesystem(upload_path, storage)
    try:
        fs.invalidate_cache()
        entries = fs.ls(root, detail=True) if fs.exists(root) else []
    except Exception as exc:
        raise UnavailableError(f"cannot list {upload_path}: {exc}", hint="check the path and credentials") from exc
    scheme_root = upload_path.rstrip("/")
    result = []
    for entry in entries:
        name = posixpath.basename(entry["name"].rstrip("/"))
        if not name.startswith(UPLOAD_DIR_PREFIX) or entry.get("type") != "directory":
            continue
        files = [info for info in fs.find(entry["name"], detail=True).values() if info.get("type") == "file"]
        stamps = [stamp for stamp in (_modified(info) for info in files) if stamp is not None]
        own = _modified(entry)
        newest = max(stamps) if stamps else own or datetime.now(UTC)
        result.append(UploadDir(f"{scheme_root}/{name}", newest, len(files), sum(int(f.get("size", 0)) for f in files)))
    return sorted(result, key=lambda d: d.modified)


def gc_uploads(
    upload_path: str,
    older_than: timedelta,
    conf: Mapping[str, str],
    *,
    dry_run: bool = False,
    now: datetime | None = None,
) -> list[UploadDir]:
    """Remove upload directories whose newest file is older than `older_than`; returns them."""
    cutoff = (now or datetime.now(UTC)) - older_than
    storage = storage_options(upload_path, conf)
    old = [d for d in list_upload_dirs(upload_path, storage) if d.modified < cutoff]
    if not dry_run:
        fs, _ = filesystem(upload_path, storage)
        for directory in old:
            _, path = filesystem(directory.url, storage)
            fs.rm(path, recursive=True)
    return old


def parse_age(text: str) -> timedelta:
    """`7d`, `12h`, `30m`, `90s`, `2w` -> timedelta."""
    units = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
    raw = text.strip()
    if len(raw) < 2 or raw[-1] not in units or not raw[:-1].isdigit():
        raise ConfigError(f"{text!r} is not an age", hint="use a number and a unit: 90s, 30m, 12h, 7d, 2w")
    return timedelta(**{units[raw[-1]]: int(raw[:-1])})
