"""Spark resource discovery: tell Spark which devices kubeaccel's plugin gave this container.

Spark runs ``spark.{driver,executor,worker}.resource.<name>.discoveryScript`` with no arguments
and parses its stdout as ``{"name": "<name>", "addresses": [...]}``; a non-zero exit fails the
executor with our stderr in the log. So the resource is taken, in this order, from:

1. the ``RESOURCE`` argument (``kubeaccel-discover nec.com/ve``, or a wrapper script written by
   ``kubeaccel discover nec.com/ve --write-script PATH``);
2. ``KUBEACCEL_DISCOVER_RESOURCE`` (e.g. ``spark.executorEnv.KUBEACCEL_DISCOVER_RESOURCE``);
3. the single ``KUBEACCEL_DEVICES_*`` variable present, which is the common case: a pod that
   requests one extended resource gets exactly one such variable from our ``Allocate``.

Addresses come from ``KUBEACCEL_DEVICES_<RESOURCE>``; failing that from the family's native
variable (``_VENODELIST`` / ``VE_NODE_NUMBER``, ``NVIDIA_VISIBLE_DEVICES``); failing that from
probing the node's healthy devices with the family's backend (bare-metal standalone workers).

This runs at every executor start, so the console-script path imports only ``json``, ``os`` and
``re``: no click, no pydantic, no device model unless a backend probe is needed.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

from kubeaccel.devices.naming import ENV_PREFIX, devices_env_var, is_valid_resource_name
from kubeaccel.errors import ConfigError, KubeaccelError, NotFoundError

if TYPE_CHECKING:
    import click

RESOURCE_ENV = "KUBEACCEL_DISCOVER_RESOURCE"
NAME_ENV = "KUBEACCEL_DISCOVER_NAME"
# Prefix for /dev and /sys when probing (a container that mounts the host's elsewhere; tests).
ROOT_ENV = "KUBEACCEL_DISCOVER_ROOT"


class _NativeVar(NamedTuple):
    name: str
    separator: str | None  # None: the variable holds one address


# The family's own variables, read when ours is absent (e.g. a pod set up by another plugin).
NATIVE_VARS: dict[str, tuple[_NativeVar, ...]] = {
    "nec.com/ve": (_NativeVar("_VENODELIST", " "), _NativeVar("VE_NODE_NUMBER", None)),
    "nvidia.com/gpu": (_NativeVar("NVIDIA_VISIBLE_DEVICES", ","),),
}

# Backend module (``kubeaccel.devices.backends.<module>``) to probe when no variable is set.
PROBE_BACKENDS: dict[str, str] = {"nec.com/ve": "ve", "nvidia.com/gpu": "nvidia"}

# Resources whose allocated devices a container sees renumbered from 0: a container given host GPUs
# 1 and 3 (by device nodes, CDI or NVIDIA_VISIBLE_DEVICES=<UUIDs>) has CUDA devices 0 and 1, and
# those are the addresses Spark's tasks must use (torch.cuda.set_device, CUDA_VISIBLE_DEVICES).
RENUMBERED = frozenset({"nvidia.com/gpu"})

# NVIDIA container runtime values that name no device, or all of them (then we probe).
_NVIDIA_NONE = frozenset({"none", "void", ""})
_NVIDIA_ALL = "all"


class Discovery(NamedTuple):
    """What the script prints, and where the addresses came from (for ``--explain`` and tests)."""

    name: str
    addresses: tuple[str, ...]
    source: str

    def to_json(self) -> str:
        return json.dumps({"name": self.name, "addresses": list(self.addresses)})


Prober = Callable[[str, str], Sequence[str]]


def spark_resource_name(resource: str) -> str:
    """``nec.com/ve`` -> ``ve``: the ``<name>`` in ``spark.executor.resource.<name>.*``."""
    return resource.rsplit("/", 1)[-1]


def split_addresses(value: str, separator: str | None = ",") -> tuple[str, ...]:
    """Addresses from a variable's value: trimmed, empties dropped, duplicates dropped, order kept."""
    parts = [value] if separator is None else value.split(separator) if separator != " " else value.split()
    seen: dict[str, None] = {}
    for part in parts:
        address = part.strip()
        if address:
            seen.setdefault(address, None)
    return tuple(seen)


def _only_devices_var(env: Mapping[str, str]) -> tuple[str, str]:
    """(variable, Spark name) for the only ``KUBEACCEL_DEVICES_*`` variable present."""
    ours = sorted(k for k in env if k.startswith(ENV_PREFIX) and len(k) > len(ENV_PREFIX))
    if len(ours) == 1:
        # The variable name lost the resource's punctuation; its last word is the resource's name
        # part in the usual case (nec.com/ve, nvidia.com/gpu, example.com/sim).
        return ours[0], ours[0][len(ENV_PREFIX) :].rsplit("_", 1)[-1].lower()
    if not ours:
        raise NotFoundError(
            "no devices allocated to this container: no resource named and no KUBEACCEL_DEVICES_* variable set",
            hint="request the resource in the pod (e.g. spark.executor.resource.ve.amount=1 with "
            "spark.executor.resource.ve.vendor=nec.com), or name it: kubeaccel-discover nec.com/ve",
        )
    raise ConfigError(
        f"several allocated resources ({', '.join(ours)}); cannot tell which one Spark asks for",
        hint="name the resource: kubeaccel discover RESOURCE --write-script PATH writes a script for one, "
        f"or set {RESOURCE_ENV}",
    )


def resolve(
    resource: str | None,
    env: Mapping[str, str],
    *,
    name: str | None = None,
    probe: Prober | None = None,
) -> Discovery:
    """The addresses allocated to this container for ``resource`` (pure but for the optional probe)."""
    resource = resource or env.get(RESOURCE_ENV) or None
    name = name or env.get(NAME_ENV) or None
    if resource is None:
        var, inferred_name = _only_devices_var(env)
        addresses = split_addresses(env[var])
        if not addresses:
            raise NotFoundError(f"{var} is set but empty: no devices allocated", hint="check the pod's resource limits")
        if any(var == devices_env_var(r) for r in RENUMBERED):
            addresses = _renumbered(addresses)
        return Discovery(name or inferred_name, addresses, var)

    if not is_valid_resource_name(resource):
        raise ConfigError(
            f"{resource!r} is not an extended resource name (domain/name)",
            hint="use the name the plugin advertises, e.g. nec.com/ve or nvidia.com/gpu",
        )
    name = name or spark_resource_name(resource)
    var = devices_env_var(resource)
    renumber = _renumbered if resource in RENUMBERED else tuple
    if var in env:
        addresses = split_addresses(env[var])
        if addresses:
            return Discovery(name, renumber(addresses), var)

    probe_all = False
    for native in NATIVE_VARS.get(resource, ()):
        value = env.get(native.name)
        if value is None:
            continue
        if native.name == "NVIDIA_VISIBLE_DEVICES":
            if value.strip().lower() == _NVIDIA_ALL:
                probe_all = True
                break
            if value.strip().lower() in _NVIDIA_NONE:
                continue
        addresses = split_addresses(value, native.separator)
        if addresses:
            return Discovery(name, renumber(addresses), native.name)

    backend = PROBE_BACKENDS.get(resource)
    probe_error = ""
    if backend is not None:
        try:
            root = env.get(ROOT_ENV) or "/"
            addresses = tuple(probe(resource, backend) if probe else probe_backend(resource, backend, root))
        except KubeaccelError as exc:
            probe_error = f"; probing the {backend} backend failed: {exc.message}"
        else:
            if addresses:
                return Discovery(name, addresses, f"probe:{backend}" + (" (NVIDIA_VISIBLE_DEVICES=all)" * probe_all))
            probe_error = f"; the {backend} backend found no healthy devices"
    looked = [var, *(n.name for n in NATIVE_VARS.get(resource, ()))]
    raise NotFoundError(
        f"no {resource} devices allocated to this container (looked at {', '.join(looked)}{probe_error})",
        hint=f"request {resource} in the pod's limits (Spark: spark.executor.resource.{name}.amount and "
        f".vendor={resource.split('/', 1)[0]}) and run the kubeaccel device plugin on the node",
    )


def _renumbered(addresses: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(str(i) for i in range(len(addresses)))


def probe_backend(resource: str, backend: str, root: str = "/") -> list[str]:
    """Healthy device indices of this node, from the family's backend on its default config."""
    import importlib
    from pathlib import Path

    module_name = f"kubeaccel.devices.backends.{backend}"
    try:
        module: Any = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise NotFoundError(f"backend {backend!r} is not available in this kubeaccel") from exc
        raise NotFoundError(f"backend {backend!r} needs {exc.name}", hint=f"pip install {exc.name}") from exc
    try:
        created = module.create(resource, module.Config(), root=Path(root))
        try:
            devices = created.scan()
        finally:
            created.close()
    except KubeaccelError:
        raise
    except Exception as exc:  # a probe on a host without the driver must not crash the executor
        raise NotFoundError(f"{type(exc).__name__}: {exc}") from exc
    return [device.index for device in devices.values() if device.healthy]


def write_script(path: str, resource: str, *, name: str | None = None, executable: str | None = None) -> None:
    """Write a no-argument script for Spark's ``discoveryScript`` that discovers ``resource``."""
    import shlex

    if not is_valid_resource_name(resource):
        raise ConfigError(f"{resource!r} is not an extended resource name (domain/name)", hint="e.g. nec.com/ve")
    exe = executable or _discover_executable()
    args = [exe, resource, *(["--name", name] if name else [])]
    body = f"#!/bin/sh\n# Spark discovery script for {resource}, written by kubeaccel.\nexec {shlex.join(args)}\n"
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(body)
        os.chmod(path, 0o755)
    except OSError as exc:
        raise ConfigError(f"cannot write {path}: {exc.strerror}", hint="choose a writable path") from exc


def _discover_executable() -> str:
    """The ``kubeaccel-discover`` next to the running interpreter (the venv's), else on PATH."""
    import shutil

    beside = os.path.join(os.path.dirname(sys.executable), "kubeaccel-discover")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("kubeaccel-discover")
    if found is None:
        raise NotFoundError("kubeaccel-discover is not installed", hint="pip install kubeaccel")
    return os.path.abspath(found)


_USAGE = """usage: kubeaccel-discover [RESOURCE] [--name NAME]

Print Spark's resource JSON for the devices kubeaccel allocated to this container.
RESOURCE (e.g. nec.com/ve) defaults to $KUBEACCEL_DISCOVER_RESOURCE, else the only
KUBEACCEL_DEVICES_* variable set. NAME is Spark's resource name (default: after the '/').
"""


def _parse_argv(argv: Sequence[str]) -> tuple[str | None, str | None]:
    # Hand-rolled on purpose: argparse alone costs more than the rest of a run.
    resource: str | None = None
    name: str | None = None
    args = list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            raise SystemExit(_USAGE)
        if arg == "--name" and args:
            name = args.pop(0)
        elif arg.startswith("--name="):
            name = arg.split("=", 1)[1]
        elif not arg.startswith("-") and resource is None:
            resource = arg
        else:
            raise ConfigError(f"unexpected argument {arg!r}", hint=_USAGE.splitlines()[0])
    return resource, name


def main(argv: Sequence[str] | None = None) -> int:
    """``kubeaccel-discover``: JSON on stdout, or a message on stderr and exit status 2-4."""
    try:
        resource, name = _parse_argv(sys.argv[1:] if argv is None else argv)
        result = resolve(resource, os.environ, name=name)
    except KubeaccelError as exc:
        sys.stderr.write(f"kubeaccel-discover: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"  hint: {exc.hint}\n")
        return exc.exit_code
    sys.stdout.write(result.to_json() + "\n")
    return 0


def _build_click_command() -> click.Command:
    import click

    from kubeaccel.cliopts import PathParam

    @click.command("discover")
    @click.argument("resource", required=False)
    @click.option("--name", help="Spark's resource name (default: the part after '/').")
    @click.option(
        "--write-script",
        "script_path",
        type=PathParam(dir_okay=False),
        help="Write a no-argument script for spark.*.resource.NAME.discoveryScript instead.",
    )
    @click.option("--explain", is_flag=True, help="Also say on stderr where the addresses came from.")
    def discover_command(resource: str | None, name: str | None, script_path: str | None, explain: bool) -> None:
        """Print Spark's resource JSON for the devices allocated to this container.

        \b
        kubeaccel discover nec.com/ve
        kubeaccel discover nec.com/ve --write-script /opt/spark/discover-ve.sh
        """
        if script_path is not None:
            if resource is None:
                raise click.UsageError("--write-script needs RESOURCE")
            write_script(script_path, resource, name=name)
            click.echo(script_path)
            return
        result = resolve(resource, os.environ, name=name)
        click.echo(result.to_json())
        if explain:
            click.echo(f"from {result.source}", err=True)

    return discover_command


def __getattr__(attr: str) -> Any:
    # The root CLI looks up ``discover``; building it lazily keeps click out of the script's path.
    if attr == "discover":
        command = _build_click_command()
        globals()["discover"] = command
        return command
    raise AttributeError(attr)


if __name__ == "__main__":
    sys.exit(main())
