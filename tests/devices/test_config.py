"""The daemon config: the issue's simulated example parses as written; every error names its key.

Matrix: valid (minimal, full, several resources, replicas → SharedBackend, lazy backend import);
invalid (each common key, each simulated key, unknown keys at every level, duplicate names,
bad version, empty/missing resources, non-mapping input, unreadable file, bad YAML); the
``build_backends`` result advertises the configured devices.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kubeaccel.devices.config import build_backends, load_config, parse_config
from kubeaccel.devices.sharing import SharedBackend
from kubeaccel.errors import ConfigError

ISSUE_EXAMPLE = """\
resources:
  - name: example.com/sim
    backend: simulated
    count: 4
    numaNodes: 2
    stateFile: {state}
"""


def test_issue_example_parses_exactly(tmp_path: Path) -> None:
    path = tmp_path / "plugin.yaml"
    path.write_text(ISSUE_EXAMPLE.format(state=tmp_path / "state.json"))
    config = load_config(path)
    (res,) = config.resources
    assert (res.name, res.backend, res.replicas, res.cdi) == ("example.com/sim", "simulated", 1, False)
    assert res.settings.model_dump(by_alias=True)["numaNodes"] == 2
    (backend,) = build_backends(config)
    assert list(backend.scan()) == ["sim-0", "sim-1", "sim-2", "sim-3"]


def test_replicas_wrap_in_shared_backend() -> None:
    config = parse_config(
        {"version": "v1", "resources": [{"name": "example.com/sim", "backend": "simulated", "count": 2, "replicas": 3}]}
    )
    (backend,) = build_backends(config)
    assert isinstance(backend, SharedBackend)
    assert len(backend.scan()) == 6


def test_several_resources_keep_order() -> None:
    config = parse_config(
        {
            "resources": [
                {"name": "b.example.com/x", "backend": "simulated", "count": 1, "cdi": True},
                {"name": "a.example.com/y", "backend": "simulated", "count": 2, "idPrefix": "y"},
            ]
        }
    )
    assert [r.name for r in config.resources] == ["b.example.com/x", "a.example.com/y"]
    assert config.resources[0].cdi is True


@pytest.mark.parametrize(
    ("data", "where", "reason"),
    [
        ({"resources": [{"name": "sim", "backend": "simulated", "count": 1}]}, "resources[0].name", "domain/name"),
        (
            {"resources": [{"name": "kubernetes.io/x", "backend": "simulated", "count": 1}]},
            "resources[0].name",
            "domain/name",
        ),
        ({"resources": [{"name": "a.com/x", "backend": "gpu", "count": 1}]}, "resources[0].backend", "unknown backend"),
        ({"resources": [{"name": "a.com/x", "count": 1}]}, "resources[0].backend", "Field required"),
        ({"resources": [{"name": "a.com/x", "backend": "simulated"}]}, "resources[0].count", "Field required"),
        (
            {"resources": [{"name": "a.com/x", "backend": "simulated", "count": 4, "numaNodes": 0}]},
            "resources[0].numaNodes",
            "greater than or equal to 1",
        ),
        (
            {"resources": [{"name": "a.com/x", "backend": "simulated", "count": "four"}]},
            "resources[0].count",
            "integer",
        ),
        (
            {"resources": [{"name": "a.com/x", "backend": "simulated", "count": 1, "replicas": 0}]},
            "resources[0].replicas",
            "greater than or equal to 1",
        ),
        (
            {"resources": [{"name": "a.com/x", "backend": "simulated", "count": 1, "numa_nodes": 2, "colour": 1}]},
            "resources[0].colour",
            "unknown key",
        ),
        (
            {"resources": [{"name": "a.com/x", "backend": "simulated", "count": 1}, "oops"]},
            "resources[1]",
            "expected a mapping",
        ),
        (
            {
                "resources": [
                    {"name": "a.com/x", "backend": "simulated", "count": 1},
                    {"name": "a.com/x", "backend": "simulated", "count": 1},
                ]
            },
            "resources[1].name",
            "already used by resources[0]",
        ),
        ({"resources": []}, "resources", "non-empty list"),
        ({}, "resources", "non-empty list"),
        ({"resources": [{"name": "a.com/x", "backend": "simulated", "count": 1}], "extra": 1}, "extra", "unknown key"),
        ({"version": "v2", "resources": []}, "version", "unsupported version"),
        (["not", "a", "mapping"], "expected a mapping", ""),
    ],
)
def test_errors_name_the_key(data: object, where: str, reason: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert where in info.value.message
    assert reason in info.value.message
    assert info.value.hint


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("resources: [\n  - name: x\n")
    with pytest.raises(ConfigError, match="not valid YAML at line"):
        load_config(bad)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(textwrap.dedent("""\
        resources:
          - name: example.com/sim
            backend: simulated
            count: -1
    """))
    with pytest.raises(ConfigError) as info:
        load_config(wrong)
    assert str(wrong) in info.value.message and "resources[0].count" in info.value.message


def test_unused_backends_are_not_imported() -> None:
    code = (
        "import sys; from kubeaccel.devices.config import parse_config;"
        "parse_config({'resources': [{'name': 'a.com/x', 'backend': 'simulated', 'count': 1}]});"
        "print(sorted(m for m in sys.modules if m.startswith(('pynvml', 'kubeaccel.devices.backends.'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    # only the chosen backend: no other backend, no pynvml
    assert out.strip() == "['kubeaccel.devices.backends.simulated']"


# Any YAML-shaped value: the parser answers with a PluginConfig or a ConfigError, nothing else.
yaml_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=12) | st.integers(), inner,
                                                                 max_size=4),
    max_leaves=12,
)
resource_entries = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["example.com/sim", "bad", "", "a.b/c"]) | st.text(max_size=10),
        "backend": st.sampled_from(["simulated", "generic", "ve", "nope"]) | yaml_values,
        "count": st.integers(-2, 5) | yaml_values,
        "numaNodes": st.integers(-1, 3) | yaml_values,
        "replicas": st.integers(-1, 3) | yaml_values,
        "cdi": st.booleans() | yaml_values,
        "stateFile": st.text(max_size=8) | yaml_values,
        "extra": yaml_values,
    },
)


@settings(max_examples=800, deadline=None)
@given(data=st.one_of(
    yaml_values,
    st.fixed_dictionaries({"resources": st.lists(resource_entries | yaml_values, max_size=3)},
                          optional={"version": st.sampled_from(["v1", "v2"]) | yaml_values}),
))
@pytest.mark.slow  # a long property run: in `make test`, not `make unit`
def test_fuzz_parse_config(data: object) -> None:
    try:
        config = parse_config(data)
    except ConfigError as exc:
        assert exc.message.startswith("invalid plugin config") and exc.hint
        return
    assert config.resources and len({r.name for r in config.resources}) == len(config.resources)


def _nvml_present() -> bool:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError:
        return False
    pynvml.nvmlShutdown()
    return True


def test_optional_resource_without_its_driver_is_skipped_not_fatal() -> None:
    """Real pynvml: on a node without the NVIDIA driver an optional GPU resource is skipped (mixed fleets),
    a required one stops the daemon with the reason, and nothing left to serve is an error too."""
    from kubeaccel.errors import UnavailableError

    gpu = {"name": "nvidia.com/gpu", "backend": "nvidia"}
    sim = {"name": "example.com/sim", "backend": "simulated", "count": 1}
    if _nvml_present():  # a GPU machine: the resource is really there
        assert len(build_backends(parse_config({"resources": [{**gpu, "optional": True}, sim]}))) == 2
        return
    (backend,) = build_backends(parse_config({"resources": [{**gpu, "optional": True}, sim]}))
    assert backend.resource_name == "example.com/sim"
    with pytest.raises(UnavailableError, match=r"NVML|driver"):
        build_backends(parse_config({"resources": [gpu, sim]}))
    with pytest.raises(UnavailableError, match="no configured resource is available") as info:
        build_backends(parse_config({"resources": [{**gpu, "optional": True}]}))
    assert "nvidia.com/gpu" in info.value.message and info.value.hint


def test_replicas_and_share_count_together_are_refused() -> None:
    entry = {"name": "example.com/tty", "backend": "generic", "paths": ["/dev/ttyUSB*"], "shareCount": 2, "replicas": 2}
    with pytest.raises(ConfigError, match=r"resources\[0\]: replicas and shareCount"):
        parse_config({"resources": [entry]})
    assert parse_config({"resources": [{**entry, "replicas": 1}]}).resources[0].replicas == 1
