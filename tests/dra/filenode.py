"""The real DRA daemon as its own process, reading ResourceClaims from files instead of an API server.

    python tests/dra/filenode.py BASE [COMPACT_MIN_RECORDS]

``BASE`` is laid out as ``dra.node.make_node`` does (registry, plugins, state, cdi, dev, config.yaml);
a claim ``ns/name`` is read from ``BASE/claims/ns_name.json`` (missing: not found). The daemon is
``DraDaemon`` itself with its signal handling, so tests can SIGKILL or SIGTERM a real process that
serves real gRPC on unix sockets, and restart it on the same state.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from kubeaccel.devices.config import load_config
from kubeaccel.dra import checkpoint
from kubeaccel.dra.daemon import DraDaemon, KubeAccess, Options
from kubeaccel.errors import KubeaccelError, NotFoundError

DRIVER = "dra.kubeaccel.io"
NODE = "node-a"


class FileAccess(KubeAccess):
    def __init__(self, directory: Path) -> None:
        super().__init__()
        self.directory = directory

    async def read_claim(self, namespace: str, name: str) -> Mapping[str, Any]:
        try:
            return json.loads((self.directory / f"{namespace}_{name}.json").read_text())  # type: ignore[no-any-return]
        except FileNotFoundError:
            raise NotFoundError(f"resourceclaim {name} not found") from None


def options(base: Path) -> Options:
    return Options(node=NODE, driver=DRIVER, registry_dir=base / "registry", plugins_dir=base / "plugins",
                   state_dir=base / "state", cdi_dir=base / "cdi", publish=False)


def main() -> None:
    base = Path(sys.argv[1])
    if len(sys.argv) > 2:
        checkpoint.COMPACT_MIN_RECORDS = int(sys.argv[2])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    daemon = DraDaemon(lambda: load_config(base / "config.yaml"), options(base), access=FileAccess(base / "claims"))
    try:
        asyncio.run(daemon.run(handle_signals=True))
    except KubeaccelError as exc:
        print(f"error: {exc.message}", file=sys.stderr)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
