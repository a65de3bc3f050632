"""Strict, bounded config loading (issue 12 item 8): every mistake is one ConfigError, fast and small.

Matrix: alias bomb (no expansion, bounded time), any alias, huge file, non-UTF-8 bytes, duplicate
keys (top level and inside a resource), YAML coercions that mislead (``numaNodes: true``,
``replicas: '2'``, ``cdi: 'yes'``), a resource name with a trailing newline, an unbounded name in
the message; property: any text is a PluginConfig or a ConfigError with a bounded message.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from kubeaccel.devices.config import MAX_CONFIG_BYTES, build_resources, load_config, parse_config, safe_yaml
from kubeaccel.errors import ConfigError, UnavailableError

SIM = "resources:\n  - name: example.com/sim\n    backend: simulated\n    count: 2\n"

BOMB = """a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
resources: *h
"""


def _load(tmp_path: Path, text: str | bytes) -> ConfigError:
    path = tmp_path / "c.yaml"
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(str(info.value)) < 1000
    return info.value


def test_alias_bomb_is_refused_without_expanding(tmp_path: Path) -> None:
    start = time.perf_counter()
    err = _load(tmp_path, BOMB)
    assert time.perf_counter() - start < 1.0
    assert "alias" in err.message and "line 2" in err.message and err.hint


def test_any_alias_is_refused(tmp_path: Path) -> None:
    err = _load(tmp_path, "x: &n 3\n" + SIM.replace("count: 2", "count: *n"))
    assert "alias *n" in err.message


def test_huge_file_is_refused_before_parsing(tmp_path: Path) -> None:
    err = _load(tmp_path, SIM + "#" * MAX_CONFIG_BYTES)
    assert "larger than" in err.message


def test_non_utf8_file(tmp_path: Path) -> None:
    err = _load(tmp_path, SIM.encode() + b"# \xff\xfe\n")
    assert "not UTF-8" in err.message and "offset" in err.message


@pytest.mark.parametrize(
    ("text", "key"),
    [
        (SIM + "resources: []\n", "resources"),
        (SIM + "    count: 3\n", "count"),
    ],
)
def test_duplicate_keys_are_refused(tmp_path: Path, text: str, key: str) -> None:
    err = _load(tmp_path, text)
    assert f"duplicate key {key!r}" in err.message


@pytest.mark.parametrize(
    ("line", "where"),
    [
        ("    numaNodes: true\n", "numaNodes"),
        ("    replicas: '2'\n", "replicas"),
        ("    cdi: 'yes'\n", "cdi"),
        ("    optional: 1\n", "optional"),
        ("    count: 2.0\n", "count"),
    ],
)
def test_misleading_coercions_are_refused(tmp_path: Path, line: str, where: str) -> None:
    text = SIM.replace("    count: 2\n", "") + (line if where != "count" else "") + (
        "    count: 2\n" if where != "count" else line)
    err = _load(tmp_path, text)
    assert f"resources[0].{where}" in err.message


def test_resource_name_must_match_in_full() -> None:
    with pytest.raises(ConfigError, match="not an extended resource name"):
        parse_config({"resources": [{"name": "example.com/sim\n", "backend": "simulated", "count": 1}]})


def test_error_texts_are_bounded() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"resources": [{"name": "x" * 1_000_000, "backend": "simulated", "count": 1}]})
    assert len(str(info.value)) < 1000
    with pytest.raises(ConfigError) as info:
        parse_config({"resources": [{"name": "a.com/x", "backend": "b" * 1_000_000, "count": 1}]})
    assert len(str(info.value)) < 1000


def test_optional_entries_and_backends_travel_as_pairs() -> None:
    """An optional resource skipped here (nvidia without a driver) next to others: the pairs stay aligned."""
    config = parse_config({"resources": [
        {"name": "nvidia.com/gpu", "backend": "nvidia", "optional": True},
        {"name": "example.com/a", "backend": "simulated", "count": 1},
        {"name": "example.com/b", "backend": "simulated", "count": 2, "idPrefix": "b"},
    ]})
    try:
        pairs = build_resources(config)
    except UnavailableError:  # pragma: no cover - only where a required resource is missing
        raise
    try:
        for resource, backend in pairs:
            assert resource.name == backend.resource_name
        names = [r.name for r, _ in pairs]
        assert names[-2:] == ["example.com/a", "example.com/b"]
    finally:
        for _, backend in pairs:
            backend.close()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(max_size=200) | st.sampled_from([SIM, BOMB, SIM + SIM, "&a x: *a", "!!python/object:os.system x"]))
def test_fuzz_yaml_text(text: str) -> None:
    try:
        data = safe_yaml(text)
        config = parse_config(data)
    except ConfigError as exc:
        assert len(exc.message) < 1000 and exc.hint
        return
    assert config.resources
