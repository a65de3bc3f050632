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
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, ValidationError, field_validator

from kubeaccel.devices.backends import BACKEND_NAMES
from kubeaccel.devices.model import Backend
from kubeaccel.devices.naming import is_valid_resource_name
from kubeaccel.errors import ConfigError, UnavailableError

_log = logging.getLogger(__name__)

CONFIG_VERSION: Literal["v1"] = "v1"
_HINT = "see docs/plugin.md for the configuration reference; `kubeaccel plugin devices --config FILE` checks a file"


class CommonResourceConfig(BaseModel):
    """The keys every resource entry has, whatever its backend."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    name: str = Field(description="Extended resource name, domain/name, unique in the file.")
    backend: str = Field(description="Which backend discovers the devices: " + ", ".join(BACKEND_NAMES) + ".")
    replicas: int = Field(default=1, ge=1, le=1024, description="Advertise each device this many times.")
    cdi: bool = Field(default=False, description="Also return CDI device names from Allocate.")
    optional: bool = Field(
        default=False,
        description="Skip this resource, with a warning, when its hardware or driver is absent on this node "
        "(one config for a mixed fleet); by default that stops the daemon with the reason.",
    )

    @field_validator("name")
    @classmethod
    def _resource_name(cls, value: str) -> str:
        if not is_valid_resource_name(value):
            raise ValueError(
                f"{value!r} is not an extended resource name of the form domain/name "
                "(lower-case DNS domain, not kubernetes.io; e.g. example.com/sim)"
            )
        return value

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        if value not in BACKEND_NAMES:
            raise ValueError(f"unknown backend {value!r}; expected one of {', '.join(BACKEND_NAMES)}")
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
    """Read and validate a YAML config file."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist", hint="pass --config with an existing file") from None
    except OSError as exc:
        raise ConfigError(
            f"cannot read config file {path}: {exc.strerror}", hint="check the path and its permissions"
        ) from None
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}", hint=_HINT) from None
    try:
        return parse_config(data)
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


def build_backends(config: PluginConfig, *, root: Path = Path("/")) -> list[Backend]:
    """One backend per resource, in config order. A failure closes the ones already built.

    An ``optional`` resource whose backend is unavailable here (no driver, no hardware) is skipped
    with a warning; when that leaves nothing to serve, ``UnavailableError`` lists every reason.
    """
    built: list[Backend] = []
    skipped: list[str] = []
    try:
        for resource in config.resources:
            try:
                built.append(build_backend(resource, root=root))
            except UnavailableError as exc:
                if not resource.optional:
                    raise
                _log.warning("%s skipped (optional): %s", resource.name, exc.message)
                skipped.append(f"{resource.name}: {exc.message}")
    except BaseException:
        for backend in built:
            backend.close()
        raise
    if not built:
        raise UnavailableError(
            "no configured resource is available on this node: " + "; ".join(skipped),
            hint="install the missing driver, or run the daemon only on nodes that have the devices "
            "(a nodeSelector on the DaemonSet)",
        )
    return built
