"""Device backends: one module per device family, each pure Python (no gRPC, no Kubernetes).

Every backend module exports ``Config`` (a pydantic model of that backend's own config keys)
and ``create(resource_name, config, *, root=Path("/")) -> Backend``. ``root`` prefixes ``/dev``
and ``/sys`` so tests build fake trees in a temp dir. Modules are imported by name only when a
config uses them, so a node without NVML never imports ``pynvml``.
"""

from __future__ import annotations

# The backend names a config may use, in the order the docs list them.
BACKEND_NAMES: tuple[str, ...] = ("simulated", "generic", "ve", "nvidia")
