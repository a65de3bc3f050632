"""The one door to the Kubernetes API: a thin wrapper over lightkube.

Connecting (kubeconfig, `--context`, a `k8s://URL` master that overrides the server) and the single
place where transport and API failures become `KubeaccelError`s: unreachable -> UnavailableError,
404 -> NotFoundError, 403 -> which verb on which resource was forbidden, 409 / 422 with the API's own
Status message. Callers never see an httpx or lightkube exception.
"""

from __future__ import annotations

import builtins
import contextlib
import gc
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import httpx2 as httpx
import msgspec
from lightkube import ApiError, Client, KubeConfig
from lightkube import ConfigError as LightkubeConfigError
from lightkube.codecs import from_dict
from lightkube.config.kubeconfig import SingleConfig
from lightkube.core.resource import Resource

from kubeaccel.errors import ConfigError, KubeaccelError, NotFoundError, UnavailableError

ALL_NAMESPACES = "*"
FIELD_MANAGER = "kubeaccel"
FORBIDDEN_EXIT_CODE = 5
_IDENTITY = {"Accept-Encoding": "identity"}
_DELETE_WORKERS = 16  # concurrent DELETEs: the apiserver's deletecollection works through one item at a time
R = TypeVar("R")


def _kubeconfig_path(explicit: str | Path | None) -> Path | None:
    if explicit:
        return Path(explicit).expanduser()
    env = os.environ.get("KUBECONFIG")
    if env:
        for part in env.split(os.pathsep):
            if part and Path(part).expanduser().is_file():
                return Path(part).expanduser()
        return Path(env.split(os.pathsep)[0]).expanduser()
    default = Path("~/.kube/config").expanduser()
    return default if default.is_file() else None


def load_config(
    *, kubeconfig: str | Path | None = None, context: str | None = None, server: str | None = None
) -> SingleConfig:
    """Select the context (explicit, else the kubeconfig's current one); `server` replaces its API URL."""
    path = _kubeconfig_path(kubeconfig)
    if path is None:
        if server:
            config = KubeConfig.from_server(server).get()
            assert config is not None
            return config
        raise ConfigError(
            "no kubeconfig found",
            hint="set KUBECONFIG, pass --kubeconfig, or give the API server with --master k8s://https://HOST:PORT",
        )
    if not path.is_file():
        raise ConfigError(f"kubeconfig {str(path)!r} does not exist", hint="check KUBECONFIG or --kubeconfig")
    try:
        full = KubeConfig.from_file(path)
    except Exception as exc:  # lightkube raises plain KeyError/yaml errors on malformed files
        raise ConfigError(
            f"kubeconfig {str(path)!r} cannot be read: {exc}", hint="check it with kubectl config view"
        ) from exc
    if context is not None and context not in full.contexts:
        known = ", ".join(sorted(full.contexts)) or "none"
        raise NotFoundError(f"context {context!r} is not in {path}", hint=f"known contexts: {known}")
    try:
        config = full.get(context)
    except LightkubeConfigError as exc:
        raise ConfigError(f"kubeconfig {str(path)!r}: {exc}", hint="pass --context NAME") from exc
    if config is None:
        raise ConfigError(f"kubeconfig {str(path)!r} has no current context", hint="pass --context NAME")
    if server:
        config = config._replace(cluster=msgspec.structs.replace(config.cluster, server=server))
    return config


@contextlib.contextmanager
def translate_errors(verb: str, resource: str, *, namespace: str | None = None, server: str = "") -> Iterator[None]:
    """Turn whatever the transport or the API raised into a KubeaccelError that says what failed."""
    where = f" in namespace {namespace!r}" if namespace and namespace != ALL_NAMESPACES else ""
    try:
        yield
    except ApiError as exc:
        status = exc.status
        code = status.code or exc.response.status_code
        message = status.message or str(exc)
        if code == 404:
            raise NotFoundError(
                f"{resource}{where} not found: {message}",
                hint="check the name and the namespace (--namespace / the submission ID)",
            ) from exc
        if code == 403:
            raise KubeaccelError(
                f"forbidden: cannot {verb} {resource}{where}: {message}",
                hint=f"ask a cluster admin for RBAC permission to {verb} {resource.split(maxsplit=1)[0]}"
                " (kubeaccel tenant create sets up a namespace with it)",
                exit_code=FORBIDDEN_EXIT_CODE,
            ) from exc
        if code == 401:
            raise UnavailableError(
                f"the API server refused our credentials: {message}", hint="refresh the kubeconfig's credentials"
            ) from exc
        if code == 409:
            raise KubeaccelError(
                f"cannot {verb} {resource}{where}: {message}",
                hint="it already exists or was changed meanwhile; pick another name or retry",
            ) from exc
        if code == 422:
            raise ConfigError(
                f"the API server rejected {resource}{where}: {message}",
                hint="fix the confs that produced the invalid field named above",
            ) from exc
        raise KubeaccelError(f"cannot {verb} {resource}{where}: {message} (HTTP {code})") from exc
    except (httpx.TransportError, OSError) as exc:
        raise UnavailableError(
            f"cannot reach the Kubernetes API server {server}: {exc}".replace("  ", " "),
            hint="check that the cluster is up and that --context / --master / KUBECONFIG point at it",
        ) from exc


class Kube:
    """A connected client plus the namespace its context names."""

    def __init__(self, config: SingleConfig, *, timeout: float = 10.0) -> None:
        self.config = config
        self.server = config.cluster.server
        self.context_namespace: str | None = config.context.namespace
        self.namespace = config.namespace
        try:
            self.client = Client(config, timeout=httpx.Timeout(timeout), field_manager=FIELD_MANAGER)
            # lightkube's overloads cannot express "any resource class R", so generic calls go untyped
            self._any: Any = self.client
        except (LightkubeConfigError, OSError) as exc:
            raise ConfigError(
                f"cannot use context {config.context_name!r}: {exc}",
                hint="check the kubeconfig's certificate and key paths",
            ) from exc

    @classmethod
    def connect(
        cls, *, kubeconfig: str | Path | None = None, context: str | None = None, server: str | None = None
    ) -> Kube:
        return cls(load_config(kubeconfig=kubeconfig, context=context, server=server))

    def _errors(
        self, verb: str, resource: str, namespace: str | None = None
    ) -> contextlib.AbstractContextManager[None]:
        return translate_errors(verb, resource, namespace=namespace, server=self.server)

    def create(self, manifest: Mapping[str, Any], namespace: str | None = None) -> dict[str, Any]:
        """POST the manifest as it is and return the created object as plain JSON.

        No round trip through lightkube's models: building a Pod model's decoder and encoder on first
        use costs more than the request itself, and the API server validates the manifest anyway.
        """
        res = _resource_class(manifest)
        namespace = namespace or manifest["metadata"].get("namespace")
        what = f"{manifest['kind'].lower()} {manifest['metadata'].get('name', '')}".strip()
        generic = self._any._client
        with self._errors("create", what, namespace):
            # lightkube prepares a POST only from a model, so take the collection URL of a list
            prepared = generic.prepare_request(
                "list", res=res, namespace=namespace, params={"fieldManager": FIELD_MANAGER}, headers=_IDENTITY
            )
            prepared.method = "POST"
            prepared.data = dict(manifest)
            response = generic.send(generic.build_adapter_request(prepared))
            generic.raise_for_status(response)
            created: dict[str, Any] = msgspec.json.decode(response.content)
        return created

    def apply(self, manifest: Mapping[str, Any], namespace: str | None = None) -> Any:
        """Server-side apply: the idempotent create-or-update."""
        obj = _typed(manifest)
        what = f"{manifest['kind'].lower()} {manifest['metadata']['name']}"
        with self._errors("apply", what, namespace):
            return self._any.apply(obj, namespace=namespace, force=True)

    def get(self, res: type[R], name: str, namespace: str | None = None) -> R:
        with self._errors("get", f"{res.__name__.lower()} {name}", namespace):
            found: R = self._any.get(res, name, namespace=namespace)
        return found

    def list(
        self,
        res: type[R],
        namespace: str | None = None,
        *,
        labels: Mapping[str, Any] | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> list[R]:
        with self._errors("list", _plural(res), namespace):
            return list(self._any.list(res, namespace=namespace, labels=labels, fields=fields))

    def delete_many(
        self, res: type[Resource], names: Iterable[tuple[str, str]], *, grace_period: int | None = None
    ) -> None:
        """Delete (namespace, name) pairs concurrently; already-gone objects are fine."""
        from concurrent.futures import ThreadPoolExecutor

        def one(item: tuple[str, str]) -> None:
            self.delete(res, item[1], namespace=item[0], grace_period=grace_period, missing_ok=True)

        from lightkube.models.meta_v1 import Status

        # msgspec builds a type's decoder on first use, and that step is not thread-safe: build the one
        # for the API's error Status here, before threads may need it at the same time
        Status.from_dict({"apiVersion": "v1", "kind": "Status"})
        with ThreadPoolExecutor(max_workers=_DELETE_WORKERS) as pool:
            builtins.list(pool.map(one, names))

    def list_raw(
        self,
        res: type[Resource],
        namespace: str | None = None,
        *,
        labels: Mapping[str, Any] | None = None,
        fields: Mapping[str, Any] | None = None,
    ) -> builtins.list[dict[str, Any]]:
        """Like `list`, but items stay plain JSON: decoding a thousand pods into models costs more than
        fetching them, and status/list/kill read only a few fields."""
        from lightkube.core.selector import build_selector

        params: dict[str, Any] = {
            "labelSelector": build_selector(dict(labels)) if labels else None,
            "fieldSelector": build_selector(dict(fields), for_fields=True) if fields else None,
        }
        generic = self._any._client
        items: builtins.list[dict[str, Any]] = []
        with self._errors("list", _plural(res), namespace):
            while True:
                # uncompressed: on a local or LAN apiserver gzip costs more CPU on both ends than it saves
                prepared = generic.prepare_request(
                    "list", res=res, namespace=namespace, params=dict(params), headers=_IDENTITY
                )
                request = generic.build_adapter_request(prepared)
                response = generic.send(request)
                generic.raise_for_status(response)
                with _collector_paused():
                    page = msgspec.json.decode(response.content)
                items += page.get("items") or []
                params["continue"] = (page.get("metadata") or {}).get("continue")
                if not params["continue"]:
                    return items

    def delete(
        self,
        res: type[Resource],
        name: str,
        namespace: str | None = None,
        *,
        grace_period: int | None = None,
        missing_ok: bool = False,
    ) -> None:
        try:
            with self._errors("delete", f"{res.__name__.lower()} {name}", namespace):
                self._any.delete(res, name, namespace=namespace, grace_period=grace_period)
        except NotFoundError:
            if not missing_ok:
                raise

    def logs(
        self,
        pod: str,
        namespace: str,
        *,
        follow: bool = False,
        container: str | None = None,
        tail_lines: int | None = None,
    ) -> Iterator[str]:
        with self._errors("get logs of", f"pod {pod}", namespace):
            yield from self.client.log(
                pod, namespace=namespace, follow=follow, container=container, tail_lines=tail_lines
            )

    def watch(
        self, res: type[R], namespace: str, *, fields: Mapping[str, Any] | None = None
    ) -> Iterator[tuple[str, R]]:
        with self._errors("watch", _plural(res), namespace):
            yield from self._any.watch(res, namespace=namespace, fields=fields)

    def close(self) -> None:
        self.client.close()


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while a big JSON document becomes Python objects.

    A 1,000-pod list is a few hundred thousand dicts and lists; every 700 new containers trigger a
    collection that walks them again, which made decoding 5 MB take 0.2 s instead of 0.04 s. The
    decoded tree has no cycles, so nothing is lost by collecting only afterwards.
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


def _resource_class(manifest: Mapping[str, Any]) -> type[Resource]:
    from lightkube.core.resource_registry import resource_registry

    try:
        res: type[Resource] = resource_registry.load(manifest["apiVersion"], manifest["kind"])
    except Exception as exc:  # an unknown kind is a bug in what we built
        raise ConfigError(f"cannot encode {manifest.get('kind')}: {exc}") from exc
    return res


def _typed(manifest: Mapping[str, Any]) -> Resource:
    try:
        return from_dict(dict(manifest))
    except Exception as exc:  # an unknown kind or a field of the wrong type is a bug in what we built
        raise ConfigError(f"cannot encode {manifest.get('kind')}: {exc}") from exc


def names(items: Iterable[Any]) -> list[str]:
    return [item.metadata.name for item in items]
