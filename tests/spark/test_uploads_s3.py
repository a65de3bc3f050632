"""Dependency uploads to a real S3-compatible server (moto, server mode, on loopback).

Matrix: upload + verify + conf rewrite with s3a:// (opened as s3://); a submit whose API call fails
removes its uploads; a missing bucket fails clearly (and is not created); gc-uploads by age (CLI and API).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fixtures.s3 import S3Server
from fixtures.spark import SPARK_USER, run_cli

from kubeaccel.errors import NotFoundError, UnavailableError
from kubeaccel.kube.client import Kube
from kubeaccel.spark import uploads
from kubeaccel.spark.conf import SubmitRequest, parse_properties, resolve_conf
from kubeaccel.spark.submit import submit


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    (tmp_path / "job.py").write_text("print('hello from the job')\n")
    (tmp_path / "helpers.py").write_text("X = 1\n" * 10_000)
    (tmp_path / "lookup.csv").write_text("a,b\n1,2\n")
    return tmp_path


def _request(
    app_dir: Path, s3: S3Server, bucket: str, master: str = "k8s://https://127.0.0.1:6443", **conf: str
) -> SubmitRequest:
    return SubmitRequest(
        str(app_dir / "job.py"),
        master=master,
        py_files=(str(app_dir / "helpers.py"),),
        files=(f"file://{app_dir}/lookup.csv",),
        conf={
            "spark.kubernetes.file.upload.path": f"s3a://{bucket}/uploads",
            "spark.kubernetes.container.image": "spark:test",
            **s3.spark_conf(),
            **conf,
        },
    )


def test_upload_to_s3_and_rewrite(app_dir: Path, s3_server: S3Server, s3_bucket: str) -> None:
    request = _request(app_dir, s3_server, s3_bucket)
    plan = uploads.plan_uploads(request, resolve_conf(request), upload_id="u1")
    uploads.execute(plan)
    base = f"s3a://{s3_bucket}/uploads/spark-upload-u1"
    assert plan.request is not None and plan.request.app_resource == f"{base}/job.py"
    assert plan.conf["spark.submit.pyFiles"] == f"{base}/helpers.py"
    assert plan.conf["spark.files"] == f"{base}/lookup.csv"
    fs = s3_server.filesystem()
    assert fs.cat(f"{s3_bucket}/uploads/spark-upload-u1/helpers.py") == (app_dir / "helpers.py").read_bytes()
    assert sorted(p.rsplit("/", 1)[1] for p in fs.ls(f"{s3_bucket}/uploads/spark-upload-u1")) == [
        "helpers.py",
        "job.py",
        "lookup.csv",
    ]


def test_missing_bucket_fails_clearly_and_is_not_created(app_dir: Path, s3_server: S3Server) -> None:
    request = _request(app_dir, s3_server, "no-such-bucket-h4")
    plan = uploads.plan_uploads(request, resolve_conf(request))
    with pytest.raises(UnavailableError) as info:
        uploads.execute(plan)
    assert "cannot upload to s3a://no-such-bucket-h4/uploads/spark-upload-" in info.value.message
    assert "spark.kubernetes.file.upload.path" in (info.value.hint or "")
    assert not s3_server.filesystem().exists("no-such-bucket-h4")


def test_gc_uploads(app_dir: Path, s3_server: S3Server, s3_bucket: str) -> None:
    for upload_id in ("old1", "old2"):
        request = _request(app_dir, s3_server, s3_bucket)
        plan = uploads.plan_uploads(request, resolve_conf(request), upload_id=upload_id)
        uploads.execute(plan)
    fs = s3_server.filesystem()
    fs.pipe(f"{s3_bucket}/uploads/keep-me.txt", b"not an upload dir")
    url = f"s3a://{s3_bucket}/uploads"
    conf_args = [arg for k, v in s3_server.spark_conf().items() for arg in ("--conf", f"{k}={v}")]

    code, output, _ = run_cli(
        ["spark", "gc-uploads", "--upload-path", url, "--older-than", "1h", "-o", "json", *conf_args]
    )
    assert code == 0 and json.loads(output) == []

    later = datetime.now(UTC) + timedelta(days=8)
    dry = uploads.gc_uploads(url, timedelta(days=7), s3_server.spark_conf(), dry_run=True, now=later)
    assert sorted(d.url for d in dry) == [f"{url}/spark-upload-old1", f"{url}/spark-upload-old2"]
    assert all(d.files == 3 for d in dry)
    removed = uploads.gc_uploads(url, timedelta(days=7), s3_server.spark_conf(), now=later)
    assert len(removed) == 2
    fs.invalidate_cache()
    assert [p.rsplit("/", 1)[1] for p in fs.ls(f"{s3_bucket}/uploads")] == ["keep-me.txt"]


@pytest.mark.cluster
def test_submit_uploads_and_failed_submit_removes_them(
    app_dir: Path,
    s3_server: S3Server,
    s3_bucket: str,
    kube: Kube,
    spark_namespace: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightkube.resources.core_v1 import ConfigMap, Pod

    monkeypatch.setenv("SPARK_USER", SPARK_USER)
    fs = s3_server.filesystem()
    master = f"k8s://{kube.server}"
    sid = submit(
        _request(app_dir, s3_server, s3_bucket, master, **{"spark.kubernetes.namespace": spark_namespace}), kube=kube
    )
    pod = kube.get(Pod, sid.pod, namespace=sid.namespace)
    app_resource = pod.spec.containers[0].args[5]
    assert app_resource.startswith(f"s3a://{s3_bucket}/uploads/spark-upload-") and app_resource.endswith("/job.py")
    config_map_name = next(v.configMap.name for v in pod.spec.volumes if v.name == "spark-conf-volume-driver")
    props = parse_properties(kube.get(ConfigMap, config_map_name, namespace=sid.namespace).data["spark.properties"])
    assert props["spark.submit.pyFiles"].endswith("/helpers.py")
    upload_dir = app_resource.removeprefix("s3a://").rsplit("/", 1)[0]
    assert fs.cat(f"{upload_dir}/job.py") == (app_dir / "job.py").read_bytes()

    before = set(fs.ls(f"{s3_bucket}/uploads"))
    with pytest.raises(NotFoundError):
        submit(
            _request(app_dir, s3_server, s3_bucket, master, **{"spark.kubernetes.namespace": "no-such-ns-h4"}),
            kube=kube,
        )
    fs.invalidate_cache()
    assert set(fs.ls(f"{s3_bucket}/uploads")) == before
