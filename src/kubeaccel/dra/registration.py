"""Kubelet plugin registration for a DRA driver: the ``pluginregistration.Registration`` service.

The kubelet's plugin watcher finds our socket in ``plugins_registry/``, calls ``GetInfo`` (type
``DRAPlugin``, the driver name, the DRA endpoint, the gRPC services served there) and reports the
outcome with ``NotifyRegistrationStatus``. A restarted kubelet walks the directory again and
repeats both calls; the daemon only has to keep the socket there (it re-creates it when deleted).
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path
from typing import Any

import grpc

from kubeaccel.dra._generated import pluginregistration_pb2 as pb
from kubeaccel.dra._generated import pluginregistration_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
Ctx = grpc.aio.ServicerContext[Any, Any]

PLUGIN_TYPE = "DRAPlugin"
# k8s.io/kubelet v0.37.2: drapbv1.DRAPluginService, drapbv1beta1.DRAPluginService,
# drahealthv1.DRAResourceHealthService. The kubelet picks the first DRA service it knows in this
# order, and the health service when listed.
DRA_V1_SERVICE = "v1.DRAPlugin"
DRA_V1BETA1_SERVICE = "v1beta1.DRAPlugin"
HEALTH_V1_SERVICE = "v1.DRAResourceHealth"
SUPPORTED_SERVICES = (DRA_V1_SERVICE, DRA_V1BETA1_SERVICE, HEALTH_V1_SERVICE)

DEFAULT_REGISTRY_DIR = Path("/var/lib/kubelet/plugins_registry")
DEFAULT_PLUGINS_DIR = Path("/var/lib/kubelet/plugins")
MAX_ERROR_LOGGED = 1024  # the kubelet's error text is logged, bounded


def registration_socket_name(driver: str) -> str:
    """``<driver>-reg.sock``, the kubeletplugin convention."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", driver) + "-reg.sock"


class RegistrationService(pb_grpc.RegistrationServicer):
    """Answers the kubelet's ``GetInfo`` and records its verdict."""

    def __init__(self, driver: str, endpoint: Path, services: tuple[str, ...] = SUPPORTED_SERVICES) -> None:
        self.driver = driver
        self.endpoint = endpoint
        self.services = services
        self.registered = asyncio.Event()
        self.error = ""
        self.info_calls = 0

    async def GetInfo(self, request: pb.InfoRequest, context: Ctx) -> pb.PluginInfo:  # noqa: N802
        self.info_calls += 1
        return pb.PluginInfo(
            type=PLUGIN_TYPE, name=self.driver, endpoint=str(self.endpoint), supported_versions=list(self.services)
        )

    async def NotifyRegistrationStatus(  # noqa: N802
        self, request: pb.RegistrationStatus, context: Ctx
    ) -> pb.RegistrationStatusResponse:
        if request.plugin_registered:
            self.error = ""
            self.registered.set()
            log.info("%s: registered with the kubelet (endpoint %s)", self.driver, self.endpoint)
        else:
            self.error = request.error[:MAX_ERROR_LOGGED]
            self.registered.clear()
            log.error("%s: the kubelet refused the registration: %s", self.driver, self.error)
        return pb.RegistrationStatusResponse()
