"""The kubeaccel Spark image, built locally with no registry and no Docker engine.

The archive is checked as an OCI image (index -> manifest -> config and layer digests), and the
root filesystem it was packed from is run for real in a private mount/PID/UTS namespace with
chroot, as the image's user (185): the discovery script, the entrypoint's driver mode running
the example app on Spark in local mode, and the entrypoint's refusal of an incomplete executor.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile

import pytest
from e2e.apps import REPO, pi_estimate, task_reports

pytestmark = [pytest.mark.slow]

BUILDER = REPO / "deploy" / "spark" / "build_image.py"
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, str(BUILDER), "--keep-rootfs", "--json"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result: dict[str, str] = json.loads(done.stdout)
    return result


def in_image(
    rootfs: str, argv: list[str], env: dict[str, str], timeout: float = 180
) -> subprocess.CompletedProcess[str]:
    """Run ``argv`` inside the image's rootfs as UID 185 with /proc and /dev, like a container."""
    base = {"PATH": IMAGE_PATH, "HOME": "/opt/spark/work-dir", "LANG": "C.UTF-8"}
    env_args = [f"{k}={v}" for k, v in {**base, **env}.items()]
    script = (
        'set -e; hostname localhost; mount -t proc proc "$0/proc"; mount --rbind /dev "$0/dev"; cd /; exec env -i "$@"'
    )
    cmd = [
        "unshare", "--mount", "--uts", "--pid", "--fork", "--propagation", "private",
        "sh", "-c", script, rootfs, *env_args, "/usr/sbin/chroot", "--userspec=185:185", rootfs, *argv,
    ]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def test_archive_is_a_valid_oci_image(built: dict[str, str]) -> None:
    with tarfile.open(built["archive"]) as archive:
        names = set(archive.getnames())

        def blob(digest: str) -> bytes:
            member = archive.extractfile(f"./blobs/sha256/{digest.split(':')[1]}")
            assert member is not None
            return member.read()

        index = json.loads(archive.extractfile("./index.json").read())  # type: ignore[union-attr]
        assert "./oci-layout" in names and "./manifest.json" in names
        (entry,) = index["manifests"]
        assert entry["annotations"]["io.containerd.image.name"] == built["image"]
        manifest_bytes = blob(entry["digest"])
        assert "sha256:" + hashlib.sha256(manifest_bytes).hexdigest() == entry["digest"]
        manifest = json.loads(manifest_bytes)
        config_bytes = blob(manifest["config"]["digest"])
        assert "sha256:" + hashlib.sha256(config_bytes).hexdigest() == manifest["config"]["digest"]
        config = json.loads(config_bytes)
        (layer,) = manifest["layers"]
        assert config["rootfs"]["diff_ids"] == [layer["digest"]]
        member = archive.getmember(f"./blobs/sha256/{layer['digest'].split(':')[1]}")
        assert member.size == layer["size"]
    assert config["config"]["Entrypoint"][-1] == "/opt/kubeaccel/entrypoint.py"
    assert config["config"]["User"] == "185"
    env = dict(item.split("=", 1) for item in config["config"]["Env"])
    assert env["SPARK_HOME"].endswith("/pyspark") and env["JAVA_HOME"].startswith("/usr/lib/jvm/")
    # Never :latest: the kubelet would then always try to pull, and there is no registry.
    assert not built["image"].endswith(":latest")


def test_second_build_is_cached(built: dict[str, str]) -> None:
    done = subprocess.run(
        [sys.executable, str(BUILDER), "--keep-rootfs", "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == built
    assert "cached" in done.stderr


def test_discovery_script_in_the_image(built: dict[str, str]) -> None:
    ok = in_image(built["rootfs"], ["/usr/local/bin/kubeaccel-discover"], {"KUBEACCEL_DEVICES_NEC_COM_VE": "2,5"})
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout) == {"name": "ve", "addresses": ["2", "5"]}
    none = in_image(built["rootfs"], ["/usr/local/bin/kubeaccel-discover", "nec.com/ve"], {})
    assert none.returncode == 3
    assert "no nec.com/ve devices allocated" in none.stderr


@pytest.mark.spark
def test_driver_mode_runs_the_example_app(built: dict[str, str]) -> None:
    env = {
        "JAVA_HOME": "/usr/lib/jvm/java-17-openjdk-amd64",
        "SPARK_HOME": "/usr/local/lib/python3.11/dist-packages/pyspark",
        "PYSPARK_PYTHON": "/usr/bin/python3",
        "SPARK_DRIVER_BIND_ADDRESS": "127.0.0.1",
        "KUBEACCEL_DEVICES_NEC_COM_VE": "4",
    }
    argv = [
        "/usr/bin/tini", "-s", "--", "/usr/bin/python3", "/opt/kubeaccel/entrypoint.py", "driver",
        "--master", "local[2]", "--conf", "spark.ui.enabled=false", "--conf", "spark.driver.host=127.0.0.1",
        "/opt/kubeaccel/examples/accel_pi.py", "2",
    ]  # fmt: skip
    done = in_image(built["rootfs"], argv, env)
    assert done.returncode == 0, done.stderr[-5000:]
    assert "exec /usr/local/lib/python3.11/dist-packages/pyspark/bin/spark-submit" in done.stderr
    assert "spark.driver.bindAddress=127.0.0.1" in done.stderr
    assert abs(pi_estimate(done.stdout) - 3.14) < 0.1
    reports = task_reports(done.stdout)
    assert [r["partition"] for r in sorted(reports, key=lambda r: r["partition"])] == [0, 1]
    # The task's environment is the container's: what the plugin's Allocate put there.
    assert all(r["env"] == {"KUBEACCEL_DEVICES_NEC_COM_VE": "4"} for r in reports)


def test_spark_layout_paths_exist(built: dict[str, str]) -> None:
    # Paths users know from Spark's own image: /opt/spark/{jars,bin,examples}.
    script = (
        "test -f /opt/spark/examples/src/main/python/pi.py && test -x /opt/spark/bin/spark-submit "
        "&& ls /opt/spark/jars/spark-kubernetes_*.jar"
    )
    done = in_image(built["rootfs"], ["/bin/sh", "-c", script], {})
    assert done.returncode == 0, done.stderr
    assert "spark-kubernetes_" in done.stdout


def test_executor_mode_names_what_is_missing(built: dict[str, str]) -> None:
    done = in_image(built["rootfs"], ["/usr/bin/python3", "/opt/kubeaccel/entrypoint.py", "executor"], {})
    assert done.returncode == 2
    assert "executor mode needs SPARK_DRIVER_URL" in done.stderr
