"""spark-submit's command line, as data: flags -> one resolved Spark conf.

Precedence is spark-submit's: a dedicated flag (`--name`, `--jars`, `--num-executors`, ...) beats
`--conf k=v`, which beats `--properties-file`; except that `--conf spark.driver.memory` beats
`--driver-memory` in cluster mode, as it does in spark-submit. Everything here is pure: reading the
properties file is the only I/O.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

from kubeaccel.errors import ConfigError, NotFoundError
from kubeaccel.paths import read_user_text

PYTHON_RUNNER = "org.apache.spark.deploy.PythonRunner"
R_RUNNER = "org.apache.spark.deploy.RRunner"


@dataclass(frozen=True)
class SubmitRequest:
    """What a user asks spark-submit for in Kubernetes cluster mode."""

    app_resource: str
    master: str | None = None
    app_args: tuple[str, ...] = ()
    name: str | None = None
    main_class: str | None = None
    conf: Mapping[str, str] = field(default_factory=dict)
    properties_file: Path | None = None
    jars: tuple[str, ...] = ()
    files: tuple[str, ...] = ()
    py_files: tuple[str, ...] = ()
    archives: tuple[str, ...] = ()
    deploy_mode: str = "cluster"
    # confs set by spark-submit's dedicated flags (--driver-memory, --num-executors, ...): they win over --conf
    flag_conf: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_python(self) -> bool:
        return self.app_resource.endswith(".py")

    @property
    def is_r(self) -> bool:
        return self.app_resource.lower().endswith(".r")


# spark-submit's flags that set one conf each (Kubernetes cluster mode), as its OptionAssigners do;
# a flag beats `--conf` of the same key (except spark.driver.memory, below)
FLAG_CONFS = {
    "driver_memory": "spark.driver.memory",
    "driver_cores": "spark.driver.cores",
    "executor_memory": "spark.executor.memory",
    "executor_cores": "spark.executor.cores",
    "num_executors": "spark.executor.instances",
    "driver_class_path": "spark.driver.extraClassPath",
    "driver_java_options": "spark.driver.extraJavaOptions",
    "driver_library_path": "spark.driver.extraLibraryPath",
    "packages": "spark.jars.packages",
    "repositories": "spark.jars.repositories",
    "exclude_packages": "spark.jars.excludes",
    "queue": "spark.kubeaccel.queue",  # all-or-nothing scheduling: see kubeaccel.spark.gang
    "gang": "spark.kubeaccel.gang.enabled",
}
RESOURCE_FLAGS = FLAG_CONFS  # the older name


# spark-submit's one exception in cluster mode (checked against Spark 4.3 by the reference test):
# `--conf spark.driver.memory` beats `--driver-memory`, while the other resource flags beat their confs
_CONF_BEATS_FLAG = {"spark.driver.memory"}


def parse_properties(text: str) -> dict[str, str]:
    """Java .properties as spark-defaults.conf uses it: `key value`, `key=value` or `key: value`."""
    result: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.lstrip()
        if not line or line[0] in "#!":
            continue
        # the key ends at the first unescaped '=', ':' or whitespace
        index = 0
        while index < len(line) and line[index] not in "=: \t\f":
            index += 2 if line[index] == "\\" else 1
        key, rest = line[:index], line[index:].lstrip(" \t\f")
        if rest[:1] in ("=", ":"):
            rest = rest[1:].lstrip(" \t\f")
        result[_unescape(key)] = _unescape(rest)
    return result


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "t": "\t"}.get(m.group(1), m.group(1)), text)


def format_properties(conf: Mapping[str, str], header: Sequence[str] = ()) -> str:
    """Java .properties text, escaped the way java.util.Properties.store does for keys and values."""

    def escape(text: str, is_key: bool) -> str:
        out = []
        for index, char in enumerate(text):
            if char in "\\=:#!" or (char == " " and (is_key or index == 0)):
                out.append("\\" + char)
            elif char == "\n":
                out.append("\\n")
            elif char == "\t":
                out.append("\\t")
            else:
                out.append(char)
        return "".join(out)

    lines = [f"#{line}" for line in header]
    lines += [f"{escape(k, True)}={escape(v, False)}" for k, v in conf.items()]
    return "\n".join(lines) + "\n"


def parse_conf_pairs(pairs: Sequence[str]) -> dict[str, str]:
    """`--conf k=v` values into a dict; a pair without `=` is a user error."""
    conf: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(
                f"--conf {pair!r} is not of the form key=value", hint="e.g. --conf spark.executor.instances=4"
            )
        conf[key.strip()] = value
    return conf


def master_url(master: str) -> str:
    """`k8s://https://host:6443` -> `https://host:6443`; `k8s://host:6443` -> `https://host:6443`."""
    from kubeaccel.kube.kubeconfig import check_server_url

    if not master.startswith("k8s://"):
        raise ConfigError(
            f"master {master[:200]!r} is not a Kubernetes master URL",
            hint="use --master k8s://https://HOST:PORT (or k8s://HOST:PORT, https assumed)",
        )
    rest = master[len("k8s://") :]
    if not rest:
        raise ConfigError("master 'k8s://' names no API server", hint="use --master k8s://https://HOST:PORT")
    if "://" not in rest:
        rest = "https://" + rest
    return check_server_url(rest, "master")


def resolve_conf(request: SubmitRequest) -> dict[str, str]:
    """Merge the properties file, `--conf` and flags into the conf spark-submit would hand the driver."""
    if request.deploy_mode != "cluster":
        raise ConfigError(
            f"deploy mode {request.deploy_mode!r} is not supported",
            hint="kubeaccel submits in cluster mode: the driver runs in a pod; use --deploy-mode cluster",
        )
    conf: dict[str, str] = {}
    if request.properties_file is not None:
        text = read_user_text(
            request.properties_file,
            "--properties-file",
            hint="check the --properties-file path",
            allow_empty=True,  # spark-submit reads an empty properties file as no properties
            missing=NotFoundError,
        )
        conf.update(parse_properties(text))
    conf.update(request.conf)
    for key, value in request.flag_conf.items():
        if key in _CONF_BEATS_FLAG:
            conf.setdefault(key, value)
        else:
            conf[key] = value
    master = request.master or conf.get("spark.master")
    if not master:
        raise ConfigError("no master URL given", hint="pass --master k8s://https://HOST:PORT")
    master_url(master)  # validates
    conf["spark.master"] = master
    conf["spark.submit.deployMode"] = "cluster"
    name = request.name or conf.get("spark.app.name") or request.main_class
    if not name:
        name = PurePosixPath(urlparse(request.app_resource).path or request.app_resource).name
    conf["spark.app.name"] = name
    for key, values in (
        ("spark.jars", request.jars),
        ("spark.files", request.files),
        ("spark.archives", request.archives),
        ("spark.submit.pyFiles", request.py_files),
    ):
        if values:
            conf[key] = ",".join(values)
    if not (request.is_python or request.is_r):
        if not request.main_class:
            raise ConfigError("no main class given for a JVM application", hint="pass --class com.example.Main")
        # spark-submit adds the application jar to spark.jars so the driver's class loader sees it
        conf["spark.jars"] = ",".join([*split_list(conf.get("spark.jars", "")), request.app_resource])
    conf["spark.submit.pyFiles"] = conf.get("spark.submit.pyFiles", "")
    return conf


def split_list(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


_SIZE_UNITS = {
    "b": 1,
    "k": 2**10,
    "kb": 2**10,
    "m": 2**20,
    "mb": 2**20,
    "g": 2**30,
    "gb": 2**30,
    "t": 2**40,
    "tb": 2**40,
    "p": 2**50,
    "pb": 2**50,
}
# the largest memory a conf may name: 1 PiB, far above any node, far below what breaks arithmetic
MAX_MEMORY_MIB = 2**30
MAX_COUNT = 1_000_000


def size_to_mib(value: str, key: str, *, default_unit: str = "m") -> int:
    """Spark's memory strings ("2g", "512m", "1024") to whole MiB, as Spark's byteStringAsMb.

    A bare number is in `default_unit` (MiB for most memory confs, bytes for spark.memory.offHeap.size).
    """
    match = re.fullmatch(r"\s*([0-9]{1,20})\s*([a-zA-Z]*)\s*", value)
    unit = (match.group(2).lower() if match else "") or default_unit
    if not match or unit not in _SIZE_UNITS:
        raise ConfigError(f"{key}={value[:100]!r} is not a size", hint=f"use e.g. {key}=2g or {key}=512m")
    mib = int(match.group(1)) * _SIZE_UNITS[unit] // 2**20
    if mib > MAX_MEMORY_MIB:
        raise ConfigError(f"{key}={value[:100]!r} is more than 1 PiB", hint=f"use e.g. {key}=8g")
    return mib


def conf_int(conf: Mapping[str, str], key: str, default: int, *, minimum: int = 0, maximum: int = MAX_COUNT) -> int:
    """A whole-number conf within [minimum, maximum]."""
    raw = conf.get(key)
    if raw is None:
        return default
    text = raw.strip()
    if not re.fullmatch(r"[0-9]{1,12}", text) or not minimum <= int(text) <= maximum:
        raise ConfigError(
            f"{key}={raw[:100]!r} is not a whole number from {minimum} to {maximum}", hint=f"e.g. {key}={default}"
        )
    return int(text)


def conf_float(conf: Mapping[str, str], key: str, *, maximum: float = 1000.0) -> float:
    """A finite, positive number conf (factors): `nan`, `inf`, 0 and negatives are refused."""
    raw = conf[key]
    try:
        value = float(raw)
    except ValueError as exc:
        raise ConfigError(f"{key}={raw[:100]!r} is not a number", hint=f"e.g. {key}=0.1") from exc
    if not math.isfinite(value) or not 0 < value <= maximum:
        raise ConfigError(
            f"{key}={raw[:100]!r} must be a number above 0 and at most {maximum:g}", hint=f"e.g. {key}=0.1"
        )
    return value


def conf_bool(conf: Mapping[str, str], key: str, default: bool = False) -> bool:
    """Spark's boolean confs: true or false, any case."""
    raw = conf.get(key)
    if raw is None:
        return default
    text = raw.strip().lower()
    if text not in ("true", "false"):
        raise ConfigError(f"{key}={raw[:100]!r} is not true or false", hint=f"e.g. {key}=true")
    return text == "true"
