"""The custom resources as lightkube resource classes, for the kube door's watch, patch and delete."""

from __future__ import annotations

import functools
from typing import Any

from kubeaccel.operator.api import APP_KIND, GROUP, SCHEDULED_KIND, VERSION


@functools.cache
def apps() -> Any:
    """SparkApplication (its `.Status` is the status subresource)."""
    from lightkube.generic_resource import create_namespaced_resource

    return create_namespaced_resource(GROUP, VERSION, APP_KIND, "sparkapplications")


@functools.cache
def scheduled() -> Any:
    from lightkube.generic_resource import create_namespaced_resource

    return create_namespaced_resource(GROUP, VERSION, SCHEDULED_KIND, "scheduledsparkapplications")
