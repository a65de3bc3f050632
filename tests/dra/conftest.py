"""The ``dra_node`` fixture: the real DRA daemon in-process on temp kubelet directories (see dra/node.py)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator

import pytest
from dra.node import DraNode, make_node


@pytest.fixture
def dra_node() -> Iterator[DraNode]:
    node = make_node()
    node.start()
    try:
        yield node
    finally:
        node.stop()
        shutil.rmtree(node.base, ignore_errors=True)
