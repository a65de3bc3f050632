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


# -- specs written by others (find_kind) ----------------------------------------------------------

NVIDIA_SPEC = {"cdiVersion": "0.5.0", "kind": "nvidia.com/gpu",
               "devices": [{"name": "0", "containerEdits": {}}, {"name": "GPU-abc", "containerEdits": {}}]}


def test_find_kind_reads_yaml_and_json_and_skips_ours_and_other_kinds(tmp_path: Path) -> None:
    etc, run = tmp_path / "etc", tmp_path / "run"
    etc.mkdir()
    run.mkdir()
    import yaml

    (etc / "nvidia.yaml").write_text(yaml.safe_dump(NVIDIA_SPEC))
    (run / "other.json").write_text(json.dumps({**NVIDIA_SPEC, "kind": "nec.com/ve"}))
    (run / "more.json").write_text(json.dumps({**NVIDIA_SPEC, "devices": [{"name": "all"}]}))
    (run / "kubeaccel-nvidia.com_gpu.json").write_text("not even json")  # ours: never read
    (run / "notes.txt").write_text("not a spec")  # the runtime reads .json and .yaml only
    scan = cdi.find_kind([etc, run, tmp_path / "missing"], "nvidia.com/gpu")
    assert scan.unreadable == ()
    assert scan.found is not None
    assert scan.found.paths == (etc / "nvidia.yaml", run / "more.json")
    assert scan.found.names == {"0", "GPU-abc", "all"}
    assert cdi.find_kind([run], "example.com/none").found is None


@pytest.mark.parametrize(
    ("name", "content", "why"),
    [
        ("a.yaml", b"kind: [unclosed", "not valid YAML"),
        ("a.json", b"{", "not valid JSON"),
        ("a.yaml", b"- just\n- a list\n", "not a mapping"),
        ("a.yaml", b"\xff\xfe\x00bytes", "not UTF-8"),
        ("a.yaml", b"a: &x [1]\nb: *x\n", "aliases"),
        ("a.json", b'{"kind": 3}', "no string 'kind'"),
        ("a.json", b'{"kind": "nvidia.com/gpu", "devices": {"name": "0"}}', "without a 'devices' list"),
        ("a.json", b'{"kind": "nvidia.com/gpu", "devices": [{"name": "bad name"}]}', "no valid 'name'"),
        ("a.json", b"[" * 100_000 + b"]" * 100_000, "not valid JSON"),
    ],
)
def test_unreadable_specs_are_named_with_the_reason(tmp_path: Path, name: str, content: bytes, why: str) -> None:
    (tmp_path / name).write_bytes(content)
    scan = cdi.find_kind([tmp_path], "nvidia.com/gpu")
    assert scan.found is None
    assert [p for p, _ in scan.unreadable] == [tmp_path / name]
    assert why in scan.unreadable[0][1]


def test_a_huge_spec_is_not_read_past_the_bound(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    with huge.open("wb") as fh:  # sparse: 2 GiB on paper, nothing on disk
        fh.truncate(2 * 1024**3)
    scan = cdi.find_kind([tmp_path], "nvidia.com/gpu")
    assert scan.unreadable == ((huge, "larger than 1024 KiB"),)


@given(st.binary(max_size=2000))
def test_random_bytes_never_raise(content: bytes) -> None:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        for name in ("x.yaml", "x.json"):
            (Path(tmp) / name).write_bytes(content)
        scan = cdi.find_kind([Path(tmp)], "nvidia.com/gpu")
        read = {p.name for p in scan.found.paths} if scan.found else set()
        assert read | {p.name for p, _ in scan.unreadable} <= {"x.yaml", "x.json"}


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)


@given(st.one_of(_json, st.fixed_dictionaries({"kind": st.just("nvidia.com/gpu"), "devices": _json}),
                 st.fixed_dictionaries({"kind": st.just("nvidia.com/gpu"),
                                        "devices": st.lists(st.dictionaries(st.just("name"), _json), max_size=3)})))
def test_wrong_types_are_unreadable_or_valid_never_a_traceback(document: object) -> None:
    import tempfile

    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "x.json").write_text(json.dumps(document))
        (Path(tmp) / "x.yaml").write_text(yaml.safe_dump(document))  # the same document, as YAML
        scan = cdi.find_kind([Path(tmp)], "nvidia.com/gpu")
        if scan.found is not None:
            assert all(NAME_RE.fullmatch(n) for n in scan.found.names)
            assert scan.unreadable == () and len(scan.found.paths) == 2  # both forms read alike
        else:
            assert len(scan.unreadable) in (0, 2)


def test_hooks_and_mount_options_in_the_document() -> None:
    edits = cdi.ContainerEdits.of(
        mounts=[cdi.BindMount("/h/lib.so", "/lib.so"), Mount("/a", "/b", read_only=False)],
        hooks=[cdi.Hook("/usr/bin/nvidia-cdi-hook", ("nvidia-cdi-hook", "update-ldcache", "--folder", "/lib"),
                        env=("NVIDIA_CTK_DEBUG=false",))],
    )
    out = edits.as_dict()
    assert out["mounts"][0]["options"] == ["ro", "nosuid", "nodev", "rbind", "rprivate"]
    assert out["mounts"][1]["options"] == ["rbind", "rw"]
    assert out["hooks"] == [{"hookName": "createContainer", "path": "/usr/bin/nvidia-cdi-hook",
                             "args": ["nvidia-cdi-hook", "update-ldcache", "--folder", "/lib"],
                             "env": ["NVIDIA_CTK_DEBUG=false"]}]
