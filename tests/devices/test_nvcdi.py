"""kubeaccel's NVIDIA CDI spec against the real ``nvidia-ctk cdi generate`` over the same fake driver root.

Matrix: a Debian layout (``usr/lib/x86_64-linux-gnu``), the same with a merged ``/usr`` (``/lib`` a link
to ``usr/lib``: every library reachable twice) and a RHEL one (``usr/lib64``); with NVIDIA's
hooks (a hook binary under the driver root) and without (the bind-mount equivalents). Compared:
the mounted host files with their container paths and options, the device nodes, the hooks' meaning
(the links ``create-symlinks`` makes, the folders ``update-ldcache`` adds, the driver version
``enable-cuda-compat`` gets) and ``NVIDIA_CTK_LIBCUDA_DIR``. ``nvidia-ctk`` runs in
``--mode=management`` (the one mode that needs no NVML): its single ``all`` device holds every
``/dev/nvidia*`` node, and it adds management-only edits (``NVIDIA_VISIBLE_DEVICES=void`` and a
``/dev/null`` mount) that a per-GPU spec does not have; ``/dev/nvidia-caps`` nodes are for MIG.

``nvidia-ctk`` is built by ``scripts/bootstrap.d/30-nvidia-ctk.sh`` (CI runs bootstrap first); the
test fails, never skips, without it. The tree needs root (real character devices).
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from fixtures.nvdriver import LIBDIR, VERSION, make_cloud_driver_root, make_driver_root

from kubeaccel.devices import nvcdi
from kubeaccel.devices.model import DeviceNode
from kubeaccel.errors import UnavailableError

REPO = Path(__file__).resolve().parents[2]
BOOTSTRAP = REPO / "scripts/bootstrap.d/30-nvidia-ctk.sh"


def nvidia_ctk() -> Path:
    """The binary the bootstrap step built; its version is read from the step (one place)."""
    match = re.search(r"NVIDIA_CTK_VERSION=\$\{NVIDIA_CTK_VERSION:-([0-9.]+)\}", BOOTSTRAP.read_text())
    assert match, f"no NVIDIA_CTK_VERSION in {BOOTSTRAP}"
    cache = Path(os.environ.get("KUBEACCEL_NVIDIA_CTK_CACHE", Path.home() / ".cache/kubeaccel/nvidia-ctk"))
    binary = cache / f"v{match.group(1)}/bin/nvidia-ctk"
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} is missing: run {BOOTSTRAP.relative_to(REPO)} (make test runs bootstrap first)")
    return binary


def reference(root: Path, hook: str, *, path: str | None = None) -> dict[str, Any]:
    env = {**os.environ, "PATH": path} if path is not None else None
    out = subprocess.run(
        [str(nvidia_ctk()), "--quiet", "cdi", "generate", "--mode=management", f"--driver-root={root}",
         f"--nvidia-cdi-hook-path={hook}", "--format=yaml"],
        check=True, capture_output=True, text=True, timeout=60, env=env,
    )
    doc = yaml.safe_load(out.stdout)
    assert isinstance(doc, dict)
    return doc


def ours(root: Path, hook: str | None) -> dict[str, Any]:
    gpus = [nvcdi.Gpu((f"GPU-{i}", str(i)), DeviceNode(str(root / f"dev/nvidia{i}"), f"/dev/nvidia{i}"))
            for i in (0, 1)]
    control = [DeviceNode(str(root / "dev" / n), f"/dev/{n}") for n in ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools")]
    files = nvcdi.discover(root)
    return nvcdi.spec(gpus, control, files, driver_root=root, host_root=root, hook_path=hook, env={})


def mounts(edits: dict[str, Any]) -> set[tuple[str, str, tuple[str, ...]]]:
    return {(m["hostPath"], m["containerPath"], tuple(m["options"])) for m in edits.get("mounts", [])}


def nodes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    every = [doc.get("containerEdits", {}), *(d["containerEdits"] for d in doc["devices"])]
    return {(n["path"], n["hostPath"]) for e in every for n in e.get("deviceNodes", [])}


def hooks(edits: dict[str, Any]) -> dict[str, tuple[str, str, list[str]]]:
    """subcommand -> (hook path, lifecycle, the arguments after it)."""
    out = {}
    for h in edits.get("hooks", []):
        args = h["args"]
        out[args[1]] = (h["path"], h["hookName"], args[2:])
    return out


def env(edits: dict[str, Any]) -> dict[str, str]:
    return dict(e.split("=", 1) for e in edits.get("env", []))


@pytest.fixture(params=[(LIBDIR, False), (LIBDIR, True), ("usr/lib64", False)], ids=["debian", "merged-usr", "rhel"])
def driver_root(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    libdir, merged = request.param
    return make_driver_root(tmp_path / "driver", libdir_name=libdir, merged_usr=merged)


def test_spec_agrees_with_nvidia_ctk(driver_root: Path) -> None:
    hook = str(driver_root / "usr/bin/nvidia-cdi-hook")
    theirs, mine = reference(driver_root, hook), ours(driver_root, hook)
    assert mine["kind"] == "nvidia.kubeaccel.io/gpu" != theirs["kind"] == "nvidia.com/gpu"
    common, their_common = mine["containerEdits"], theirs["containerEdits"]
    void = {("/dev/null", "/var/run/nvidia-container-devices/void", ("ro", "nosuid", "nodev", "bind"))}
    assert mounts(common) == mounts(their_common) - void
    assert len(mounts(common)) == 5 + 12 + 2  # binaries, libraries (vdpau too), firmware
    caps = {n for n in nodes(theirs) if n[0].startswith("/dev/nvidia-caps/")}
    assert nodes(mine) == nodes(theirs) - caps
    assert hooks(common) == hooks(their_common)
    assert set(hooks(common)) == {"create-symlinks", "update-ldcache", "enable-cuda-compat"}
    assert hooks(common)["enable-cuda-compat"][2] == [f"--host-driver-version={VERSION}"]
    assert env(common)["NVIDIA_CTK_LIBCUDA_DIR"] == env(their_common)["NVIDIA_CTK_LIBCUDA_DIR"]
    # One entry per GPU and name (UUID and index), each with its own node only.
    assert [d["name"] for d in mine["devices"]] == ["GPU-0", "0", "GPU-1", "1"]
    assert mine["devices"][2]["containerEdits"] == {
        "deviceNodes": [{"path": "/dev/nvidia1", "hostPath": str(driver_root / "dev/nvidia1"), "permissions": "rw"}]
    }


def test_without_a_hook_binary_links_become_mounts_of_the_same_files(driver_root: Path) -> None:
    theirs = reference(driver_root, str(driver_root / "usr/bin/nvidia-cdi-hook"))
    mine = ours(driver_root, None)["containerEdits"]
    assert "hooks" not in mine
    by_path = {c: h for h, c, _ in mounts(mine)}
    links = hooks(theirs["containerEdits"])["create-symlinks"][2][1::2]  # --link TARGET::LINK
    assert links
    for link in links:
        target, path = link.split("::")
        # The link nvidia-ctk would create resolves (in the container) to the file we mount there.
        expected = os.path.realpath(driver_root / path.lstrip("/") / ".." / target)
        assert os.path.realpath(by_path[path]) == expected, link
    # Every file nvidia-ctk mounts is mounted too.
    assert {c for _, c, _ in mounts(theirs["containerEdits"])} - {c for _, c, _ in mounts(mine)} == {
        "/var/run/nvidia-container-devices/void"
    }


def test_nvidia_ctk_hook_binary_takes_the_hook_subcommand(tmp_path: Path) -> None:
    root = make_driver_root(tmp_path / "d")  # management mode wants device nodes
    hook = str(root / "usr/bin/nvidia-ctk")
    assert hooks(reference(root, hook)["containerEdits"]) == hooks(ours(root, hook)["containerEdits"])
    assert nvcdi.hook_args("/usr/bin/nvidia-ctk", "update-ldcache")[:3] == ("nvidia-ctk", "hook", "update-ldcache")


def test_ipc_sockets_are_mounted_rw_noexec(tmp_path: Path) -> None:
    root = make_driver_root(tmp_path / "d")
    (root / "run/nvidia-persistenced").mkdir(parents=True)
    (root / "run/nvidia-persistenced/socket").touch()
    (root / "tmp/nvidia-mps").mkdir(parents=True)
    theirs = mounts(reference(root, "/usr/bin/nvidia-cdi-hook")["containerEdits"])
    mine = mounts(ours(root, "/usr/bin/nvidia-cdi-hook")["containerEdits"])
    ipc = {m for m in mine if "noexec" in m[2]}
    assert {m[1] for m in ipc} == {"/run/nvidia-persistenced/socket"}  # the MPS pipe dir: neither mounts it
    assert ipc <= theirs


def test_a_driver_root_without_nvml_is_unavailable_naming_the_root(tmp_path: Path) -> None:
    root = make_driver_root(tmp_path / "d", nodes=False, nvml=False)
    with pytest.raises(UnavailableError) as err:
        nvcdi.discover(root)
    assert str(root) in err.value.message and "libnvidia-ml" in err.value.message
    assert err.value.hint and "driverRoot" in err.value.hint
    with pytest.raises(UnavailableError):
        nvcdi.discover(tmp_path / "nothing-here")


def test_links_that_leave_the_driver_root_are_not_followed(tmp_path: Path) -> None:
    root = make_driver_root(tmp_path / "d", nodes=False)
    lib = root / LIBDIR / f"libcuda.so.{VERSION}"
    lib.unlink()
    lib.symlink_to("../../../../../../etc/passwd")  # escapes the root: no version from it
    files = nvcdi.discover(root)  # the version now comes from libnvidia-ml
    assert files.version == VERSION
    assert all("passwd" not in p for p in files.libraries)


def test_a_driver_root_reached_through_a_link_lists_each_library_once(tmp_path: Path) -> None:
    make_driver_root(tmp_path / "driver", nodes=False, merged_usr=True)
    (tmp_path / "host").symlink_to("driver")  # e.g. the host's / mounted where a link points
    files = nvcdi.discover(tmp_path / "host")
    assert files.library_dirs == (f"/{LIBDIR}",)
    assert len(files.libraries) == len(set(files.libraries)) == 12


def test_module_prints_the_spec_for_a_driver_root(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import json

    root = make_driver_root(tmp_path / "d")
    assert nvcdi.main([str(root), "/usr/bin/nvidia-cdi-hook"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [d["name"] for d in doc["devices"]] == ["0", "1"]
    assert hooks(doc["containerEdits"]) == hooks(reference(root, "/usr/bin/nvidia-cdi-hook")["containerEdits"])
    assert nvcdi.main([str(tmp_path / "empty")]) == 4
    assert "libnvidia-ml" in capsys.readouterr().err


def test_a_driver_outside_the_default_directories_is_found_through_the_linker_cache(tmp_path: Path) -> None:
    # As on the lent H200: the driver in /usr/local/nvidia/{lib64,bin}, known to ld.so.cache only.
    # nvidia-ctk reads the cache and finds binaries on PATH (the node's has /usr/local/nvidia/bin).
    root = make_cloud_driver_root(tmp_path / "d")
    hook = str(root / "usr/bin/nvidia-cdi-hook")
    theirs = reference(root, hook, path=f"/usr/local/nvidia/bin:{os.environ.get('PATH', '')}")
    mine = ours(root, hook)
    void = {("/dev/null", "/var/run/nvidia-container-devices/void", ("ro", "nosuid", "nodev", "bind"))}
    assert mounts(mine["containerEdits"]) == mounts(theirs["containerEdits"]) - void
    assert any(c == "/usr/local/nvidia/bin/nvidia-smi" for _, c, _ in mounts(mine["containerEdits"]))
    assert hooks(mine["containerEdits"]) == hooks(theirs["containerEdits"])
    assert nvcdi.discover(root).library_dirs == ("/usr/local/nvidia/lib64",)
