"""A deliberately broken DRA driver for the checker's tests, built on the same generated stubs.

It registers correctly but prepares badly: malformed CDI IDs (FAIL: the runtime cannot start the
container), a second prepare of the same claim fails ("already prepared"), an unknown claim fails the
whole call (WARN: legal, the kubelet never sends one), and its registration socket is never
re-created once deleted (fine: the kubelet never deletes it).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc

from kubeaccel.dra._generated import dra_v1_pb2 as pb
from kubeaccel.dra._generated import dra_v1_pb2_grpc as pb_grpc
from kubeaccel.dra._generated import pluginregistration_pb2 as reg_pb
from kubeaccel.dra._generated import pluginregistration_pb2_grpc as reg_grpc

BROKEN_DRIVER = "broken.example.com"


class _Registration(reg_grpc.RegistrationServicer):
    def __init__(self, endpoint: Path) -> None:
        self.endpoint = endpoint

    def GetInfo(self, request, context):
        return reg_pb.PluginInfo(type="DRAPlugin", name=BROKEN_DRIVER, endpoint=str(self.endpoint),
                                 supported_versions=["v1.DRAPlugin"])

    def NotifyRegistrationStatus(self, request, context):
        return reg_pb.RegistrationStatusResponse()


class _Dra(pb_grpc.DRAPluginServicer):
    def __init__(self, pool: str, device: str, exists: Callable[[str, str], bool]) -> None:
        self.pool, self.device, self.exists = pool, device, exists
        self.prepared: set[str] = set()

    def NodePrepareResources(self, request, context):
        out = {}
        for claim in request.claims:
            if not self.exists(claim.namespace, claim.name):
                context.abort(grpc.StatusCode.INTERNAL, f"no such claim {claim.uid}")
            if claim.uid in self.prepared:
                out[claim.uid] = pb.NodePrepareResourceResponse(error="already prepared")
                continue
            self.prepared.add(claim.uid)
            out[claim.uid] = pb.NodePrepareResourceResponse(devices=[pb.Device(
                request_names=["dev"], pool_name=self.pool, device_name=self.device,
                cdi_device_ids=["not a cdi id"])])
        return pb.NodePrepareResourcesResponse(claims=out)

    def NodeUnprepareResources(self, request, context):
        return pb.NodeUnprepareResourcesResponse(
            claims={c.uid: pb.NodeUnprepareResourceResponse() for c in request.claims})


class BrokenDriver:
    def __init__(self, base: Path, pool: str, device: str, exists: Callable[[str, str], bool]) -> None:
        self.endpoint = base / "plugins" / BROKEN_DRIVER / "dra.sock"
        self.endpoint.parent.mkdir(parents=True, exist_ok=True)
        self.registration = base / "registry" / f"{BROKEN_DRIVER}-reg.sock"
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        reg_grpc.add_RegistrationServicer_to_server(_Registration(self.endpoint), self.server)
        pb_grpc.add_DRAPluginServicer_to_server(_Dra(pool, device, exists), self.server)
        self.server.add_insecure_port(f"unix://{self.endpoint}")
        self.server.add_insecure_port(f"unix://{self.registration}")

    def __enter__(self) -> BrokenDriver:
        self.server.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop(0)
