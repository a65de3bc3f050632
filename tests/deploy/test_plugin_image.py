"""The device-plugin image: ``deploy/plugin/build_image.py`` (no Docker) and ``deploy/plugin/Dockerfile``
(for Docker users) describe the same image, and the built archive is that image and runs.

The Dockerfile cannot be built here (no Docker engine), so its instructions are parsed and compared
with the builder's constants; the archive the builder made is opened and compared with both; its
root file system is unpacked and the daemon's CLI runs in it (chroot) on a simulated config.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
from deploy.chart import REPO, image_builder

PLUGIN = REPO / "deploy" / "plugin"
builder = image_builder()


def dockerfile_stages(text: str) -> list[list[tuple[str, str]]]:
    """The Dockerfile as stages of (INSTRUCTION, arguments), continuation lines joined."""
    joined = text.replace("\\\n", " ")
    stages: list[list[tuple[str, str]]] = []
    for raw in joined.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        op, _, args = line.partition(" ")
        if op.upper() == "FROM":
            stages.append([])
        stages[-1].append((op.upper(), " ".join(args.split())))
    return stages


STAGES = dockerfile_stages((PLUGIN / "Dockerfile").read_text())
FINAL = STAGES[-1]


def instruction(stage: list[tuple[str, str]], op: str) -> list[str]:
    return [args for name, args in stage if name == op]


def test_both_recipes_start_from_the_same_debian_release() -> None:
    bases = [instruction(stage, "FROM")[0].split()[0] for stage in STAGES]
    assert bases == [f"debian:{builder.BASE_RELEASE}-slim"] * len(STAGES)


def test_dockerfile_installs_the_builders_package_list() -> None:
    assert "COPY deploy/plugin/packages.txt /tmp/packages.txt" in [f"COPY {a}" for a in instruction(FINAL, "COPY")]
    (install,) = [a for a in instruction(FINAL, "RUN") if "apt-get install" in a]
    assert "/tmp/packages.txt" in install and "--no-install-recommends" in install
    packages = (PLUGIN / "packages.txt").read_text()
    assert "python3" in packages.split() and "libstdc++6" in packages.split()


def test_dockerfile_pip_install_matches_the_builder() -> None:
    (pip,) = [a for a in instruction(STAGES[0], "RUN") if "pip install" in a]
    words = shlex.split(pip)
    assert words[words.index("--target") + 1] == f"/out{builder.SITE}"
    assert f".[{builder.PIP_EXTRAS}]" in words
    assert "--no-compile" in words
    assert f"rm -rf /out{builder.SITE}/bin" in pip  # console scripts dropped, as the builder does
    assert "--invalidation-mode unchecked-hash" in pip  # the .pyc stay valid with zeroed mtimes
    assert "COPY --from=build /out/ /" in [f"COPY {a}" for a in instruction(FINAL, "COPY")]


def test_dockerfile_entrypoint_env_user_workdir_port_match_the_builder() -> None:
    (entrypoint,) = instruction(FINAL, "ENTRYPOINT")
    assert tuple(json.loads(entrypoint)) == builder.ENTRYPOINT
    (env,) = instruction(FINAL, "ENV")
    assert dict(pair.split("=", 1) for pair in shlex.split(env)) == builder.ENV
    assert instruction(FINAL, "USER") == [builder.USER]
    assert instruction(FINAL, "WORKDIR") == [builder.WORKDIR]
    assert instruction(FINAL, "EXPOSE") == [str(builder.METRICS_PORT)]


def test_dockerfile_parser_sees_a_changed_entrypoint() -> None:
    text = (PLUGIN / "Dockerfile").read_text().replace('"plugin", "run"', '"plugin", "devices"')
    (entrypoint,) = instruction(dockerfile_stages(text)[-1], "ENTRYPOINT")
    assert tuple(json.loads(entrypoint)) != builder.ENTRYPOINT


# --- the built archive -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def built() -> dict[str, str]:
    """The archive (a no-op when scripts/bootstrap.d/55-plugin-image.sh already built these sources)."""
    assert os.geteuid() == 0, "the image build needs root (CI runs as root)"
    return builder.build()  # type: ignore[no-any-return]


def _archive_parts(archive: Path) -> tuple[dict[str, Any], dict[str, Any], str]:
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        (entry,) = index["manifests"]

        def blob(digest: str) -> bytes:
            return tar.extractfile(f"blobs/sha256/{digest.split(':')[1]}").read()  # type: ignore[union-attr]

        manifest = json.loads(blob(entry["digest"]))
        config = json.loads(blob(manifest["config"]["digest"]))
        (layer,) = manifest["layers"]
        return entry, config, layer["digest"]


@pytest.mark.slow
def test_archive_is_the_image_the_recipes_describe(built: dict[str, str]) -> None:
    entry, config, _ = _archive_parts(Path(built["archive"]))
    assert entry["annotations"]["io.containerd.image.name"] == built["image"]
    assert built["image"].startswith(builder.IMAGE_REPO + ":")
    assert tuple(config["config"]["Entrypoint"]) == builder.ENTRYPOINT
    assert dict(e.split("=", 1) for e in config["config"]["Env"]) == builder.ENV
    assert config["config"]["User"] == builder.USER
    assert config["config"]["WorkingDir"] == builder.WORKDIR


@pytest.fixture(scope="module")
def rootfs(built: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("plugin-rootfs")
    _, _, layer = _archive_parts(Path(built["archive"]))
    root = out / "root"
    root.mkdir()
    with tarfile.open(built["archive"]) as tar:
        blob = tar.extractfile(f"blobs/sha256/{layer.split(':')[1]}")
        assert blob is not None
        # GNU tar, as root: keeps ownership, modes and device files as containerd would.
        subprocess.run(["tar", "-x", "-C", str(root)], stdin=None, input=blob.read(), check=True)
    return out / "root"


@pytest.mark.slow
def test_image_holds_kubeaccel_as_in_the_source_tree_byte_compiled(rootfs: Path) -> None:
    site = rootfs / builder.SITE.lstrip("/")
    sources = sorted(p.relative_to(REPO / "src") for p in (REPO / "src" / "kubeaccel").rglob("*.py"))
    assert sources
    for rel in sources:
        assert (site / rel).read_bytes() == (REPO / "src" / rel).read_bytes(), rel
    assert (site / "kubeaccel/__pycache__/cli.cpython-311.pyc").exists()
    for dependency in ("grpc", "google/protobuf", "pydantic", "yaml", "click", "prometheus_client", "pynvml.py"):
        assert (site / dependency).exists(), dependency
    assert not (site / "bin").exists()
    assert (rootfs / "usr/bin/python3").exists() and (rootfs / "etc/kubeaccel").is_dir()


@pytest.mark.slow
def test_the_daemon_cli_runs_in_the_image(rootfs: Path) -> None:
    (rootfs / "etc/kubeaccel/plugin.yaml").write_text(
        "resources:\n  - name: example.com/sim\n    backend: simulated\n    count: 3\n    numaNodes: 1\n"
    )
    command = [*builder.ENTRYPOINT[:3], "plugin", "devices", "--config", builder.CONFIG_PATH]
    env = {**builder.ENV, "HOME": "/root"}
    done = subprocess.run(["chroot", str(rootfs), *command], capture_output=True, text=True, env=env, timeout=120,
                          check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert [f"sim-{i}" in done.stdout for i in range(3)] == [True] * 3
    # The image's Python is Debian's, not this interpreter: the .pyc were compiled for its version.
    probe = ["chroot", str(rootfs), "/usr/bin/python3", "-c", "import sys; print(sys.version_info[:2])"]
    version = subprocess.run(probe, capture_output=True, text=True, env=env, check=True).stdout
    assert version.strip() == str(tuple(sys.version_info[:2]))
