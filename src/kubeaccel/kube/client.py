"""The one door to the Kubernetes API: `Kube`, which builds each request once and speaks dicts.

Connecting (the kubeconfig files kubectl would read, merged as it merges them, or the pod's
ServiceAccount, checked at the edge by `kubeconfig.py`; `--context`; a `k8s://` master that replaces
the server) picks a transport: `rest.Transport` (http.client + ssl + json) when the kubeconfig asks for
nothing more, else `plugins.HttpxTransport` (exec and auth-provider plugins, impersonation, proxies),
imported only then. Every plain request (`_request`) goes through that transport, and its refusals
become kubeaccel's API errors there, typed from the API's Status (`status.translate`), never from its
text; a 403 asks a SelfSubjectAccessReview (and the quotas) through the same transport.

The typed verbs (`get`, `list`, `watch`, `apply`, `merge_patch`, creates of kinds outside
`rest.CREATABLE`) take lightkube resource classes: lightkube's client (made on first use) builds and
decodes them, and with the standard-library transport sends them through it (`plugins.bridged`, lightkube
holding no credentials); its failures are translated in one place (`_lightkube_errors`). Callers never see an httpx2 or
lightkube exception, and `kubeaccel spark submit/status/list/kill/logs` never import lightkube.
"""

from __future__ import annotations

import builtins
import codecs
import contextlib
import dataclasses
import gc
import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

from kubeaccel.errors import ConfigError, KubeaccelError, NotFoundError
from kubeaccel.kube import kubeconfig as kc
from kubeaccel.kube import rest
from kubeaccel.kube.status import Failure, RefusedBy, translate, unreachable

if TYPE_CHECKING:
    from lightkube import ApiError, Client
    from lightkube.config.kubeconfig import SingleConfig
    from lightkube.core.resource import Resource

    from kubeaccel.kube.plugins import HttpxTransport

ALL_NAMESPACES = "*"
FIELD_MANAGER = "kubeaccel"
_DELETE_WORKERS = 16  # concurrent DELETEs: the apiserver's deletecollection works through one item at a time
R = TypeVar("R")
T = TypeVar("T")
_REVIEWS = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"


@dataclasses.dataclass(frozen=True)
class Connection:
    """What `Kube.connect` resolved from the kubeconfig: the server, the context's namespace, the
    standard-library transport when the kubeconfig allows it, and how to load lightkube's view of it."""

    load: Callable[[], SingleConfig]
    server: str
    namespace: str | None
    fast: rest.Transport | None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """What a lightkube request can raise besides ApiError: the transport, and an answer that is not the
    API's (an http server on an https port, a proxy's HTML page) which lightkube fails to decode."""
    import httpx2

    return (httpx2.HTTPError, httpx2.InvalidURL, OSError, KeyError, ValueError)


def load_config(
    *, kubeconfig: str | Path | None = None, context: str | None = None, server: str | None = None
) -> SingleConfig:
    """Select the context (explicit, else the kubeconfig's current one); `server` replaces its API URL."""
    document, name, path = _selected(kubeconfig, context, server)
    return _single_config(document, name, path)


def _selected(
    kubeconfig: str | Path | None, context: str | None, server: str | None
) -> tuple[dict[str, Any], str, Path]:
    """The checked kubeconfig document (the files kubectl would read, merged as it merges them; else the
    pod's ServiceAccount; else a bare --master), its chosen context and where relative paths start from."""
    paths = kc.kubeconfig_paths(kubeconfig)
    if not paths:
        if (document := kc.in_cluster(kc.SERVICE_ACCOUNT_DIR)) is not None:
            path = kc.SERVICE_ACCOUNT_DIR / "kubeconfig"
            document, name = kc.select(document, path, context=context, server=server)
            return document, name, path
        if server:
            return kc.server_only(server), "master", Path.cwd() / "kubeconfig"
        raise ConfigError(
            "no kubeconfig found",
            hint="set KUBECONFIG, pass --kubeconfig, or give the API server with --master k8s://https://HOST:PORT",
        )
    path = paths[0] if len(paths) == 1 else Path(os.pathsep.join(str(p) for p in paths))
    document, name = kc.select(kc.merged(paths), path, context=context, server=server)
    return document, name, paths[0]


def _single_config(document: dict[str, Any], name: str, path: Path) -> SingleConfig:
    """lightkube's view of a context `kubeconfig.select` checked, with no key material on disk: lightkube
    writes each `*-data` field to a temporary file; here they become anonymous memory files first."""
    from lightkube import ConfigError as LightkubeConfigError
    from lightkube import KubeConfig

    try:
        config = KubeConfig.from_dict(_in_memory(document, name), fname=path).get(name)
    except (LightkubeConfigError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"kubeconfig {str(path)!r}: {exc}", hint="check it with kubectl config view") from exc
    if config is None:
        raise ConfigError(f"kubeconfig {str(path)!r} has no context {name!r}", hint="pass --context NAME")
    return config


def _without_credentials(document: dict[str, Any], name: str) -> dict[str, Any]:
    """The document with the context's user emptied: for lightkube when the stdlib transport sends for it."""
    import copy

    document = copy.deepcopy(document)
    context = kc.context_parts(document, name)[0]
    document.setdefault("users", []).append({"name": "kubeaccel:none", "user": {}})
    context["user"] = "kubeaccel:none"
    return document


_MEMORY_FILES: list[int] = []  # descriptors of the memory files lightkube's configs name: kept for the process


def _in_memory(document: dict[str, Any], name: str) -> dict[str, Any]:
    """The document with the chosen context's certificate and key data moved into memory files
    (`/proc/self/fd/N`, Linux's memfd) that lightkube reads as paths. Elsewhere, unchanged."""
    if not hasattr(os, "memfd_create"):
        return document
    import base64
    import copy

    document = copy.deepcopy(document)
    _, cluster, user = kc.context_parts(document, name)
    fields = (
        (cluster, "certificate-authority"),
        (user, "client-certificate"),
        (user, "client-key"),
    )
    for body, field in fields:
        data = body.pop(f"{field}-data", None)
        if data:
            fd = os.memfd_create("kubeaccel-" + field, os.MFD_CLOEXEC)
            os.write(fd, base64.b64decode(data))
            _MEMORY_FILES.append(fd)
            body[field] = f"/proc/self/fd/{fd}"
    return document


def _translate_api(
    exc: ApiError, verb: str, what: str, namespace: str | None, refused_by: RefusedBy | None
) -> KubeaccelError:
    code = int(exc.status.code or exc.response.status_code)
    return translate(Failure.of_status(exc.status.to_dict(), code, verb, what, namespace, refused_by))


@contextlib.contextmanager
def translate_errors(verb: str, what: str, *, namespace: str | None = None, server: str = "") -> Iterator[None]:
    """The same translation as `Kube`'s requests, for code that calls lightkube itself (the DRA daemon's
    async client, a Lease compare-and-swap): API errors typed by their Status, transport errors unreachable."""
    from lightkube import ApiError

    try:
        yield
    except ApiError as exc:
        raise _translate_api(exc, verb, what, namespace, None) from exc
    except _transport_errors() as exc:
        raise unreachable(server, exc) from exc


class Kube:
    """A connected client plus the namespace its context names.

    `Kube.connect(...)` reads the kubeconfig and picks the transport; `Kube(config)` takes lightkube's
    config of a context and connects through the second transport at once. Both are the one `__init__`.
    """

    def __init__(self, config: SingleConfig | Connection, *, timeout: float = 10.0) -> None:
        """The one constructor: a `Connection` that `connect` resolved, or lightkube's config of a context
        (connected at once through the second transport)."""
        self._timeout = timeout
        self._lock = threading.Lock()
        self._client: Client | None = None
        self._config: SingleConfig | None = None
        if isinstance(config, Connection):
            self._load = config.load
            self._fast = config.fast
            self.server = config.server
            self.context_namespace = config.namespace
        else:
            self._config = config
            self._load = lambda: config
            self._fast = None
            self.server = config.cluster.server
            self.context_namespace = config.context.namespace
        self.namespace = self.context_namespace or "default"
        self._plugin: HttpxTransport | None = None
        if self._fast is None:
            _ = self._transport  # a certificate that does not load is a ConfigError here, not at the first request

    @classmethod
    def connect(
        cls,
        *,
        kubeconfig: str | Path | None = None,
        context: str | None = None,
        server: str | None = None,
        timeout: float = 10.0,
    ) -> Kube:
        document, name, path = _selected(kubeconfig, context, server)
        endpoint = rest.endpoint(document, name, path)
        parts = kc.context_parts(document, name)
        namespace = parts[0].get("namespace")
        return cls(
            Connection(
                # with the standard-library transport, which authenticates, lightkube gets no credentials
                load=lambda: _single_config(_without_credentials(document, name) if endpoint else document, name,
                                            path),
                server=endpoint.server if endpoint is not None else str(parts[1]["server"]).rstrip("/"),
                namespace=str(namespace) if namespace else None,
                fast=rest.Transport(endpoint, name, timeout) if endpoint is not None else None,
            ),
            timeout=timeout,
        )

    @property
    def _transport(self) -> rest.Transport | HttpxTransport:
        """Where every plain request goes: the standard-library transport when the kubeconfig allows it,
        else httpx with lightkube's credential plugins (made on first use, thread-safe)."""
        if self._fast is not None:
            return self._fast
        config = self.config
        with self._lock:
            if self._plugin is None:
                from kubeaccel.kube.plugins import HttpxTransport

                self._plugin = HttpxTransport(config, self._timeout)
            return self._plugin

    @property
    def config(self) -> SingleConfig:
        with self._lock:
            if self._config is None:
                self._config = self._load()
            return self._config

    @property
    def client(self) -> Client:
        """lightkube's client, made on first use (thread-safe)."""
        config = self.config
        with self._lock:
            if self._client is None:
                self._client = self._make_client(config)
            return self._client

    def _make_client(self, config: SingleConfig) -> Client:
        import httpx2
        from lightkube import Client
        from lightkube import ConfigError as LightkubeConfigError
        from lightkube.models.meta_v1 import Status

        from kubeaccel.kube.plugins import bridged

        # with the standard-library transport, lightkube only builds and decodes: its requests go through it
        transport = bridged(self._fast) if self._fast is not None else None
        try:
            client = Client(
                config, timeout=httpx2.Timeout(self._timeout), field_manager=FIELD_MANAGER, transport=transport
            )
        except (LightkubeConfigError, OSError, ValueError, TypeError, AssertionError, httpx2.InvalidURL) as exc:
            raise ConfigError(
                f"cannot use context {config.context_name!r}: {exc}",
                hint="check the kubeconfig's certificate and key paths",
            ) from exc
        # msgspec builds a type's decoder on first use, and that is not thread-safe: build the error
        # Status's now, before requests from several threads (delete_many, kill) can fail at once
        Status.from_dict({"apiVersion": "v1", "kind": "Status"})
        return client

    @property
    def _any(self) -> Any:
        """lightkube's overloads cannot express "any resource class R", so generic calls go untyped."""
        return self.client

    # ---- the one error translation ----

    def _call(
        self,
        verb: str,
        what: str,
        namespace: str | None,
        call: Callable[[], T],
        *,
        res: type[Resource] | None = None,
        name: str = "",
        manifest: Mapping[str, Any] | None = None,
    ) -> T:
        with self._lightkube_errors(verb, what, namespace, res, name, manifest):
            return call()

    def _stream(
        self, verb: str, what: str, namespace: str | None, items: Callable[[], Iterable[T]], res: type[Resource]
    ) -> Iterator[T]:
        with self._lightkube_errors(verb, what, namespace, res, "", None):
            yield from items()

    @contextlib.contextmanager
    def _lightkube_errors(  # noqa: PLR0917 - the request's facts, as _call has them
        self,
        verb: str,
        what: str,
        namespace: str | None,
        res: type[Resource] | None,
        name: str,
        manifest: Mapping[str, Any] | None,
    ) -> Iterator[None]:
        """The one place a typed (lightkube) request's failures become kubeaccel's typed errors."""
        import httpx2
        from lightkube import ApiError
        from lightkube import ConfigError as LightkubeConfigError

        try:
            yield
        except ApiError as exc:
            raise self._translated(exc, verb, what, namespace, res, name, manifest) from exc
        except LightkubeConfigError as exc:  # credentials read per request (a tokenFile gone meanwhile)
            raise _credentials_error(exc) from exc
        except httpx2.HTTPStatusError as exc:  # a watch refused before its stream (429 under load): by its code
            failure = Failure.of_status({}, exc.response.status_code, verb, what, namespace)
            raise translate(failure) from exc
        except _transport_errors() as exc:
            raise unreachable(self.server, exc) from exc

    def _translated(  # noqa: PLR0917 - the request's facts, in the order _call has them
        self,
        exc: ApiError,
        verb: str,
        what: str,
        namespace: str | None,
        res: type[Resource] | None,
        name: str,
        manifest: Mapping[str, Any] | None,
    ) -> KubeaccelError:
        code = int(exc.status.code or exc.response.status_code)
        refused_by = None
        if code == 403 and res is not None:
            from lightkube.core.resource import api_info

            info = api_info(res)
            refused_by = self._refused_by(verb, info.resource.group, info.plural, namespace, name, manifest)
        return _translate_api(exc, verb, what, namespace, refused_by)

    def _refusal(  # noqa: PLR0917 - the request's facts, as _request has them
        self,
        exc: rest.HttpError,
        verb: str,
        what: str,
        namespace: str | None,
        res: rest.Collection | None,
        name: str,
        manifest: Mapping[str, Any] | None,
    ) -> KubeaccelError:
        """The typed error of a refused request; a 403 asks who refused, through the same transport."""
        refused_by = None
        if exc.code == 403 and res is not None:
            refused_by = self._refused_by(verb, res.group, res.plural, namespace, name, manifest)
        return translate(Failure.of_status(exc.status, exc.code, verb, what, namespace, refused_by))

    def _refused_by(  # noqa: PLR0917 - the refused request's facts
        self,
        verb: str,
        group: str,
        plural: str,
        namespace: str | None,
        name: str,
        manifest: Mapping[str, Any] | None,
    ) -> RefusedBy:
        """Who answered 403: ask the authorizer (RBAC) itself, then the quota's numbers. No message text."""
        attributes = {"verb": verb, "group": group, "resource": plural}
        if namespace and namespace != ALL_NAMESPACES:
            attributes["namespace"] = namespace
        if name:
            attributes["name"] = name
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attributes},
        }
        try:
            answer = self._transport.request("POST", _REVIEWS, None, json.dumps(review).encode())
            allowed = bool(isinstance(answer, dict) and (answer.get("status") or {}).get("allowed"))
        except (rest.HttpError, KubeaccelError):
            return RefusedBy.RBAC  # cannot ask: report it as the permission problem it most often is
        if not allowed:
            return RefusedBy.RBAC
        if verb == "create" and manifest is not None and namespace and self._quota_full(namespace, manifest):
            return RefusedBy.QUOTA
        return RefusedBy.ADMISSION

    def _quota_full(self, namespace: str, manifest: Mapping[str, Any]) -> bool:
        from kubeaccel.kube.usage import exceeds, object_usage

        try:
            answer = self._transport.request("GET", rest.RESOURCEQUOTAS.path(namespace))
        except (rest.HttpError, KubeaccelError):
            return False
        usage = object_usage(manifest)
        quotas = answer.get("items") if isinstance(answer, dict) else None
        return any(
            exceeds(dict((q.get("status") or {}).get("hard") or {}), dict((q.get("status") or {}).get("used") or {}),
                    usage)
            for q in quotas or []
            if isinstance(q, dict)
        )

    # ---- requests ----

    def create(self, manifest: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Create the object and return it as stored (plain JSON)."""
        return self._write("create", manifest, namespace)

    def replace(self, manifest: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """Replace the object with `manifest` and return it as stored. With `metadata.resourceVersion` set this
        is a compare-and-swap: ConflictError when the object changed since that version."""
        return self._write("update", manifest, namespace)

    def _write(self, verb: str, manifest: Mapping[str, Any], namespace: str | None) -> dict[str, Any]:
        """POST (create) or PUT (update) on the fast lane for the kinds it writes, else through lightkube."""
        namespace = namespace or manifest["metadata"].get("namespace")
        name = str(manifest["metadata"].get("name", ""))
        what = f"{manifest['kind'].lower()} {name}".strip()
        collection = rest.CREATABLE.get((str(manifest.get("apiVersion")), str(manifest.get("kind"))))
        payload = _json(manifest) if collection is not None and namespace else None
        if collection is not None and payload is not None:
            query = {"fieldManager": FIELD_MANAGER}
            if verb == "create":
                method, path = "POST", collection.path(namespace)
            else:
                method, path = "PUT", collection.path(namespace, name)
            stored = self._request(verb, what, namespace, method, path, query, payload, res=collection,
                                   name="" if verb == "create" else name, manifest=manifest)
            return stored if isinstance(stored, dict) else {}
        obj = _typed(manifest)
        call = self._any.create if verb == "create" else self._any.replace
        stored = self._call(
            verb,
            what,
            namespace,
            lambda: call(obj, namespace=namespace),
            res=type(obj),
            name="" if verb == "create" else name,
            manifest=manifest,
        )
        result: dict[str, Any] = stored.to_dict()
        return result

    def apply(self, manifest: Mapping[str, Any], namespace: str | None = None) -> Any:
        """Server-side apply: the idempotent create-or-update."""
        obj = _typed(manifest)
        name = str(manifest["metadata"]["name"])
        what = f"{manifest['kind'].lower()} {name}"
        return self._call(
            "patch",
            what,
            namespace,
            lambda: self._any.apply(obj, namespace=namespace, force=True),
            res=type(obj),
            name=name,
            manifest=manifest,
        )

    def get(self, res: type[R], name: str, namespace: str | None = None) -> R:
        found: R = self._call(
            "get",
            f"{res.__name__.lower()} {name}",
            namespace,
            lambda: self._any.get(res, name, namespace=namespace),
            res=res,  # type: ignore[arg-type]
            name=name,
        )
        return found

    def get_raw(self, res: rest.Collection, name: str, namespace: str | None = None) -> dict[str, Any]:
        """One object as plain JSON (NotFoundError when there is none), on the fast lane when there is one."""
        found = self._request("get", f"{res.kind} {name}", namespace, "GET", res.path(namespace, name), {}, res=res,
                              name=name)
        return found if isinstance(found, dict) else {}

    def list(
        self,
        res: type[R],
        namespace: str | None = None,
        *,
        labels: Mapping[str, Any] | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> builtins.list[R]:
        with _collector_paused():
            return builtins.list(
                self._stream(
                    "list",
                    _plural(res),
                    namespace,
                    lambda: self._any.list(res, namespace=namespace, labels=labels, fields=fields),
                    res,  # type: ignore[arg-type]
                )
            )

    def list_raw(
        self,
        res: type[Resource] | rest.Collection,
        namespace: str | None = None,
        *,
        labels: Mapping[str, Any] | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Like `list`, as plain JSON-like dicts (status/list/kill read only a few fields).

        A `rest.Collection` takes the fast lane when there is one and the selectors are plain equalities."""
        if isinstance(res, rest.Collection):
            plain = all(isinstance(v, str) for v in [*(labels or {}).values(), *(fields or {}).values()])
            if plain:
                query = {
                    key: ",".join(f"{k}={v}" for k, v in selector.items())
                    for key, selector in (("labelSelector", labels), ("fieldSelector", fields))
                    if selector
                }
                answer = self._request("list", res.plural, namespace, "GET", res.path(namespace), query, res=res)
                found = answer.get("items") if isinstance(answer, dict) else None
                return found if isinstance(found, builtins.list) else []
            res = res.lightkube()
        cls: Any = res
        items: builtins.list[Any] = self.list(cls, namespace, labels=labels, fields=fields)
        with _collector_paused():
            return [item.to_dict() for item in items]

    def serves(self, group_version: str, plural: str | None = None) -> bool | None:
        """Whether the API server serves ``group/version`` (and in it the resource ``plural``), by discovery;
        None when the answer is not discovery's (the caller then learns it from the first write)."""
        if "/" not in group_version:
            return True  # the core group
        answer = self._request("get", "API groups", None, "GET", "/apis", {})
        if not isinstance(answer, dict):
            return None
        group, _, version = group_version.partition("/")
        listed = any(
            entry.get("name") == group and any(v.get("version") == version for v in entry.get("versions") or [])
            for entry in answer.get("groups") or []
        )
        if not listed or plural is None:
            return listed
        # the group is served, but one of its CRDs may be gone (or going): ask the version for its resources
        resources = self._request("get", f"API {group_version}", None, "GET", f"/apis/{group_version}", {})
        if not isinstance(resources, dict):
            return None
        return any(r.get("name") == plural for r in resources.get("resources") or [])

    def _request(  # noqa: PLR0917 - the request's facts, as _call has them
        self,
        verb: str,
        what: str,
        namespace: str | None,
        method: str,
        path: str,
        query: Mapping[str, str],
        payload: bytes | None = None,
        *,
        res: rest.Collection | None = None,
        name: str = "",
        manifest: Mapping[str, Any] | None = None,
    ) -> Any:
        """One request, built once (method, path, query, JSON body), through the transport; the one place
        where its refusals become kubeaccel's typed errors (a 403 asks who refused)."""
        try:
            with _collector_paused():
                return self._transport.request(method, path, query, payload)
        except rest.HttpError as exc:
            raise self._refusal(exc, verb, what, namespace, res, name, manifest) from exc

    def delete(
        self,
        res: type[Resource] | rest.Collection,
        name: str,
        namespace: str | None = None,
        *,
        grace_period: int | None = None,
        missing_ok: bool = False,
    ) -> None:
        try:
            if isinstance(res, rest.Collection):
                query = {"gracePeriodSeconds": str(grace_period)} if grace_period is not None else {}
                path = res.path(namespace, name)
                self._request("delete", f"{res.kind} {name}", namespace, "DELETE", path, query, res=res, name=name)
                return
            cls: Any = res
            self._call(
                "delete",
                f"{cls.__name__.lower()} {name}",
                namespace,
                lambda: self._any.delete(cls, name, namespace=namespace, grace_period=grace_period),
                res=cls,
                name=name,
            )
        except NotFoundError:
            if not missing_ok:
                raise

    def delete_many(
        self, res: type[Resource], names: Iterable[tuple[str, str]], *, grace_period: int | None = None
    ) -> None:
        """Delete (namespace, name) pairs concurrently; already-gone objects are fine."""
        from concurrent.futures import ThreadPoolExecutor

        def one(item: tuple[str, str]) -> None:
            self.delete(res, item[1], namespace=item[0], grace_period=grace_period, missing_ok=True)

        with ThreadPoolExecutor(max_workers=_DELETE_WORKERS) as pool:
            builtins.list(pool.map(one, names))

    def logs(
        self,
        pod: str,
        namespace: str,
        *,
        follow: bool = False,
        container: str | None = None,
        tail_lines: int | None = None,
    ) -> Iterator[str]:
        """The pod's log as text, as it arrives (with `follow`, until the container ends)."""
        query = {"follow": "true"} if follow else {}
        query |= {"container": container} if container else {}
        query |= {"tailLines": str(tail_lines)} if tail_lines is not None else {}
        path = rest.PODS.path(namespace, pod) + "/log"
        return self._log_lines(pod, namespace, path, query, follow)

    def _log_lines(self, pod: str, namespace: str, path: str, query: dict[str, str], follow: bool) -> Iterator[str]:
        chunks = self._transport.stream(
            path,
            query,
            idle_timeout=None if follow else self._timeout,
            deadline=None if follow else self._timeout * rest.DEADLINE_FACTOR,
        )
        try:
            yield from _decoded(_lines(chunks, MAX_LOG_LINE_BYTES))  # whole lines, as lightkube yields
        except rest.HttpError as exc:
            raise self._refusal(exc, "get", f"logs of pod {pod}", namespace, rest.PODS, pod, None) from exc

    def follow(
        self, res: rest.Collection, name: str, namespace: str, *, since: str, window: float
    ) -> Iterator[dict[str, Any] | None]:
        """The object's states after resourceVersion `since`, as they happen, for up to `window` seconds;
        None when it is deleted (and then nothing more). Event-driven, as `kubectl get -w` and spark-submit's
        own wait are: a watch (one request per window, not one a second); where the watch is refused, a
        GET a second. An ended window (or a watch the server expired) just ends the iteration: read the
        object again and follow it anew."""
        what = f"{res.kind} {name}"
        query = {
            "watch": "true",
            "fieldSelector": f"metadata.name={name}",
            "resourceVersion": since,
            "timeoutSeconds": str(max(1, int(window))),
            "allowWatchBookmarks": "true",
        }
        events = self._transport.stream(res.path(namespace), query, idle_timeout=window + self._timeout)
        try:
            for event in _watch_events(events, self.server):
                kind, obj = event.get("type"), event.get("object")
                if not isinstance(obj, dict):
                    raise unreachable(self.server, f"a watch event without an object: {str(event)[:200]!r}")
                if kind in ("ADDED", "MODIFIED"):
                    yield obj
                elif kind == "DELETED":
                    yield None
                    return
                elif kind == "ERROR":
                    code = int(obj.get("code") or 500)
                    if code in (410, 504):  # history expired, or the server ended the watch: read anew
                        return
                    raise translate(Failure.of_status(obj, code, "watch", what, namespace))
            return
        except rest.HttpError as exc:
            if exc.code != 403:
                raise self._refusal(exc, "watch", what, namespace, None, name, None) from exc
        yield from self._poll(res, name, namespace, since=since, window=window)

    def proxy_get(self, namespace: str, pod: str, port: int, path: str, *, limit: int) -> bytes:
        """GET `path` from a pod's `port` through the API server's pod proxy (RBAC: get on pods/proxy), so no
        node access is needed; at most `limit` bytes within the door's timeout, else ApiUnavailableError."""
        what = f"pod {pod} port {port}"
        url = f"{rest.PODS.path(namespace)}/{quote(pod, safe='')}:{int(port)}/proxy/{path.lstrip('/')}"
        try:
            if isinstance(self._transport, rest.Transport):
                return self._transport.get_bytes(url, limit)  # kept-alive: no TLS handshake per pod
            body = bytearray()
            deadline = time.monotonic() + self._timeout
            for chunk in self._transport.stream(url, {}, idle_timeout=self._timeout, deadline=self._timeout):
                body += chunk
                if len(body) > limit or time.monotonic() > deadline:
                    why = f"more than {limit} bytes" if len(body) > limit else f"no end after {self._timeout:g} s"
                    raise unreachable(self.server, f"{what} answered {why}")
        except rest.TooLargeError as exc:
            raise unreachable(self.server, f"{what} answered more than {exc.limit} bytes") from exc
        except rest.HttpError as exc:
            raise self._refusal(exc, "get", what, namespace, None, pod, None) from exc
        return bytes(body)

    def _poll(
        self, res: rest.Collection, name: str, namespace: str, *, since: str, window: float
    ) -> Iterator[dict[str, Any] | None]:
        end = time.monotonic() + window
        seen = since
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            try:
                obj = self.get_raw(res, name, namespace)
            except NotFoundError:
                yield None
                return
            version = str((obj.get("metadata") or {}).get("resourceVersion") or "")
            if version != seen:
                seen = version
                yield obj

    def watch(
        self,
        res: type[R],
        namespace: str,
        *,
        fields: Mapping[str, Any] | None = None,
        labels: Mapping[str, Any] | None = None,
        resource_version: str | None = None,
    ) -> Iterator[tuple[str, R]]:
        """(event type, object) as they happen; lightkube reconnects where the server ends a watch."""
        return self._stream(
            "watch",
            _plural(res),
            namespace,
            lambda: self._any.watch(
                res, namespace=namespace, fields=fields, labels=labels, resource_version=resource_version
            ),
            res,  # type: ignore[arg-type]
        )

    def merge_patch(self, res: type[Any], name: str, patch: Mapping[str, Any], namespace: str | None = None) -> Any:
        """A JSON merge patch (RFC 7386); `res` may be a subresource class, e.g. a custom resource's `.Status`."""
        from lightkube.types import PatchType

        return self._call(
            "patch",
            f"{_plural(res)[:-1]} {name}",
            namespace,
            lambda: self._any.patch(res, name, dict(patch), namespace=namespace, patch_type=PatchType.MERGE),
            res=res,
            name=name,
        )

    def close(self) -> None:
        for transport in (self._fast, self._plugin, self._client):
            if transport is not None:
                with contextlib.suppress(Exception):
                    transport.close()


MAX_LOG_LINE_BYTES = 4 << 20  # a longer log line comes in pieces of this size, without a newline between them
MAX_WATCH_EVENT_BYTES = 16 << 20  # an event carries one object; etcd stores at most ~1.5 MiB of it


def _lines(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    """The lines of a byte stream however its chunks cut them, each ending in a newline (the last one given
    one); a line longer than `limit` comes in pieces of `limit` bytes, without a newline, rather than
    being held whole. Each chunk is searched once, however long the line it continues."""
    pending = bytearray()
    for chunk in chunks:
        scan = len(pending)
        pending += chunk
        while (end := pending.find(b"\n", scan)) >= 0:
            yield bytes(pending[: end + 1])
            del pending[: end + 1]
            scan = 0
        while len(pending) > limit:
            yield bytes(pending[:limit])
            del pending[:limit]
    if pending:
        yield bytes(pending) + b"\n"


def _decoded(chunks: Iterable[bytes]) -> Iterator[str]:
    """UTF-8 text of a byte stream, a character that straddles two chunks kept whole."""
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    for chunk in chunks:
        yield decoder.decode(chunk)
    if tail := decoder.decode(b"", final=True):
        yield tail


def _watch_events(chunks: Iterable[bytes], server: str) -> Iterator[dict[str, Any]]:
    """The JSON events of a watch stream, one per line (bounded in size)."""
    for line in _lines(chunks, MAX_WATCH_EVENT_BYTES):
        if not line.endswith(b"\n"):
            raise unreachable(server, f"a watch event larger than {MAX_WATCH_EVENT_BYTES} bytes")
        if line.strip():
            yield _event(line, server)


def _event(line: bytes, server: str) -> dict[str, Any]:
    try:
        event = json.loads(line)
    except (ValueError, UnicodeDecodeError) as exc:
        raise unreachable(server, f"a watch event that is not JSON ({exc})") from exc
    if not isinstance(event, dict):
        raise unreachable(server, f"a watch event that is not an object: {line[:200]!r}")
    return event


def _credentials_error(exc: Exception) -> ConfigError:
    return ConfigError(f"the kubeconfig's credentials cannot be used: {exc}",
                       hint="check the user's tokenFile, certificate and key (kubectl config view)")


def _json(manifest: Mapping[str, Any]) -> bytes | None:
    """The manifest as a request body, or None when it is not plain JSON (lightkube's models then say why)."""
    try:
        return json.dumps(manifest).encode()
    except (TypeError, ValueError):
        return None


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a big list becomes Python objects.

    A 1,000-pod list is a few hundred thousand new objects; every 700 new containers trigger a
    collection that walks them all again, which doubled the time `status` over 1,000 apps takes
    (0.59 s -> 0.29 s measured). The decoded tree has no cycles, so nothing is lost by collecting later.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _plural(res: type[Any]) -> str:
    return res.__name__.lower() + "s"


def _typed(manifest: Mapping[str, Any]) -> Any:
    """The lightkube model of a manifest we built; a kind or field type it cannot take is a bug, said plainly."""
    from lightkube import codecs

    try:
        return codecs.from_dict(dict(manifest))
    except Exception as exc:  # lightkube raises LoadResourceError or msgspec's ValidationError
        raise ConfigError(f"cannot encode {manifest.get('kind')}: {exc}") from exc
