"""Names shared by both halves: the env var our Allocate sets is the one Spark's discovery reads."""

from __future__ import annotations

import functools
import re

ENV_PREFIX = "KUBEACCEL_DEVICES_"

# A Kubernetes extended resource name: a DNS subdomain prefix, '/', and a name.
_RESOURCE_RE = re.compile(
    r"^(?=.{1,253}/)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
    r"/[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
)


def is_valid_resource_name(name: str) -> bool:
    """True for a fully-qualified extended resource name such as ``nec.com/ve``.

    The ``kubernetes.io`` domain is reserved for the kubelet's own resources.
    """
    if not _RESOURCE_RE.fullmatch(name):
        return False
    domain = name.split("/", 1)[0]
    return not (domain == "kubernetes.io" or domain.endswith(".kubernetes.io"))


@functools.lru_cache(maxsize=256)
def devices_env_var(resource_name: str) -> str:
    """``nec.com/ve`` -> ``KUBEACCEL_DEVICES_NEC_COM_VE``."""
    return ENV_PREFIX + re.sub(r"[^A-Z0-9]", "_", resource_name.upper())
