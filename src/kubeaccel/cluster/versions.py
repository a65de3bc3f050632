"""The upstream versions the local cluster builds and runs, read from ``versions.env`` beside this module.

That file is the one place they are set: ``scripts/k8s/build.sh`` and ``scripts/containerd/build.sh``
``source`` it, and this module parses it, so the binaries the scripts build are the ones Python looks for.
"""

from __future__ import annotations

import re
from pathlib import Path

VERSIONS_FILE = Path(__file__).with_name("versions.env")
_LINE_RE = re.compile(r"^([A-Z][A-Z0-9_]*)=([0-9A-Za-z.+-]+)$")


def parse(text: str) -> dict[str, str]:
    """``KEY=VALUE`` lines (``#`` comments and blank lines skipped); anything else is an error, not a guess."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE_RE.match(line)
        if match is None:
            raise ValueError(f"{VERSIONS_FILE}:{number}: expected KEY=VERSION, got {raw!r}")
        found[match.group(1)] = match.group(2)
    return found


VERSIONS = parse(VERSIONS_FILE.read_text())
KUBE_VERSION = VERSIONS["KUBE_VERSION"]
KWOK_VERSION = VERSIONS["KWOK_VERSION"]
ETCD_VERSION = VERSIONS["ETCD_VERSION"]
CONTAINERD_VERSION = VERSIONS["CONTAINERD_VERSION"]
RUNC_VERSION = VERSIONS["RUNC_VERSION"]
CNI_PLUGINS_VERSION = VERSIONS["CNI_PLUGINS_VERSION"]
