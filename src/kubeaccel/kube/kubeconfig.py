"""Choosing what to connect to, checked at the edge: the kubeconfig file, its context, the server URL.

lightkube reads a kubeconfig trustingly: a bad base64 certificate, a context naming a missing
cluster or a server URL with a port of `abc` surface as KeyErrors or binascii errors deep inside a
request. Here the file is read once, every field we rely on is checked with the fix named, the
`k8s://` master replaces the server, and lightkube gets the checked document through its public
`KubeConfig.from_dict`.
"""

from __future__ import annotations

import binascii
import os
from base64 import b64decode
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from kubeaccel.errors import ConfigError, NotFoundError
from kubeaccel.kube.names import label_problem
from kubeaccel.paths import read_user_text, user_path

KUBECONFIG_MAX_BYTES = 4 * 2**20
_B64_FIELDS = {
    "cluster": ("certificate-authority-data",),
    "user": ("client-certificate-data", "client-key-data"),
}
_FILE_FIELDS = {"cluster": ("certificate-authority",), "user": ("client-certificate", "client-key", "tokenFile")}


def check_server_url(url: str, what: str = "the API server URL") -> str:
    """An http(s) URL with a host and, if given, a numeric port in range; returns it unchanged."""
    hint = "use https://HOST:PORT, e.g. https://10.0.0.1:6443"
    if not url.isascii() or not url.isprintable() or any(ch.isspace() for ch in url):
        raise ConfigError(f"{what} {url[:200]!r} has spaces, control or non-ASCII characters", hint=hint)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number in 0..65535
    except ValueError as exc:
        raise ConfigError(f"{what} {url[:200]!r} is not a valid URL: {exc}", hint=hint) from exc
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{what} {url[:200]!r} is not an http(s) URL", hint=hint)
    if not parts.hostname:
        raise ConfigError(f"{what} {url[:200]!r} names no host", hint=hint)
    if port == 0:
        raise ConfigError(f"{what} {url[:200]!r} has port 0", hint=hint)
    if parts.query or parts.fragment:
        raise ConfigError(f"{what} {url[:200]!r} carries a query or fragment", hint=hint)
    return url


def server_only(server: str) -> dict[str, Any]:
    """A kubeconfig document for a bare `--master k8s://URL` with no kubeconfig at all: anonymous access
    (the API server then says what it allows), the system's CAs."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "master", "cluster": {"server": check_server_url(server, "the master URL")}}],
        "users": [{"name": "anonymous", "user": {}}],
        "contexts": [{"name": "master", "context": {"cluster": "master", "user": "anonymous"}}],
        "current-context": "master",
    }


def kubeconfig_path(explicit: str | Path | None) -> Path | None:
    """--kubeconfig, else the first existing file in $KUBECONFIG, else ~/.kube/config if it exists."""
    if explicit:
        return user_path(explicit, "--kubeconfig")
    env = os.environ.get("KUBECONFIG")
    if env:
        for part in env.split(os.pathsep):
            if part and (candidate := user_path(part, "KUBECONFIG")).is_file():
                return candidate
        return user_path(env.split(os.pathsep)[0], "KUBECONFIG")
    default = user_path("~/.kube/config", "the default kubeconfig")
    return default if default.is_file() else None


def read_kubeconfig(path: Path) -> dict[str, Any]:
    """The kubeconfig document, or a ConfigError that says what is wrong with the file."""
    import yaml

    where = f"kubeconfig {str(path)!r}"
    text = read_user_text(path, "kubeconfig", max_bytes=KUBECONFIG_MAX_BYTES, hint="check KUBECONFIG or --kubeconfig")
    try:
        # libyaml's loader when present: a big kubeconfig parses several times faster
        document = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} is not valid YAML: {exc}", hint="check it with kubectl config view") from exc
    if not isinstance(document, dict):
        raise ConfigError(f"{where} is not a kubeconfig (a YAML mapping)", hint="check it with kubectl config view")
    for section in ("clusters", "users", "contexts"):
        entries = document.get(section) or []
        if not isinstance(entries, list) or not all(
            isinstance(e, dict) and isinstance(e.get("name"), str) for e in entries
        ):
            raise ConfigError(
                f"{where}: {section} is not a list of named entries", hint="check it with kubectl config view"
            )
    return document


def _named(document: Mapping[str, Any], section: str, key: str, name: str, where: str) -> dict[str, Any]:
    for entry in document.get(section) or []:
        if entry["name"] == name:
            body = entry.get(key) or {}
            if not isinstance(body, dict):
                raise ConfigError(f"{where}: {key} {name!r} is not a mapping", hint="check it with kubectl config view")
            return body
    raise ConfigError(f"{where}: the context names {key} {name!r}, which is not in {section}", hint="fix the context")


def context_parts(document: Mapping[str, Any], name: str) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """The context, cluster and user bodies of a context `select` has checked (the user's is empty when
    the context names none). File paths in them are absolute: `select` resolved them."""
    where = "kubeconfig"
    context = _named(document, "contexts", "context", name, where)
    cluster = _named(document, "clusters", "cluster", context["cluster"], where)
    user = _named(document, "users", "user", context["user"], where) if isinstance(context.get("user"), str) else {}
    return context, cluster, user


def _check_entry(body: dict[str, Any], kind: str, name: str, where: str, base: Path) -> None:
    for field in _B64_FIELDS[kind]:
        if field in body:
            try:
                b64decode(str(body[field]), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ConfigError(
                    f"{where}: {kind} {name!r} {field} is not valid base64 ({exc})",
                    hint="re-export the credentials (kubectl config view --raw) or point at files instead",
                ) from exc
    for field in _FILE_FIELDS[kind]:
        if body.get(field):
            what = f"{where}: {kind} {name!r} {field}"
            file = user_path(str(body[field]), what)
            file = file if file.is_absolute() else base / file
            # read once here, so a FIFO, a directory or a binary file is named before ssl or a request meets it
            read_user_text(file, what, hint="fix the path in the kubeconfig")
            body[field] = str(file)  # relative to the kubeconfig, as kubectl reads it, whatever the clients' cwd
    if kind == "user":
        has_cert = bool(body.get("client-certificate-data") or body.get("client-certificate"))
        has_key = bool(body.get("client-key-data") or body.get("client-key"))
        if has_cert != has_key:
            given, missing = ("certificate", "key") if has_cert else ("key", "certificate")
            raise ConfigError(
                f"{where}: user {name!r} has a client {given} but no client {missing}",
                hint=f"add client-{missing}-data (or client-{missing}), or remove the client {given}",
            )


def select(
    document: dict[str, Any], path: Path, *, context: str | None, server: str | None
) -> tuple[dict[str, Any], str]:
    """Check the chosen context and what it points at; returns (document to hand lightkube, context name)."""
    where = f"kubeconfig {str(path)!r}"
    contexts = {entry["name"]: entry for entry in document.get("contexts") or []}
    name = context or document.get("current-context")
    if not name:
        raise ConfigError(f"{where} has no current context", hint="pass --context NAME")
    if name not in contexts:
        known = ", ".join(sorted(contexts)[:20]) or "none"
        raise NotFoundError(f"context {name!r} is not in {path}", hint=f"known contexts: {known}")
    body = contexts[name].get("context") or {}
    if not isinstance(body, dict) or not isinstance(body.get("cluster"), str):
        raise ConfigError(f"{where}: context {name!r} names no cluster", hint="fix the context")
    namespace = body.get("namespace")
    if namespace is not None:
        problem = label_problem(str(namespace), "the context's namespace")
        if problem:
            raise ConfigError(f"{where}: {problem}", hint=f"fix context {name!r}'s namespace")
    cluster = _named(document, "clusters", "cluster", body["cluster"], where)
    _check_entry(cluster, "cluster", body["cluster"], where, path.parent)
    if isinstance(body.get("user"), str):
        user = _named(document, "users", "user", body["user"], where)
        _check_entry(user, "user", body["user"], where, path.parent)
    if server:
        cluster["server"] = check_server_url(server, "the master URL")
    if not isinstance(cluster.get("server"), str):
        raise ConfigError(f"{where}: cluster {body['cluster']!r} has no server", hint="set clusters[].cluster.server")
    check_server_url(cluster["server"], f"{where}: cluster {body['cluster']!r} server")
    return document, str(name)
