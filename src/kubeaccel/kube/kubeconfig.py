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
import re
from base64 import b64decode
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from kubeaccel.errors import ConfigError, NotFoundError
from kubeaccel.kube.names import label_problem
from kubeaccel.paths import read_user_text, user_path

KUBECONFIG_MAX_BYTES = 4 * 2**20
_USERINFO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/?#]*@")
# what makes a request carry an Authorization header: never sent to a plain http:// server
_AUTH_KEYS = ("token", "tokenFile", "username", "password", "exec", "auth-provider")
_B64_FIELDS = {
    "cluster": ("certificate-authority-data",),
    "user": ("client-certificate-data", "client-key-data"),
}
_FILE_FIELDS = {"cluster": ("certificate-authority",), "user": ("client-certificate", "client-key", "tokenFile")}


def shown(url: str) -> str:
    """A server URL as it may be printed: credentials in it (`https://user:pass@host`) never are."""
    return _USERINFO.sub(r"\1***@", url)


def check_server_url(url: str, what: str = "the API server URL") -> str:
    """An http(s) URL with a host and, if given, a numeric port in range; returns it unchanged."""
    hint = "use https://HOST:PORT, e.g. https://10.0.0.1:6443"
    shown_url = shown(url)
    if not url.isascii() or not url.isprintable() or any(ch.isspace() for ch in url):
        raise ConfigError(f"{what} {shown_url[:200]!r} has spaces, control or non-ASCII characters", hint=hint)
    try:
        parts = urlsplit(url)
        port = parts.port  # raises ValueError for a port that is not a number in 0..65535
    except ValueError as exc:
        raise ConfigError(f"{what} {shown_url[:200]!r} is not a valid URL: {exc}", hint=hint) from exc
    if parts.scheme not in ("http", "https"):
        raise ConfigError(f"{what} {shown_url[:200]!r} is not an http(s) URL", hint=hint)
    if not parts.hostname:
        raise ConfigError(f"{what} {shown_url[:200]!r} names no host", hint=hint)
    if port == 0:
        raise ConfigError(f"{what} {shown_url[:200]!r} has port 0", hint=hint)
    if parts.query or parts.fragment:
        raise ConfigError(f"{what} {shown_url[:200]!r} carries a query or fragment", hint=hint)
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


def kubeconfig_paths(explicit: str | Path | None) -> list[Path]:
    """The kubeconfig files to read, in kubectl's order: --kubeconfig alone; else every file named in
    $KUBECONFIG that exists (a missing one is skipped, as kubectl does; when none exists, the first, so
    reading it says so); else ~/.kube/config if it exists. Existence follows symlinks, so a link to a device
    is read, and refused by the reader as a device, not "does not exist"."""
    if explicit:
        return [user_path(explicit, "--kubeconfig")]
    env = os.environ.get("KUBECONFIG")
    if env:
        parts = [user_path(part, "KUBECONFIG") for part in env.split(os.pathsep) if part]
        found: list[Path] = []
        for part in parts:
            if part.exists() and part not in found:
                found.append(part)
        return found or parts[:1]
    default = user_path("~/.kube/config", "the default kubeconfig")
    return [default] if default.exists() else []


def kubeconfig_path(explicit: str | Path | None) -> Path | None:
    """The first kubeconfig file kubectl would read (see `kubeconfig_paths`), None when there is none."""
    paths = kubeconfig_paths(explicit)
    return paths[0] if paths else None


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
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply", hint="check it with kubectl config view") from None
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
        names = [e["name"] for e in entries]
        if len(set(names)) != len(names):  # kubectl refuses the file too
            twice = next(n for n in names if names.count(n) > 1)
            raise ConfigError(f"{where}: duplicate name {twice!r} in {section}", hint="rename or remove one of them")
    return document


def merged(paths: list[Path]) -> dict[str, Any]:
    """The kubeconfig files as kubectl merges them: for clusters, users and contexts the first file that
    names an entry wins it whole; `current-context` comes from the first file that sets it. Relative file
    paths in an entry are made absolute against the directory of the file the entry came from."""
    if len(paths) == 1:
        return read_kubeconfig(paths[0])
    result: dict[str, Any] = {"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []}
    for path in paths:
        document = read_kubeconfig(path)
        if not result.get("current-context") and document.get("current-context"):
            result["current-context"] = document["current-context"]
        for section, key in (("clusters", "cluster"), ("users", "user"), ("contexts", "context")):
            seen = {entry["name"] for entry in result[section]}
            for entry in document.get(section) or []:
                if entry["name"] in seen:
                    continue
                seen.add(entry["name"])
                body = entry.get(key)
                if isinstance(body, dict) and key in _FILE_FIELDS:
                    body = dict(body)
                    for field in _FILE_FIELDS[key]:
                        value = body.get(field)
                        if isinstance(value, str) and value and not value.startswith(("/", "~")):
                            body[field] = str(path.parent / value)
                result[section].append({**entry, key: body})
    return result


SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


def in_cluster(
    directory: Path = SERVICE_ACCOUNT_DIR, environ: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """The pod's own ServiceAccount as a kubeconfig document, as client-go's InClusterConfig reads it:
    KUBERNETES_SERVICE_HOST and _PORT set and a token file present, else None (not in a cluster). The
    token stays a `tokenFile`, re-read as the kubelet rotates it; a missing CA is a ConfigError naming it."""
    env = os.environ if environ is None else environ
    host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
    token = directory / "token"
    if not host or not port or not token.exists():
        return None
    ca = directory / "ca.crt"
    if not ca.exists():
        raise ConfigError(
            f"in-cluster config: the ServiceAccount's CA certificate {str(ca)!r} does not exist",
            hint="mount the ServiceAccount token volume whole (automountServiceAccountToken), or give a kubeconfig",
        )
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    context: dict[str, Any] = {"cluster": "in-cluster", "user": "in-cluster"}
    namespace_file = directory / "namespace"
    if namespace_file.exists():
        namespace = read_user_text(namespace_file, "in-cluster config: the ServiceAccount namespace").strip()
        context["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "in-cluster", "cluster": {"server": f"https://{host}:{port}", "certificate-authority": str(ca)}}
        ],
        "users": [{"name": "in-cluster", "user": {"tokenFile": str(token)}}],
        "contexts": [{"name": "in-cluster", "context": context}],
        "current-context": "in-cluster",
    }


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
    if cluster.get("insecure-skip-tls-verify") is True and (
        cluster.get("certificate-authority") or cluster.get("certificate-authority-data")
    ):
        raise ConfigError(  # kubectl's words: it refuses the combination too
            f"{where}: cluster {body['cluster']!r}: specifying a root certificates file with the insecure flag "
            "is not allowed",
            hint="remove insecure-skip-tls-verify (or the certificate-authority) from the cluster",
        )
    _url_credentials(document, cluster, body, str(name))
    _no_credentials_over_http(document, cluster, body, str(name))
    return document, str(name)


def _url_credentials(document: dict[str, Any], cluster: dict[str, Any], context: dict[str, Any], name: str) -> None:
    """`https://user:pass@host` as kubectl (Go's HTTP client) reads it: basic auth, unless the user has
    credentials of its own; the URL keeps no credentials, so no message can print them."""
    parts = urlsplit(cluster["server"])
    if "@" not in parts.netloc:
        return
    host = parts.netloc.rpartition("@")[2]
    cluster["server"] = urlunsplit((parts.scheme, host, parts.path, "", ""))
    user = _user_of(document, context)
    if not any(user.get(key) for key in _AUTH_KEYS) and parts.username is not None:
        user["username"] = unquote(parts.username)
        user["password"] = unquote(parts.password or "")


def _user_of(document: dict[str, Any], context: dict[str, Any]) -> dict[str, Any]:
    """The context's user body, one of its own (so no other context shares a change made to it)."""
    users = document.setdefault("users", [])
    own = f"kubeaccel:{context.get('user') or 'anonymous'}"
    body: dict[str, Any] = {}
    for entry in users:
        if entry["name"] == context.get("user") and isinstance(entry.get("user"), dict):
            body = dict(entry["user"])
    users.append({"name": own, "user": body})
    context["user"] = own
    return body


def _no_credentials_over_http(
    document: dict[str, Any], cluster: dict[str, Any], context: dict[str, Any], name: str
) -> None:
    """kubectl sends no Authorization header to a plain http:// server; neither do we, and we say so."""
    if urlsplit(cluster["server"]).scheme != "http" or not isinstance(context.get("user"), str):
        return
    user = _named(document, "users", "user", context["user"], "kubeconfig")
    dropped = [key for key in _AUTH_KEYS if user.get(key)]
    if not dropped:
        return
    import logging  # only here: the status path does not pay for it

    logging.getLogger(__name__).warning(
        "warning: context %r: the API server %s is plain http://, so its credentials (%s) are not sent; "
        "use https:// to authenticate",
        name, shown(cluster["server"]), ", ".join(dropped),
    )
    body = _user_of(document, context)
    for key in _AUTH_KEYS:
        body.pop(key, None)
