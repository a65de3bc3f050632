"""The door's one error translation, pure: Kubernetes Status fields in, a typed error with the documented
exit code and retry advice out. Typed by `reason` (then `code`), never by the message text: every case
below carries a message that would mislead a text matcher."""

from __future__ import annotations

from decimal import Decimal

import pytest

from kubeaccel import errors as e
from kubeaccel.kube.status import Failure, RefusedBy, translate
from kubeaccel.kube.usage import exceeds, object_usage

MISLEADING = "already exists: exceeded quota: forbidden: not found"


def _failure(code: int, reason: str, refused_by: RefusedBy | None = None, **kw: object) -> Failure:
    return Failure(
        code=code,
        reason=reason,
        message=MISLEADING,
        verb="create",
        what="pod etl-driver",
        namespace="team-a",
        refused_by=refused_by,
        **kw,  # type: ignore[arg-type]
    )


@pytest.mark.parametrize(
    ("code", "reason", "refused_by", "cls", "exit_code", "retryable"),
    [
        (404, "NotFound", None, e.ApiNotFoundError, 3, False),
        (409, "AlreadyExists", None, e.AlreadyExistsError, 2, False),
        (409, "Conflict", None, e.ConflictError, 4, True),
        (422, "Invalid", None, e.InvalidError, 2, False),
        (400, "BadRequest", None, e.InvalidError, 2, False),
        (401, "Unauthorized", None, e.UnauthorizedError, 5, False),
        (403, "Forbidden", RefusedBy.RBAC, e.ForbiddenError, 5, False),
        (403, "Forbidden", RefusedBy.QUOTA, e.QuotaExceededError, 6, False),
        (403, "Forbidden", RefusedBy.ADMISSION, e.AdmissionRefusedError, 2, False),
        (429, "TooManyRequests", None, e.ApiUnavailableError, 4, True),
        (500, "InternalError", None, e.ApiUnavailableError, 4, True),
        (503, "ServiceUnavailable", None, e.ApiUnavailableError, 4, True),
        (504, "Timeout", None, e.ApiUnavailableError, 4, True),
        (504, "", None, e.ApiUnavailableError, 4, True),  # a proxy answered without a Status reason
        (404, "", None, e.ApiNotFoundError, 3, False),
        (405, "MethodNotAllowed", None, e.ApiError, 2, False),
    ],
)
def test_typed_from_reason_and_code(
    code: int, reason: str, refused_by: RefusedBy | None, cls: type[e.ApiError], exit_code: int, retryable: bool
) -> None:
    error = translate(_failure(code, reason, refused_by))
    assert type(error) is cls
    assert (error.exit_code, error.retryable, error.reason, error.code) == (exit_code, retryable, reason, code)
    assert error.hint or cls is e.ApiError
    assert "team-a" in error.message or cls is e.UnauthorizedError


def test_quota_errors_are_quota_errors_and_not_found_is_not_found() -> None:
    """Callers catch the family they care about, whatever raised it."""
    assert isinstance(translate(_failure(403, "Forbidden", RefusedBy.QUOTA)), e.QuotaError)
    assert isinstance(translate(_failure(404, "NotFound")), e.NotFoundError)
    assert isinstance(translate(_failure(422, "Invalid")), e.ConfigError)
    assert isinstance(translate(_failure(503, "ServiceUnavailable")), e.UnavailableError)


def test_invalid_lists_the_causes_and_messages_are_bounded() -> None:
    error = translate(_failure(422, "Invalid", causes=["spec.containers: Required value", "x" * 5000]))
    assert "spec.containers: Required value" in error.message
    assert len(error.message) < 2 * 2000 + 300
    huge = translate(Failure(code=500, reason="InternalError", message="y" * 10**6, verb="get", what="pods"))
    assert len(huge.message) < 2200


def test_object_usage_of_a_pod() -> None:
    pod = {
        "kind": "Pod",
        "spec": {
            "containers": [
                {"resources": {"requests": {"cpu": "500m", "memory": "1Gi"}, "limits": {"memory": "1Gi"}}},
                {"resources": {"limits": {"cpu": "1", "nec.com/ve": "2"}}},
            ]
        },
    }
    usage = object_usage(pod)
    assert usage["pods"] == 1 and usage["count/pods"] == 1
    assert usage["requests.cpu"] == Decimal("1.5")  # the second container's request defaults to its limit
    assert usage["requests.memory"] == 2**30
    assert usage["requests.nec.com/ve"] == 2
    assert exceeds({"requests.nec.com/ve": "4"}, {"requests.nec.com/ve": "3"}, usage)
    assert not exceeds({"requests.nec.com/ve": "4"}, {"requests.nec.com/ve": "2"}, usage)
    assert object_usage({"kind": "ConfigMap"}) == {"count/configmaps": 1, "configmaps": 1}
