"""CDI from the device plugin (issue 8 item 7, the plugin's side): a spec per resource, kept in sync.

Matrix: with ``cdi: true`` the daemon writes ``<cdi-dir>/kubeaccel-<resource>.json`` before it
serves (valid kind, one entry per real device with its nodes, a common env marker); Allocate names
exactly those entries and sends no DeviceSpecs for them; a device that goes Absent leaves the
spec, one that returns comes back (atomic rewrites: no temp files left); replicas share one entry;
stopping removes the spec; a missing CDI dir is created with a warning.

NVIDIA (issue 19; the real daemon, NVML replaced by the fake of ``tests/devices/test_nvidia.py``, a
fake driver root): the daemon writes kubeaccel's complete spec (kind ``nvidia.kubeaccel.io/gpu``,
the driver's libraries and hooks) and Allocate names its UUID entries with no DeviceSpecs; NVIDIA's
own spec appearing in the spec dirs makes the daemon drop ours and name NVIDIA's; an unreadable spec
there makes Allocate fail with ``INVALID_ARGUMENT`` naming the file, and no spec of ours is written.
On the real node (kubelet + containerd 2 with CDI), a busybox pod that asks for the GPU resource gets,
through kubeaccel's spec alone, the GPU's node, the fake driver's libraries (and their soname links),
its firmware and ``nvidia-smi``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import time
from pathlib import Path

import pytest
import yaml
from fixtures.cluster import RealNode
from fixtures.plugin import SIM_RESOURCE, short_socket_dir, write_sim_config

from kubeaccel.devices import cdi
from kubeaccel.devices.config import load_config
from kubeaccel.plugin._generated import api_pb2 as pb
from kubeaccel.plugin._generated import api_pb2_grpc as pb_grpc
from kubeaccel.plugin.daemon import BackgroundDaemon, Daemon
from kubeaccel.plugin.kubelet import KubeletStandIn

SPEC = cdi.spec_file_name(SIM_RESOURCE)


def _spec(cdi_dir: Path) -> dict:  # type: ignore[type-arg]
    return json.loads((cdi_dir / SPEC).read_text())


def _wait_spec(cdi_dir: Path, names: list[str], timeout: float = 5.0) -> dict:  # type: ignore[type-arg]
    deadline = time.monotonic() + timeout
    while True:
        doc = _spec(cdi_dir)
        if [d["name"] for d in doc["devices"]] == names:
            return doc
        assert time.monotonic() < deadline, doc
        time.sleep(0.02)


def test_cdi_spec_follows_the_devices_and_allocate_names_it(tmp_path: Path) -> None:
    socket_dir = short_socket_dir()
    cdi_dir = tmp_path / "cdi"
    state = tmp_path / "s.json"
    config = write_sim_config(tmp_path / "c.yaml", state, tmp_path / "dev", cdi=True)
    daemon = Daemon(lambda: load_config(config), socket_dir, cdi_dir=cdi_dir)
    try:
        with BackgroundDaemon(daemon):
            doc = _spec(cdi_dir)  # written before the daemon serves
            assert doc["cdiVersion"] == cdi.CDI_VERSION and doc["kind"] == "example.com/sim"
            assert [d["name"] for d in doc["devices"]] == ["0", "1", "2", "3"]
            nodes = doc["devices"][2]["containerEdits"]["deviceNodes"]
            assert nodes == [{"path": "/dev/sim-2", "hostPath": str(tmp_path / "dev" / "sim-2"), "permissions": "rw"}]
            assert doc["containerEdits"]["env"] == ["KUBEACCEL_CDI_EXAMPLE_COM_SIM=example.com/sim"]

            async def allocate() -> pb.ContainerAllocateResponse:
                async with KubeletStandIn(socket_dir) as kubelet:
                    _, request = await kubelet.next_registration(timeout=10)
                    async with kubelet.plugin_channel(request.endpoint) as channel:
                        response = await pb_grpc.DevicePluginStub(channel).Allocate(pb.AllocateRequest(
                            container_requests=[pb.ContainerAllocateRequest(devices_ids=["sim-3", "sim-1"])]),
                            timeout=5)
                        return response.container_responses[0]

            got = asyncio.run(allocate())
            assert [c.name for c in got.cdi_devices] == ["example.com/sim=1", "example.com/sim=3"]
            assert list(got.devices) == [] and list(got.mounts) == []  # the spec carries them
            assert got.envs["KUBEACCEL_DEVICES_EXAMPLE_COM_SIM"] == "1,3"

            state.write_text(json.dumps({"sim-2": "Absent"}))
            _wait_spec(cdi_dir, ["0", "1", "3"])
            state.write_text("{}")
            _wait_spec(cdi_dir, ["0", "1", "2", "3"])
            assert sorted(p.name for p in cdi_dir.iterdir()) == [SPEC]  # no temp files left behind
        assert not (cdi_dir / SPEC).exists()  # removed on stop
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_replicas_share_one_cdi_entry(tmp_path: Path) -> None:
    socket_dir = short_socket_dir()
    cdi_dir = tmp_path / "cdi"
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"resources": [
        {"name": SIM_RESOURCE, "backend": "simulated", "count": 2, "replicas": 3, "cdi": True}]}))
    try:
        with BackgroundDaemon(Daemon(lambda: load_config(config), socket_dir, cdi_dir=cdi_dir)):
            assert [d["name"] for d in _spec(cdi_dir)["devices"]] == ["0", "1"]
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_missing_cdi_dir_is_created_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    socket_dir = short_socket_dir()
    cdi_dir = tmp_path / "no" / "cdi"
    config = write_sim_config(tmp_path / "c.yaml", tmp_path / "s.json", tmp_path / "dev", cdi=True)
    caplog.set_level(logging.WARNING, logger="kubeaccel")
    try:
        with BackgroundDaemon(Daemon(lambda: load_config(config), socket_dir, cdi_dir=cdi_dir)):
            assert (cdi_dir / SPEC).exists()
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    warning = [r.getMessage() for r in caplog.records if "did not exist" in r.getMessage()]
    assert len(warning) == 1 and "no CDI support" in warning[0]


# -- NVIDIA: kubeaccel's complete spec or NVIDIA's own ------------------------------------------------

NV_RESOURCE = "nvidia.com/gpu"
NV_SPEC = cdi.spec_file_name(NV_RESOURCE)


def _nvidia_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, socket_dir: Path, *, resource: str = NV_RESOURCE,
    cdi_dir: Path | None = None, **keys: object,
) -> tuple[Daemon, Path, Path]:
    from devices.test_nvidia import GPUS, FakeNvmlLibrary
    from fixtures.nvdriver import make_driver_root

    from kubeaccel.devices.backends._nvml import Nvml

    monkeypatch.setattr(Nvml, "load", classmethod(lambda cls: cls(FakeNvmlLibrary(GPUS))))
    driver = make_driver_root(tmp_path / "driver")  # its dev/ is the daemon's --root too
    specs, cdi_dir = tmp_path / "etc-cdi", cdi_dir or tmp_path / "run-cdi"
    specs.mkdir()
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"resources": [{
        "name": resource, "backend": "nvidia", "cdi": True, "driverRoot": str(driver),
        "cdiSpecDirs": [str(specs), str(cdi_dir)], **keys}]}))
    return Daemon(lambda: load_config(config), socket_dir, cdi_dir=cdi_dir, root=driver), specs, cdi_dir


async def _allocate(socket_dir: Path, ids: list[str]) -> pb.ContainerAllocateResponse:
    async with KubeletStandIn(socket_dir) as kubelet:
        _, request = await kubelet.next_registration(timeout=10)
        async with kubelet.plugin_channel(request.endpoint) as channel:
            response = await pb_grpc.DevicePluginStub(channel).Allocate(
                pb.AllocateRequest(container_requests=[pb.ContainerAllocateRequest(devices_ids=ids)]), timeout=5)
            return response.container_responses[0]


def test_nvidia_daemon_writes_a_complete_spec_and_names_it_by_uuid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from devices.test_nvidia import UUID1

    socket_dir = short_socket_dir()
    daemon, _, cdi_dir = _nvidia_daemon(tmp_path, monkeypatch, socket_dir)
    try:
        with BackgroundDaemon(daemon):
            doc = json.loads((cdi_dir / NV_SPEC).read_text())
            assert doc["kind"] == "nvidia.kubeaccel.io/gpu"
            hosts = {m["containerPath"] for m in doc["containerEdits"]["mounts"]}
            assert {"/usr/bin/nvidia-smi", "/usr/lib/x86_64-linux-gnu/libnvidia-ml.so.580.159.04"} <= hosts
            got = asyncio.run(_allocate(socket_dir, [UUID1]))
            assert [c.name for c in got.cdi_devices] == [f"nvidia.kubeaccel.io/gpu={UUID1}"]
            assert list(got.devices) == []  # the spec carries the nodes
            assert got.envs["NVIDIA_VISIBLE_DEVICES"] == UUID1
            assert got.envs["KUBEACCEL_DEVICES_NVIDIA_COM_GPU"] == "1"  # the index, for Spark's addresses
        assert not (cdi_dir / NV_SPEC).exists()
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_nvidia_daemon_names_nvidias_own_spec_and_writes_none(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devices.test_nvidia import UUID0

    socket_dir = short_socket_dir()
    daemon, specs, cdi_dir = _nvidia_daemon(tmp_path, monkeypatch, socket_dir)
    (specs / "nvidia.yaml").write_text(yaml.safe_dump({
        "cdiVersion": "0.5.0", "kind": "nvidia.com/gpu", "devices": [{"name": "0"}, {"name": UUID0}]}))
    try:
        with BackgroundDaemon(daemon):
            assert not (cdi_dir / NV_SPEC).exists()
            got = asyncio.run(_allocate(socket_dir, [UUID0]))
            assert [c.name for c in got.cdi_devices] == [f"nvidia.com/gpu={UUID0}"]
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_nvidia_daemon_refuses_while_a_spec_is_unreadable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import grpc
    from devices.test_nvidia import UUID0

    socket_dir = short_socket_dir()
    daemon, specs, cdi_dir = _nvidia_daemon(tmp_path, monkeypatch, socket_dir)
    broken = specs / "nvidia.json"
    broken.write_bytes(b"\x00\x01 not json")
    try:
        with BackgroundDaemon(daemon):
            assert not (cdi_dir / NV_SPEC).exists()  # no second, possibly conflicting spec
            with pytest.raises(grpc.aio.AioRpcError) as err:
                asyncio.run(_allocate(socket_dir, [UUID0]))
            assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
            assert str(broken) in (err.value.details() or "")
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


@pytest.mark.real_node
@pytest.mark.cluster
@pytest.mark.slow
@pytest.mark.parametrize("hooks", [False, True], ids=["bind-mounted-links", "nvidia-ctk-hooks"])
def test_real_node_container_gets_the_driver_through_kubeaccels_spec(
    real_node: RealNode, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hooks: bool
) -> None:
    """Without a hook binary the links arrive as mounts of the same files; with one (the real
    nvidia-ctk, as NVIDIA's toolkit installs it) its hooks make the links and the container's ld cache."""
    from devices.test_nvcdi import nvidia_ctk
    from fixtures.cluster import wait_for

    from kubeaccel.cluster.images import BUSYBOX_IMAGE
    from kubeaccel.cluster.nodepaths import DEVICE_PLUGIN_DIR

    resource = "example.com/gpu"  # not nvidia.com/gpu: leave the node's real GPU resource alone
    hook = {"nvidiaCdiHookPath": "/usr/bin/nvidia-ctk"} if hooks else {"nvidiaCdiHookPath": None}
    daemon, _, _ = _nvidia_daemon(tmp_path, monkeypatch, DEVICE_PLUGIN_DIR, resource=resource,
                                  cdi_dir=real_node.cdi_dir, **hook)
    if hooks:
        (tmp_path / "driver/usr/bin/nvidia-ctk").symlink_to(nvidia_ctk())
    cluster, node = real_node.cluster, real_node.node_name
    lib = "/usr/lib/x86_64-linux-gnu"
    script = (f"echo VISIBLE=$NVIDIA_VISIBLE_DEVICES; echo MARK=$KUBEACCEL_CDI_EXAMPLE_COM_GPU; "
              f"for n in /dev/nvidia*; do [ -c $n ] && echo NODE=$n; done; ls {lib}; "
              f"head -c 4 {lib}/libcuda.so.1 | od -c | head -1; sh /usr/bin/nvidia-smi; "
              "cat /lib/firmware/nvidia/580.159.04/gsp_ga10x.bin; echo; "
              f"echo LINK=$(readlink {lib}/libcuda.so.1); cat /etc/ld.so.conf.d/*nvcr* 2>/dev/null; "
              "[ -s /etc/ld.so.cache ] && echo CACHE; true")
    pod = json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "gpu"},
        "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                 "containers": [{"name": "main", "image": BUSYBOX_IMAGE, "imagePullPolicy": "Never",
                                 "command": ["sh", "-c", script], "resources": {"limits": {resource: "1"}}}]},
    })

    def allocatable() -> str:
        path = "{.status.allocatable." + resource.replace(".", "\\.") + "}"
        return cluster.kubectl("get", "node", node, "-o", f"jsonpath={path}").stdout

    def phase(ns: str) -> str:
        return cluster.kubectl("get", "pod", "gpu", "-n", ns, "-o", "jsonpath={.status.phase}", check=False).stdout

    with BackgroundDaemon(daemon):
        spec = json.loads((real_node.cdi_dir / cdi.spec_file_name(resource)).read_text())
        assert ("hooks" in spec["containerEdits"]) is hooks
        wait_for(f"{resource} allocatable", lambda: allocatable() == "2")
        ns = cluster.create_namespace("nvcdi")
        cluster.apply(pod, ns)
        wait_for("pod finished", lambda: phase(ns) in ("Succeeded", "Failed"), timeout=120)
        out = cluster.kubectl("logs", "gpu", "-n", ns).stdout
        events = cluster.kubectl("get", "events", "-n", ns, check=False).stdout
        assert phase(ns) == "Succeeded", out + events
        cluster.kubectl("delete", "namespace", ns, "--wait=false")
    lines = out.splitlines()
    visible = next(x for x in lines if x.startswith("VISIBLE=")).removeprefix("VISIBLE=")
    assert visible.startswith("GPU-")  # a UUID, as NVIDIA's plugin gives
    index = "0" if visible.startswith("GPU-aaaa") else "1"
    assert "MARK=nvidia.kubeaccel.io/gpu" in lines  # the runtime applied our spec
    assert [x for x in lines if x.startswith("NODE=")] == [
        "NODE=/dev/nvidia-uvm", "NODE=/dev/nvidia-uvm-tools", f"NODE=/dev/nvidia{index}", "NODE=/dev/nvidiactl"]
    for name in ("libcuda.so.580.159.04", "libcuda.so.1", "libcuda.so", "libnvidia-ml.so.580.159.04",
                 "libnvidia-ml.so.1", "libnvidia-ptxjitcompiler.so.1"):
        assert name in lines, out
    assert any("E   L   F" in x for x in lines), out  # libcuda.so.1 leads to the library itself
    assert "fake" in lines and "firmware" in lines
    if hooks:  # create-symlinks made a real link; update-ldcache added the folder and built the cache
        assert "LINK=libcuda.so.580.159.04" in lines and lib in lines and "CACHE" in lines, out
    else:
        assert "LINK=" in lines  # a bind mount of the file, not a link


def test_nvidia_daemon_without_a_driver_under_its_root_stops_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubeaccel.errors import UnavailableError

    socket_dir = short_socket_dir()
    daemon, _, _ = _nvidia_daemon(tmp_path, monkeypatch, socket_dir, driverRoot=str(tmp_path / "no-driver"))
    try:
        with pytest.raises(UnavailableError) as err, BackgroundDaemon(daemon):
            pass
        assert str(tmp_path / "no-driver") in err.value.message and "libnvidia-ml" in err.value.message
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_nvidia_replicas_share_their_gpus_entry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from devices.test_nvidia import UUID1

    socket_dir = short_socket_dir()
    daemon, _, cdi_dir = _nvidia_daemon(tmp_path, monkeypatch, socket_dir, replicas=2)
    try:
        with BackgroundDaemon(daemon):
            doc = json.loads((cdi_dir / NV_SPEC).read_text())
            assert doc["kind"] == "nvidia.kubeaccel.io/gpu" and "mounts" in doc["containerEdits"]
            got = asyncio.run(_allocate(socket_dir, [f"{UUID1}::0", f"{UUID1}::1"]))
            assert [c.name for c in got.cdi_devices] == [f"nvidia.kubeaccel.io/gpu={UUID1}"]
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
