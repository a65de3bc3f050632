"""The wire contract: the generated stubs are current and the API matches the kubelet's v1beta1.

Matrix: regenerate into a temp dir and compare byte for byte with the committed stubs; check
every service method path and every message's field names and numbers against the kubelet's
published api.proto (a renumbered field would break the wire silently).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

from kubeaccel.plugin._generated import api_pb2

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "src/kubeaccel/plugin/_generated"


def _load_generator():  # scripts/ is not a package; load the generator as the CLI would run it
    spec = importlib.util.spec_from_file_location("gen_proto", ROOT / "scripts/gen_proto.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_proto"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_are_not_stale(tmp_path: Path) -> None:
    written = _load_generator().generate(tmp_path)
    assert len(written) == 9  # api + podresources: _pb2, _pb2_grpc, their .pyi; __init__
    for fresh in written:
        committed = COMMITTED / fresh.name
        assert committed.exists(), f"{fresh.name} is not committed: run scripts/gen_proto.py"
        assert committed.read_text() == fresh.read_text(), f"{fresh.name} is stale: run scripts/gen_proto.py"


# message -> {field: number}, from the kubelet's pkg/apis/deviceplugin/v1beta1/api.proto
KUBELET_FIELDS: dict[str, dict[str, int]] = {
    "DevicePluginOptions": {"pre_start_required": 1, "get_preferred_allocation_available": 2},
    "RegisterRequest": {"version": 1, "endpoint": 2, "resource_name": 3, "options": 4},
    "Empty": {},
    "ListAndWatchResponse": {"devices": 1},
    "TopologyInfo": {"nodes": 1},
    "NUMANode": {"ID": 1},
    "Device": {"ID": 1, "health": 2, "topology": 3},
    "PreStartContainerRequest": {"devices_ids": 1},
    "PreStartContainerResponse": {},
    "PreferredAllocationRequest": {"container_requests": 1},
    "ContainerPreferredAllocationRequest": {
        "available_deviceIDs": 1,
        "must_include_deviceIDs": 2,
        "allocation_size": 3,
    },
    "PreferredAllocationResponse": {"container_responses": 1},
    "ContainerPreferredAllocationResponse": {"deviceIDs": 1},
    "AllocateRequest": {"container_requests": 1},
    "ContainerAllocateRequest": {"devices_ids": 1},
    "CDIDevice": {"name": 1},
    "AllocateResponse": {"container_responses": 1},
    "ContainerAllocateResponse": {"envs": 1, "mounts": 2, "devices": 3, "annotations": 4, "cdi_devices": 5},
    "Mount": {"container_path": 1, "host_path": 2, "read_only": 3},
    "DeviceSpec": {"container_path": 1, "host_path": 2, "permissions": 3},
}


def test_messages_match_the_kubelet() -> None:
    descriptor = api_pb2.DESCRIPTOR
    assert descriptor.package == "v1beta1"
    assert set(descriptor.message_types_by_name) == set(KUBELET_FIELDS)
    for name, fields in KUBELET_FIELDS.items():
        message = descriptor.message_types_by_name[name]
        assert {f.name: f.number for f in message.fields} == fields, name


def test_services_match_the_kubelet() -> None:
    services = api_pb2.DESCRIPTOR.services_by_name
    assert [m.full_name for m in services["Registration"].methods] == ["v1beta1.Registration.Register"]
    plugin = services["DevicePlugin"]
    methods = {m.name: (m.input_type.name, m.output_type.name, m.server_streaming) for m in plugin.methods}
    assert methods == {
        "GetDevicePluginOptions": ("Empty", "DevicePluginOptions", False),
        "ListAndWatch": ("Empty", "ListAndWatchResponse", True),
        "GetPreferredAllocation": ("PreferredAllocationRequest", "PreferredAllocationResponse", False),
        "Allocate": ("AllocateRequest", "AllocateResponse", False),
        "PreStartContainer": ("PreStartContainerRequest", "PreStartContainerResponse", False),
    }


# message -> {field: number}, from the kubelet's pkg/apis/podresources/v1/api.proto (the part we read)
PODRESOURCES_FIELDS: dict[str, dict[str, int]] = {
    "ListPodResourcesRequest": {},
    "ListPodResourcesResponse": {"pod_resources": 1},
    "PodResources": {"name": 1, "namespace": 2, "containers": 3},
    "ContainerResources": {"name": 1, "devices": 2},
    "ContainerDevices": {"resource_name": 1, "device_ids": 2, "topology": 3},
    "TopologyInfo": {"nodes": 1},
    "NUMANode": {"ID": 1},
    "GetPodResourcesRequest": {"pod_name": 1, "pod_namespace": 2},
    "GetPodResourcesResponse": {"pod_resources": 1},
}


def test_pod_resources_match_the_kubelet() -> None:
    from kubeaccel.plugin._generated import podresources_pb2

    descriptor = podresources_pb2.DESCRIPTOR
    assert descriptor.package == "v1"
    assert set(descriptor.message_types_by_name) == set(PODRESOURCES_FIELDS)
    for name, fields in PODRESOURCES_FIELDS.items():
        message = descriptor.message_types_by_name[name]
        assert {f.name: f.number for f in message.fields} == fields, name
    lister = descriptor.services_by_name["PodResourcesLister"]
    assert {m.full_name: (m.input_type.name, m.output_type.name) for m in lister.methods} == {
        "v1.PodResourcesLister.List": ("ListPodResourcesRequest", "ListPodResourcesResponse"),
        "v1.PodResourcesLister.Get": ("GetPodResourcesRequest", "GetPodResourcesResponse"),
    }
