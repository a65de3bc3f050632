"""Dependency uploads through fsspec on the local filesystem (S3 via moto: test_uploads_s3.py).

Matrix: what is local (bare path, file://) vs left alone (local://, s3a://); conf rewriting for
the application, jars, files, py-files and archives (#alias kept); duplicate base names refused;
missing files and missing upload path; verification and removal; gc by age.
"""

from __future__ import annotations

import os
import time
from datetime import timedelta
from pathlib import Path

import pytest

from kubeaccel.errors import ConfigError, NotFoundError
from kubeaccel.spark import uploads
from kubeaccel.spark.conf import SubmitRequest, resolve_conf

MASTER = "k8s://https://127.0.0.1:6443"


@pytest.fixture
def deps(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "other").mkdir(parents=True)
    for name in ("app.py", "util.py", "data.csv", "env.tar.gz", "extra.jar"):
        (src / name).write_text(f"content of {name}\n" * 100)
    (src / "other" / "util.py").write_text("a different util\n")
    return src


def _request(deps: Path, store: Path, **kwargs: object) -> SubmitRequest:
    conf = {"spark.kubernetes.file.upload.path": f"file://{store}", "spark.kubernetes.container.image": "img"}
    defaults: dict[str, object] = {
        "app_resource": str(deps / "app.py"),
        "master": MASTER,
        "conf": conf,
        "py_files": (f"file://{deps}/util.py",),
        "files": (str(deps / "data.csv"), "s3a://bucket/remote.csv"),
        "archives": (f"{deps}/env.tar.gz#env",),
        "jars": ("local:///opt/in-image.jar", str(deps / "extra.jar")),
    }
    defaults.update(kwargs)
    return SubmitRequest(**defaults)  # type: ignore[arg-type]


def test_plan_rewrites_local_uris_only(deps: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    request = _request(deps, store)
    plan = uploads.plan_uploads(request, resolve_conf(request), upload_id="fixed")
    base = f"file://{store}/spark-upload-fixed"
    assert plan.request is not None
    assert plan.request.app_resource == f"{base}/app.py"
    assert plan.conf["spark.submit.pyFiles"] == f"{base}/util.py"
    assert plan.conf["spark.files"] == f"{base}/data.csv,s3a://bucket/remote.csv"
    assert plan.conf["spark.archives"] == f"{base}/env.tar.gz#env"
    assert plan.conf["spark.jars"] == f"local:///opt/in-image.jar,{base}/extra.jar"
    assert sorted(u.source.name for u in plan.uploads) == ["app.py", "data.csv", "env.tar.gz", "extra.jar", "util.py"]


def test_upload_verify_and_remove(deps: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    request = _request(deps, store)
    conf = resolve_conf(request)
    plan = uploads.plan_uploads(request, conf)
    seen: list[tuple[str, int, int]] = []
    uploads.execute(plan, progress=lambda name, sent, total: seen.append((name, sent, total)))
    [directory] = list(store.iterdir())
    assert directory.name.startswith("spark-upload-")
    assert (directory / "util.py").read_text() == (deps / "util.py").read_text()
    assert {name for name, _, _ in seen} == {"app.py", "util.py", "data.csv", "env.tar.gz", "extra.jar"}
    final = {name: (sent, total) for name, sent, total in seen}
    assert all(sent == total == (deps / name).stat().st_size for name, (sent, total) in final.items())
    uploads.remove(plan)
    assert list(store.iterdir()) == []


def test_duplicate_base_names_are_refused(deps: Path, tmp_path: Path) -> None:
    request = _request(deps, tmp_path / "store", files=(str(deps / "other" / "util.py"),))
    with pytest.raises(ConfigError) as info:
        uploads.plan_uploads(request, resolve_conf(request))
    assert "both named 'util.py'" in info.value.message
    assert "rename" in (info.value.hint or "")


def test_missing_local_file(deps: Path, tmp_path: Path) -> None:
    request = _request(deps, tmp_path / "store", jars=(str(deps / "nope.jar"),))
    with pytest.raises(NotFoundError, match=r"nope\.jar"):
        uploads.plan_uploads(request, resolve_conf(request))


def test_local_file_without_upload_path(deps: Path, tmp_path: Path) -> None:
    request = _request(deps, tmp_path, conf={"spark.kubernetes.container.image": "img"})
    with pytest.raises(ConfigError) as info:
        uploads.plan_uploads(request, resolve_conf(request))
    assert "spark.kubernetes.file.upload.path" in (info.value.hint or "")


def test_nothing_local_nothing_uploaded(tmp_path: Path) -> None:
    request = SubmitRequest("local:///opt/app.py", master=MASTER, conf={"spark.kubernetes.container.image": "i"})
    plan = uploads.plan_uploads(request, resolve_conf(request))
    assert plan.uploads == []
    uploads.execute(plan)  # no upload path needed, nothing touched


def test_gc_removes_only_old_upload_dirs(tmp_path: Path) -> None:
    store = tmp_path / "store"
    for name, age_days in (("spark-upload-old", 10), ("spark-upload-new", 1), ("not-ours", 30)):
        (store / name).mkdir(parents=True)
        file = store / name / "app.py"
        file.write_text("x")
        stamp = time.time() - age_days * 86400
        os.utime(file, (stamp, stamp))
    url = f"file://{store}"
    dry = uploads.gc_uploads(url, timedelta(days=7), {}, dry_run=True)
    assert [d.url for d in dry] == [f"{url}/spark-upload-old"]
    assert (store / "spark-upload-old").exists()
    removed = uploads.gc_uploads(url, timedelta(days=7), {})
    assert [d.url for d in removed] == [f"{url}/spark-upload-old"]
    assert sorted(p.name for p in store.iterdir()) == ["not-ours", "spark-upload-new"]


@pytest.mark.parametrize(
    ("text", "delta"),
    [
        ("7d", timedelta(days=7)),
        ("90s", timedelta(seconds=90)),
        ("2w", timedelta(weeks=2)),
        ("12h", timedelta(hours=12)),
    ],
)
def test_parse_age(text: str, delta: timedelta) -> None:
    assert uploads.parse_age(text) == delta


@pytest.mark.parametrize("text", ["", "7", "d", "7y", "-1d"])
def test_bad_age(text: str) -> None:
    with pytest.raises(ConfigError):
        uploads.parse_age(text)
