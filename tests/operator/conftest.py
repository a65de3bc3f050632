"""Fixtures of the controller's real-node tests: the images, built without Docker and imported into the node."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def spark_image(real_node: Any) -> str:
    done = subprocess.run(
        [sys.executable, str(REPO / "deploy/spark/build_image.py"), "--json"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    built = json.loads(done.stdout)
    real_node.import_image(Path(built["archive"]))
    return str(built["image"])


@pytest.fixture(scope="module")
def operator_image(real_node: Any) -> str:
    """The kubeaccel image (the device plugin's: it carries the CLI), for the chart's Deployment."""
    from deploy.chart import image_builder

    built = image_builder().build()
    real_node.import_image(Path(built["archive"]))
    return str(built["image"])
