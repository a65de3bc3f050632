"""CDI specs: the grammar (property-tested), the document shape, atomic writes and removal."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kubeaccel.devices import cdi
from kubeaccel.devices.model import DeviceNode, Mount

NAME_RE = re.compile(r"[A-Za-z0-9]([A-Za-z0-9_.:-]*[A-Za-z0-9])?")


def test_kind_for_resource_names() -> None:
    assert cdi.kind_for("nec.com/ve") == "nec.com/ve"
    assert cdi.kind_for("example.com/v1.gpu") == "example.com/v1_gpu"
    for bad in ("novendor", "/x", "-a.com/x", "a.com/"):
        with pytest.raises(cdi.CdiError):
            cdi.kind_for(bad)


@given(st.text(min_size=1, max_size=40))
def test_device_name_is_valid_or_refused(raw: str) -> None:
    try:
        name = cdi.device_name(raw)
    except cdi.CdiError:
        assert not re.search(r"[A-Za-z0-9]", raw)
    else:
        assert NAME_RE.fullmatch(name)


def test_spec_document_and_atomic_write(tmp_path: Path) -> None:
    edits = cdi.ContainerEdits.of(
        {"KUBEACCEL_DEVICES_NEC_COM_VE": "0", "VE_NODE_NUMBER": "0"},
        [DeviceNode("/dev/veslot0", "/dev/veslot0")],
        [Mount("/var/opt/nec/ve/veos", "/var/opt/nec/ve/veos", read_only=True)],
    )
    doc = cdi.spec("nec.com/ve", {"ve-0": edits})
    path = cdi.write_spec(tmp_path / "cdi", cdi.spec_file_name("nec.com/ve"), doc)
    assert path.name == "kubeaccel-nec.com_ve.json"
    loaded = json.loads(path.read_text())
    assert loaded["kind"] == "nec.com/ve"
    dev = loaded["devices"][0]
    assert dev["name"] == "ve-0"
    assert dev["containerEdits"]["env"] == ["KUBEACCEL_DEVICES_NEC_COM_VE=0", "VE_NODE_NUMBER=0"]
    assert dev["containerEdits"]["deviceNodes"][0]["hostPath"] == "/dev/veslot0"
    assert dev["containerEdits"]["mounts"][0]["options"] == ["rbind", "ro"]
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    assert cdi.qualified("nec.com/ve", "ve-0") == "nec.com/ve=ve-0"
    assert cdi.remove_spec(path.parent, path.name)
    assert not cdi.remove_spec(path.parent, path.name)


def test_invalid_device_name_refused() -> None:
    with pytest.raises(cdi.CdiError):
        cdi.spec("a.com/b", {"bad name": cdi.ContainerEdits()})


def test_write_into_a_file_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "cdi"
    blocker.write_text("not a dir")
    with pytest.raises(cdi.CdiError, match="cannot write CDI specs"):
        cdi.write_spec(blocker, "kubeaccel-a.json", {})
