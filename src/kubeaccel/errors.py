"""The errors users see: two families, each saying what went wrong, how to fix it, and whether to retry.

1. **Input errors** (``ConfigError``, ``NotFoundError``): something the user gave is wrong or names
   nothing. Raised at the edge, before the first request, by the code that parsed the input.
2. **API errors** (``ApiError`` and its subclasses): the Kubernetes API refused a request. The door
   (``kubeaccel.kube.client``) types them from the API's ``Status`` (its ``reason``, ``code`` and
   ``details``), never from the message text.

Both carry ``exit_code`` (the documented exit status of the CLI) and ``retryable``: True when the same
request may succeed later unchanged (the server is unreachable, overloaded or timed out, or the object
changed meanwhile); False when something must be changed first. Library code raises; only the CLI exits.

Exit codes:
    2  bad input, or an object the API refused as invalid / refused by an admission check / already existing
    3  not found
    4  unavailable: the API server (or another service) cannot be reached, timed out, or asks to retry
    5  not allowed: RBAC forbids the request, or the credentials were refused
    6  the namespace's ResourceQuota cannot hold the request
"""

from __future__ import annotations

from collections.abc import Sequence

EXIT_INPUT = 2
EXIT_NOT_FOUND = 3
EXIT_UNAVAILABLE = 4
EXIT_FORBIDDEN = 5
EXIT_QUOTA = 6


class KubeaccelError(Exception):
    """A problem the user can fix. ``hint`` says how."""

    exit_code: int = EXIT_INPUT
    retryable: bool = False

    def __init__(self, message: str, *, hint: str | None = None, exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        if self.hint:
            return f"{self.message}\n  hint: {self.hint}"
        return self.message


class ConfigError(KubeaccelError):
    """A configuration file, option or conf is malformed."""


class NotFoundError(KubeaccelError):
    """Something the user named does not exist."""

    exit_code = EXIT_NOT_FOUND


class UnavailableError(KubeaccelError):
    """A service we depend on (kubelet, API server, NVML, an object store) cannot be reached."""

    exit_code = EXIT_UNAVAILABLE
    retryable = True


class QuotaError(KubeaccelError):
    """What the user asked for does not fit in the namespace's ResourceQuota."""

    exit_code = EXIT_QUOTA


# ---- the API family: one class per Kubernetes Status reason a caller may act on ----


class ApiError(KubeaccelError):
    """The Kubernetes API refused a request; ``reason`` and ``code`` are the API's own ``Status`` fields."""

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        reason: str = "",
        code: int = 0,
        kind: str = "",
        name: str = "",
        causes: Sequence[str] = (),
    ) -> None:
        super().__init__(message, hint=hint)
        self.reason = reason
        self.code = code
        self.kind = kind
        self.name = name
        self.causes = tuple(causes)


class ApiNotFoundError(ApiError, NotFoundError):
    """404 NotFound: the object (or its namespace) does not exist."""


class AlreadyExistsError(ApiError):
    """409 AlreadyExists: an object of that name exists; pick another name."""


class ConflictError(ApiError):
    """409 Conflict: the object changed between read and write; read it again and retry."""

    exit_code = EXIT_UNAVAILABLE
    retryable = True


class InvalidError(ApiError, ConfigError):
    """422 Invalid (or 400 BadRequest): the object or request is malformed; ``causes`` name the fields."""


class ForbiddenError(ApiError):
    """403 refused by RBAC: the user may not do this verb on this resource."""

    exit_code = EXIT_FORBIDDEN


class UnauthorizedError(ApiError):
    """401 Unauthorized: the credentials were refused (expired token, wrong certificate)."""

    exit_code = EXIT_FORBIDDEN


class QuotaExceededError(ApiError, QuotaError):
    """403 refused by the ResourceQuota admission: the namespace has no room for the object."""


class AdmissionRefusedError(ApiError):
    """403 refused by another admission check (Pod Security, a policy, a webhook): change the object."""


class ApiUnavailableError(ApiError, UnavailableError):
    """The server is unreachable, timed out, overloaded (429/503/504) or failed internally: retry later."""
