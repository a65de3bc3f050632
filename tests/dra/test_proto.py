"""The wire contract of the DRA driver: the stubs are current and match the kubelet's v0.37.2 protos.

Regenerate into a temp dir and compare byte for byte with the committed stubs; check every
message's field names and numbers, the proto packages (they are in every method path) and the
service names the kubelet negotiates ("v1.DRAPlugin", "v1.DRAResourceHealth").
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from kubeaccel.dra._generated import (
    dra_v1_pb2,
    dra_v1beta1_pb2,
    health_v1_pb2,
    health_v1alpha1_pb2,
    pluginregistration_pb2,
)

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "src/kubeaccel/dra/_generated"


def _load_generator():  # scripts/ is not a package; load the generator as the CLI would run it
    spec = importlib.util.spec_from_file_location("gen_proto_dra", ROOT / "scripts/gen_proto.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_proto_dra"] = module
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_are_not_stale(tmp_path: Path) -> None:
    gen = _load_generator()
    written = gen.generate(tmp_path, gen.DRA)
    assert len(written) == 5 * 4 + 1
    for fresh in written:
        committed = COMMITTED / fresh.name
        assert committed.exists(), f"{fresh.name} is not committed: run scripts/gen_proto.py"
        assert committed.read_text() == fresh.read_text(), f"{fresh.name} is stale: run scripts/gen_proto.py"


DRA_FIELDS: dict[str, dict[str, int]] = {
    "NodePrepareResourcesRequest": {"claims": 1},
    "NodePrepareResourcesResponse": {"claims": 1},
    "NodePrepareResourceResponse": {"devices": 1, "error": 2},
    "Device": {"request_names": 1, "pool_name": 2, "device_name": 3, "cdi_device_ids": 4, "share_id": 5},
    "NodeUnprepareResourcesRequest": {"claims": 1},
    "NodeUnprepareResourcesResponse": {"claims": 1},
    "NodeUnprepareResourceResponse": {"error": 1},
    "Claim": {"namespace": 1, "uid": 2, "name": 3},
}


def _fields(module, name: str) -> dict[str, int]:
    return {f.name: f.number for f in module.DESCRIPTOR.message_types_by_name[name].fields}


def test_dra_messages_match_the_kubelet() -> None:
    for module, package, fields in (
        (dra_v1_pb2, "k8s.io.kubelet.pkg.apis.dra.v1", DRA_FIELDS),
        (dra_v1beta1_pb2, "k8s.io.kubelet.pkg.apis.dra.v1beta1",
         {**DRA_FIELDS, "Device": {k: v for k, v in DRA_FIELDS["Device"].items() if k != "share_id"}}),
    ):
        assert module.DESCRIPTOR.package == package
        assert set(module.DESCRIPTOR.message_types_by_name) == set(fields)
        for name, want in fields.items():
            assert _fields(module, name) == want, (package, name)
        methods = {m.name: (m.input_type.name, m.output_type.name)
                   for m in module.DESCRIPTOR.services_by_name["DRAPlugin"].methods}
        assert methods == {
            "NodePrepareResources": ("NodePrepareResourcesRequest", "NodePrepareResourcesResponse"),
            "NodeUnprepareResources": ("NodeUnprepareResourcesRequest", "NodeUnprepareResourcesResponse"),
        }


def test_registration_matches_the_kubelet() -> None:
    d = pluginregistration_pb2.DESCRIPTOR
    assert d.package == "pluginregistration"
    assert _fields(pluginregistration_pb2, "PluginInfo") == {
        "type": 1, "name": 2, "endpoint": 3, "supported_versions": 4}
    assert _fields(pluginregistration_pb2, "RegistrationStatus") == {"plugin_registered": 1, "error": 2}
    assert [m.full_name for m in d.services_by_name["Registration"].methods] == [
        "pluginregistration.Registration.GetInfo", "pluginregistration.Registration.NotifyRegistrationStatus"]


@pytest.mark.parametrize(("module", "version"), [(health_v1_pb2, "v1"), (health_v1alpha1_pb2, "v1alpha1")])
def test_health_matches_the_kubelet(module, version: str) -> None:
    # k8s.io/kubelet v0.37.2 pkg/apis/dra-health/{v1,v1alpha1}/api.proto: the same messages, two packages;
    # the kubelet negotiates either (pkg/kubelet/cm/dra/plugin/dra_plugin.go, the supported health services).
    d = module.DESCRIPTOR
    service = d.services_by_name["DRAResourceHealth"]
    assert service.full_name == f"{version}.DRAResourceHealth"
    (method,) = service.methods
    assert (method.name, method.server_streaming) == ("NodeWatchResources", True)
    assert dict(module.HealthStatus.items()) == {"UNKNOWN": 0, "HEALTHY": 1, "UNHEALTHY": 2}
    assert _fields(module, "DeviceIdentifier") == {"pool_name": 1, "device_name": 2}
    assert _fields(module, "DeviceHealth") == {
        "device": 1, "health": 2, "last_updated_time": 3, "health_check_timeout_seconds": 4, "message": 5}
    assert _fields(module, "NodeWatchResourcesResponse") == {"devices": 1}


def test_service_names_are_the_ones_the_kubelet_negotiates() -> None:
    # k8s.io/kubelet v0.37.2: drapbv1.DRAPluginService = "v1.DRAPlugin", drapbv1beta1... = "v1beta1.DRAPlugin"
    from kubeaccel.dra.registration import SUPPORTED_SERVICES

    assert SUPPORTED_SERVICES == ("v1.DRAPlugin", "v1beta1.DRAPlugin", "v1.DRAResourceHealth")
