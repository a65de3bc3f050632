"""The device-plugin daemon's configuration: one versioned YAML file, validated with pydantic.

```yaml
version: v1            # optional; the only version so far
resources:
  - name: example.com/sim      # common keys ...
    backend: simulated
    replicas: 1
    cdi: false
    count: 4                   # ... and the backend's own keys, flat in the same mapping
    numaNodes: 2
    stateFile: /path/to/state.json
```

Parsing (``parse_config``) is separate from reading the file (``load_config``) so tests and the
CLI validate mappings directly. Every error is a ``ConfigError`` naming the key path
(``resources[0].numaNodes``) and the reason. Backend modules are imported by name only for the
backends a config uses.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    StrictBool,
    StrictInt,
    ValidationError,
    field_validator,
)

from kubeaccel.devices.backends import BACKEND_NAMES
from kubeaccel.devices.model import Backend
from kubeaccel.devices.naming import is_valid_resource_name
from kubeaccel.errors import ConfigError, UnavailableError
from kubeaccel.paths import read_user_text

_log = logging.getLogger(__name__)

CONFIG_VERSION: Literal["v1"] = "v1"
# A plugin config is a few hundred bytes; anything near this is the wrong file.
MAX_CONFIG_BYTES = 1024 * 1024
_HINT = "see docs/plugin.md for the configuration reference; `kubeaccel plugin devices --config FILE` checks a file"


class CommonResourceConfig(BaseModel):
    """The keys every resource entry has, whatever its backend."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str = Field(description="Extended resource name, domain/name, unique in the file.")
    backend: str = Field(description="Which backend discovers the devices: " + ", ".join(BACKEND_NAMES) + ".")
    replicas: StrictInt = Field(default=1, ge=1, le=1024, description="Advertise each device this many times.")
    cdi: StrictBool = Field(
        default=False,
        description="Write a CDI spec for this resource (--cdi-dir) and return its CDI device names from Allocate.",
    )
    optional: StrictBool = Field(
        default=False,
        description="Skip this resource, with a warning, when its hardware or driver is absent on this node "
        "(one config for a mixed fleet); by default that stops the daemon with the reason.",
    )

    @field_validator("name")
    @classmethod
    def _resource_name(cls, value: str) -> str:
        if not is_valid_resource_name(value):
            raise ValueError(
                f"{_bounded(value)!r} is not an extended resource name of the form domain/name "
                "(lower-case DNS domain, not kubernetes.io; e.g. example.com/sim)"
            )
        return value

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKEND_NAMES:
            raise ValueError(f"unknown backend {_bounded(value)!r}; expected one of {', '.join(BACKEND_NAMES)}")
        return value


_COMMON_KEYS = frozenset(
    key for name, f in CommonResourceConfig.model_fields.items() for key in (name, f.alias) if key is not None
)


class ResourceConfig(CommonResourceConfig):
    """One resource: the common keys plus its backend's validated ``Config`` (``settings``)."""

    settings: SerializeAsAny[BaseModel]


class PluginConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    version: Literal["v1"] = CONFIG_VERSION
    resources: tuple[ResourceConfig, ...]


class _StrictLoader(yaml.SafeLoader):
    """``SafeLoader`` without aliases (an alias bomb expands exponentially) or duplicate keys."""

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            raise ConfigError(
                f"invalid plugin config: YAML alias *{_bounded(event.anchor)} at line {event.start_mark.line + 1}: "
                "aliases are not supported",
                hint="write the value out in full instead of using &anchor / *alias",
            )
        return super().compose_node(parent, index)

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[object] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, str | int | float | bool) or key is None:
                if key in seen:
                    raise ConfigError(
                        f"invalid plugin config: duplicate key {_bounded(str(key))!r} at line "
                        f"{key_node.start_mark.line + 1}",
                        hint="each key may appear once in a mapping; remove or merge the repeated one",
                    )
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _bounded(text: str | None, limit: int = 64) -> str:
    text = text or ""
    return text if len(text) <= limit else text[:limit] + "..."


def safe_yaml(text: str) -> Any:
    """Parse YAML safely: no arbitrary objects, no aliases, no duplicate keys. ``ConfigError`` says where."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None)
        raise ConfigError(
            f"invalid plugin config: not valid YAML{where}" + (f": {_bounded(problem)}" if problem else ""),
            hint=_HINT,
        ) from None


def backend_module(name: str) -> ModuleType:
    """The backend module for ``name`` (imported now, not before)."""
    if name not in BACKEND_NAMES:
        raise ConfigError(f"unknown backend {name!r}", hint=f"use one of {', '.join(BACKEND_NAMES)}")
    try:
        return importlib.import_module(f"kubeaccel.devices.backends.{name}")
    except ModuleNotFoundError as exc:
        if exc.name == f"kubeaccel.devices.backends.{name}":
            raise ConfigError(f"backend {name!r} is not available in this build", hint=_HINT) from exc
        raise


def _path(prefix: str, loc: Sequence[int | str]) -> str:
    out = prefix
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _config_error(prefix: str, exc: ValidationError) -> ConfigError:
    problems = []
    for err in exc.errors(include_url=False):
        where = _path(prefix, [p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-"))])
        reason = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            reason = "unknown key"
        problems.append(f"{where or '<top level>'}: {reason}")
    message = "invalid plugin config: " + "; ".join(problems)
    return ConfigError(message, hint=_HINT)


def _parse_resource(index: int, entry: object) -> ResourceConfig:
    prefix = f"resources[{index}]"
    if not isinstance(entry, Mapping):
        got = type(entry).__name__
        raise ConfigError(f"invalid plugin config: {prefix}: expected a mapping, got {got}", hint=_HINT)
    common_keys = {k: v for k, v in entry.items() if k in _COMMON_KEYS}
    own_keys = {k: v for k, v in entry.items() if k not in _COMMON_KEYS}
    try:
        common = CommonResourceConfig.model_validate(common_keys)
    except ValidationError as exc:
        raise _config_error(prefix, exc) from None
    module = backend_module(common.backend)
    try:
        settings = module.Config.model_validate(own_keys)
    except ValidationError as exc:
        raise _config_error(prefix, exc) from None
    if common.replicas > 1 and getattr(settings, "share_count", 1) > 1:
        raise ConfigError(
            f"invalid plugin config: {prefix}: replicas and shareCount both share each device",
            hint="set only one of them (their product would be advertised as <id>::<n>::<m>)",
        )
    return ResourceConfig(**common.model_dump(), settings=settings)


def parse_config(data: object) -> PluginConfig:
    """Validate a config mapping (as read from YAML). ``ConfigError`` names the key and the reason."""
    if not isinstance(data, Mapping):
        raise ConfigError(
            f"invalid plugin config: expected a mapping with a 'resources' list, got {type(data).__name__}", hint=_HINT
        )
    unknown = sorted(str(k) for k in data if k not in ("version", "resources"))
    if unknown:
        raise ConfigError(f"invalid plugin config: {', '.join(unknown)}: unknown key", hint=_HINT)
    version = data.get("version", CONFIG_VERSION)
    if version != CONFIG_VERSION:
        raise ConfigError(
            f"invalid plugin config: version: unsupported version {version!r}", hint=f"use version: {CONFIG_VERSION}"
        )
    entries = data.get("resources")
    if not isinstance(entries, Sequence) or isinstance(entries, str) or not entries:
        raise ConfigError(
            "invalid plugin config: resources: a non-empty list of resources is required",
            hint="add at least one entry with name and backend, "
            "e.g. {name: example.com/sim, backend: simulated, count: 4}",
        )
    resources = [_parse_resource(i, e) for i, e in enumerate(entries)]
    seen: dict[str, int] = {}
    for i, res in enumerate(resources):
        if res.name in seen:
            raise ConfigError(
                f"invalid plugin config: resources[{i}].name: {res.name!r} "
                f"is already used by resources[{seen[res.name]}]",
                hint="each resource name may appear once; merge the entries or rename one",
            )
        seen[res.name] = i
    return PluginConfig(version=CONFIG_VERSION, resources=tuple(resources))


def load_config(path: Path | str) -> PluginConfig:
    """Read and validate a YAML config file (bounded size, no aliases, no duplicate keys)."""
    path = Path(path)
    # the one reader of user files: bounded, never blocks on a FIFO, names binary and non-UTF-8 files
    text = read_user_text(
        path, "config file", max_bytes=MAX_CONFIG_BYTES, hint="pass --config with a YAML file"
    )
    try:
        return parse_config(safe_yaml(text))
    except ConfigError as exc:
        exc.message = f"{path}: {exc.message}"
        exc.args = (exc.message,)
        raise


def build_backend(resource: ResourceConfig, *, root: Path = Path("/")) -> Backend:
    """The backend for one resource, wrapped for sharing when ``replicas`` > 1."""
    backend: Backend = backend_module(resource.backend).create(resource.name, resource.settings, root=root)
    if resource.replicas > 1:
        from kubeaccel.devices.sharing import SharedBackend

        return SharedBackend(backend, replicas=resource.replicas)
    return backend


def build_resources(
    config: PluginConfig, *, root: Path = Path("/"), only: Collection[ResourceConfig] | None = None
) -> list[tuple[ResourceConfig, Backend]]:
    """Each available resource with its backend, in config order. A failure closes those already built.

    Entries and backends travel as pairs: an ``optional`` resource whose backend is unavailable
    here (no driver, no hardware) is skipped with a warning, so the list may be shorter than
    ``config.resources``. When that leaves nothing to serve, ``UnavailableError`` lists every reason.
    ``only`` restricts building to those entries (a reload builds only what changed).
    """
    built: list[tuple[ResourceConfig, Backend]] = []
    skipped: list[str] = []
    try:
        for resource in config.resources:
            if only is not None and resource not in only:
                continue
            try:
                built.append((resource, build_backend(resource, root=root)))
            except UnavailableError as exc:
                if not resource.optional:
                    raise
                _log.warning("%s skipped (optional): %s", resource.name, exc.message)
                skipped.append(f"{resource.name}: {exc.message}")
    except BaseException:
        for _, backend in built:
            backend.close()
        raise
    if not built and only is None:
        raise UnavailableError(
            "no configured resource is available on this node: " + "; ".join(skipped),
            hint="install the missing driver, or run the daemon only on nodes that have the devices "
            "(a nodeSelector on the DaemonSet)",
        )
    return built


def build_backends(config: PluginConfig, *, root: Path = Path("/")) -> list[Backend]:
    """The backends of ``build_resources`` alone. Skipped optional entries leave no gap, so never
    ``zip`` this with ``config.resources``: use ``build_resources`` for the pairs."""
    return [backend for _, backend in build_resources(config, root=root)]
