"""Pod templates (`spark.kubernetes.{driver,executor}.podTemplateFile`), read and checked at the edge.

A template is read once (a local path or any fsspec URL), must be UTF-8 text of bounded size, YAML,
one `kind: Pod` mapping whose `metadata`, `spec` and `spec.containers` have the shapes Kubernetes
expects. Every failure of the store (unknown scheme, missing filesystem package, credentials, network)
becomes one error that names the conf and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlparse

from kubeaccel.errors import ConfigError, NotFoundError, UnavailableError
from kubeaccel.paths import read_user_bytes, user_path

TEMPLATE_MAX_BYTES = 1 * 2**20  # a ConfigMap holds at most 1 MiB anyway
DRIVER_KEY = "spark.kubernetes.driver.podTemplateFile"
EXECUTOR_KEY = "spark.kubernetes.executor.podTemplateFile"


def is_local(uri: str) -> bool:
    return urlparse(uri).scheme in ("", "file")


def read_text(uri: str, key: str) -> str:
    """The file's text, from the local disk or through fsspec; every failure named with `key`."""
    data = _read_local(uri, key) if is_local(uri) else _read_remote(uri, key)
    if b"\0" in data:
        raise ConfigError(f"{key}={uri!r} is a binary file", hint="a pod template is a YAML text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{key}={uri!r} is not UTF-8 text", hint="a pod template is a YAML text file") from exc


def _read_local(uri: str, key: str) -> bytes:
    path = user_path(urlparse(uri).path if uri.startswith("file:") else uri, key)
    return read_user_bytes(
        path, key, max_bytes=TEMPLATE_MAX_BYTES, hint="a pod template is a small YAML file", missing=NotFoundError
    )


def _read_remote(uri: str, key: str) -> bytes:
    try:
        import fsspec

        with fsspec.open(uri, "rb") as handle:
            data: bytes = handle.read(TEMPLATE_MAX_BYTES + 1)
    except FileNotFoundError as exc:
        raise NotFoundError(f"{key}={uri!r} does not exist", hint="check the URL") from exc
    except (ImportError, ValueError) as exc:  # unknown protocol, or its filesystem package is not installed
        raise ConfigError(
            f"{key}={uri!r} cannot be opened: {exc}",
            hint="use a local path, or install the fsspec filesystem for this scheme (e.g. s3fs, gcsfs)",
        ) from exc
    except PermissionError as exc:
        raise ConfigError(f"{key}={uri!r} may not be read: {exc}", hint="check the store's credentials") from exc
    except Exception as exc:  # each fsspec backend raises its own family (botocore, aiohttp, OSError, ...)
        raise UnavailableError(
            f"{key}={uri!r} cannot be read: {type(exc).__name__}: {str(exc)[:300]}",
            hint="check the URL, the network and the store's credentials",
        ) from exc
    if len(data) > TEMPLATE_MAX_BYTES:
        raise ConfigError(f"{key}={uri!r} is larger than 1 MiB", hint="a pod template is a small YAML file")
    return data


def _shape_problem(pod: Mapping[str, Any]) -> str | None:
    if pod.get("kind", "Pod") != "Pod":
        return f"its kind is {str(pod.get('kind'))[:50]!r}, not Pod"
    for field in ("metadata", "spec"):
        if field in pod and not isinstance(pod[field], dict | type(None)):
            return f"{field} is not a mapping"
    metadata = pod.get("metadata") or {}
    for field in ("labels", "annotations"):
        value = metadata.get(field)
        if value is not None and (
            not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
        ):
            return f"metadata.{field} is not a mapping of strings"
    spec = pod.get("spec") or {}
    for field in ("containers", "initContainers", "volumes", "tolerations", "imagePullSecrets"):
        value = spec.get(field)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, dict) for v in value)):
            return f"spec.{field} is not a list of mappings"
    if spec.get("nodeSelector") is not None and not isinstance(spec["nodeSelector"], dict):
        return "spec.nodeSelector is not a mapping"
    for index, container in enumerate(spec.get("containers") or []):
        for field in ("env", "ports", "volumeMounts"):
            value = container.get(field)
            if value is not None and (not isinstance(value, list) or not all(isinstance(v, dict) for v in value)):
                return f"spec.containers[{index}].{field} is not a list of mappings"
        for field in ("resources", "securityContext"):
            if container.get(field) is not None and not isinstance(container[field], dict):
                return f"spec.containers[{index}].{field} is not a mapping"
        if container.get("name") is not None and not isinstance(container["name"], str):
            return f"spec.containers[{index}].name is not a string"
    return None


def parse_pod(text: str, uri: str, key: str) -> dict[str, Any]:
    """The template as a Pod mapping; a ConfigError naming `key` when it is not one."""
    import yaml

    try:
        pod = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{key}={uri!r} is not valid YAML: {exc}", hint="fix the template file") from exc
    if not isinstance(pod, dict):
        raise ConfigError(f"{key}={uri!r} is not a Pod", hint="a pod template is a `kind: Pod` manifest")
    problem = _shape_problem(pod)
    if problem:
        raise ConfigError(f"{key}={uri!r} is not a valid Pod: {problem}", hint="fix the template file")
    return pod


def load(uri: str, key: str) -> tuple[dict[str, Any], str]:
    """(the parsed Pod, its text) of a template."""
    text = read_text(uri, key)
    return parse_pod(text, uri, key), text
