"""The one translation of Kubernetes API failures into kubeaccel's API error family.

Pure: the fields of the API's `Status` object (code, reason, details) and what we were doing in,
one typed error out. The class comes from `reason` (falling back to `code` when a proxy answered
without one); the message is the API's own, quoted for the user but never parsed.

A 403 needs one more fact the Status does not carry: whether RBAC refused the request, the
ResourceQuota admission, or another admission check. The door finds that out with structured
questions (a SelfSubjectAccessReview, the namespace's quota usage) and passes it as `refused_by`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any, NamedTuple, TypeVar

from kubeaccel.errors import (
    AdmissionRefusedError,
    AlreadyExistsError,
    ApiError,
    ApiNotFoundError,
    ApiUnavailableError,
    ConflictError,
    ForbiddenError,
    InvalidError,
    QuotaExceededError,
    UnauthorizedError,
)

E = TypeVar("E", bound=ApiError)
MESSAGE_LIMIT = 2000  # an API message is quoted, bounded: a hostile server controls its length


class RefusedBy(Enum):
    """Who said no to a request answered with 403 Forbidden."""

    RBAC = "rbac"
    QUOTA = "quota"
    ADMISSION = "admission"


class Failure(NamedTuple):
    """What the door knows about a failed request: the Status fields and the request itself."""

    code: int
    reason: str
    message: str
    verb: str
    what: str  # "pod etl-driver", "resourcequotas"
    namespace: str | None = None
    details_kind: str = ""
    details_name: str = ""
    causes: Sequence[str] = ()
    refused_by: RefusedBy | None = None

    @classmethod
    def of_status(  # noqa: PLR0917 - the request's facts, in Failure's order
        cls,
        status: Mapping[str, Any],
        code: int,
        verb: str,
        what: str,
        namespace: str | None,
        refused_by: RefusedBy | None = None,
    ) -> Failure:
        """From the API's Status object as JSON (`kind: Status`), whichever client decoded it."""
        found = status.get("details")
        details: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        listed = details.get("causes")
        causes: list[Any] = listed if isinstance(listed, list) else []
        return cls(
            code=code,
            reason=str(status.get("reason") or ""),
            message=str(status.get("message") or ""),
            verb=verb,
            what=what,
            namespace=namespace,
            details_kind=str(details.get("kind") or ""),
            details_name=str(details.get("name") or ""),
            causes=[
                f"{c.get('field')}: {c.get('message')}" if c.get("field") else str(c.get("message"))
                for c in causes[:20]
                if isinstance(c, Mapping)
            ],
            refused_by=refused_by,
        )

    @property
    def where(self) -> str:
        return f" in namespace {self.namespace!r}" if self.namespace and self.namespace != "*" else ""


_RETRYABLE_REASONS = {"ServerTimeout", "Timeout", "TooManyRequests", "ServiceUnavailable", "InternalError", "Expired"}
_RETRYABLE_CODES = {429, 500, 502, 503, 504}


def bounded(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_LIMIT else text[:MESSAGE_LIMIT] + "..."


def _error(cls: type[E], f: Failure, message: str, hint: str | None) -> E:
    return cls(
        message,
        hint=hint,
        reason=f.reason,
        code=f.code,
        kind=f.details_kind,
        name=f.details_name,
        causes=[bounded(c) for c in f.causes[:20]],
    )


def translate(failure: Failure) -> ApiError:
    """The typed error for a failed request."""
    f = failure
    message = bounded(f.message) or f"HTTP {f.code}"
    reason = f.reason or _reason_for_code(f.code)
    if reason == "NotFound":
        hint = "check the name and the namespace (--namespace / the submission ID)"
        return _error(ApiNotFoundError, f, f"{f.what}{f.where} not found: {message}", hint)
    if reason == "AlreadyExists":
        hint = "pick another name, or delete the existing object first"
        return _error(AlreadyExistsError, f, f"cannot {f.verb} {f.what}{f.where}: it already exists", hint)
    if reason == "Conflict":
        text = f"cannot {f.verb} {f.what}{f.where}: it was changed meanwhile ({message})"
        return _error(ConflictError, f, text, "retry: the object will be read again")
    if reason in ("Invalid", "BadRequest", "RequestEntityTooLarge", "UnsupportedMediaType", "NotAcceptable"):
        detail = "; ".join(bounded(c) for c in f.causes[:20]) or message
        hint = "fix the confs or flags that produced the field named above"
        return _error(InvalidError, f, f"the API server rejected {f.what}{f.where}: {detail}", hint)
    if reason == "Unauthorized":
        hint = "refresh the kubeconfig's credentials (token, client certificate)"
        return _error(UnauthorizedError, f, f"the API server refused our credentials: {message}", hint)
    if reason == "Forbidden":
        return _forbidden(f, message)
    if reason in _RETRYABLE_REASONS or f.code in _RETRYABLE_CODES:
        text = f"cannot {f.verb} {f.what}{f.where}: the API server could not answer now ({message})"
        hint = "retry in a moment; if it persists, check the API server's health"
        return _error(ApiUnavailableError, f, text, hint)
    return _error(ApiError, f, f"cannot {f.verb} {f.what}{f.where}: {message} (HTTP {f.code})", None)


def _forbidden(f: Failure, message: str) -> ApiError:
    if f.refused_by is RefusedBy.QUOTA:
        return _error(
            QuotaExceededError,
            f,
            f"the namespace's quota has no room to {f.verb} {f.what}{f.where}: {message}",
            "lower the app's executors / cores / memory / devices, or wait for running apps to finish "
            "(kubeaccel tenant show NAMESPACE shows the quota's use)",
        )
    if f.refused_by is RefusedBy.ADMISSION:
        return _error(
            AdmissionRefusedError,
            f,
            f"an admission check refused to {f.verb} {f.what}{f.where}: {message}",
            "change what the message above names (e.g. the pod's security settings or a policy's rule)",
        )
    resource = f.what.split(maxsplit=1)[0]
    return _error(
        ForbiddenError,
        f,
        f"forbidden: cannot {f.verb} {f.what}{f.where}: {message}",
        f"ask a cluster admin for RBAC permission to {f.verb} {resource}"
        " (kubeaccel tenant create sets up a namespace with it)",
    )


def _reason_for_code(code: int) -> str:
    return {
        400: "BadRequest",
        401: "Unauthorized",
        403: "Forbidden",
        404: "NotFound",
        409: "Conflict",
        410: "Expired",
        422: "Invalid",
        429: "TooManyRequests",
        500: "InternalError",
        503: "ServiceUnavailable",
        504: "Timeout",
    }.get(code, "")


def unreachable(server: str, cause: object) -> ApiUnavailableError:
    """The transport failed: no answer, TLS refused, or an answer that is not the Kubernetes API's."""
    return ApiUnavailableError(
        f"cannot reach the Kubernetes API server {server}: {bounded(str(cause)) or type(cause).__name__}",
        hint="check that the cluster is up and that --context / --master / KUBECONFIG point at it "
        "(https vs http, host and port)",
    )
