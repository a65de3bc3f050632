"""Submission IDs (`namespace:driver-pod`) and the glob targets management commands accept.

spark-submit's form: `--status ns:pod`, and the namespace may be left out (`pod` alone). We also
accept full fnmatch globs on the pod name (`team-a:etl-*-driver`, `*:nightly-?-*`), not only a
trailing `*`.
"""

from __future__ import annotations

import fnmatch
import re
from typing import NamedTuple

from kubeaccel.errors import ConfigError
from kubeaccel.kube.names import is_dns_label

_NAME_GLOB = re.compile(r"^[a-z0-9.\-*?\[\]!]+$")


class SubmissionId(NamedTuple):
    namespace: str
    pod: str

    def __str__(self) -> str:
        return f"{self.namespace}:{self.pod}"


class Target(NamedTuple):
    """What a management command acts on: a namespace (None = not given) and a pod-name glob."""

    namespace: str | None
    pattern: str

    @property
    def is_glob(self) -> bool:
        return any(char in self.pattern for char in "*?[")

    def matches(self, pod_name: str) -> bool:
        return fnmatch.fnmatchcase(pod_name, self.pattern)


def parse_target(text: str) -> Target:
    """`ns:pod`, `pod`, `ns:glob`, `glob`; `*:glob` means every namespace explicitly."""
    raw = text.strip()
    if raw.count(":") > 1 or not raw or raw.startswith(":") or raw.endswith(":"):
        raise ConfigError(
            f"{text!r} is not a submission ID",
            hint="use NAMESPACE:DRIVER-POD (e.g. team-a:etl-1a2b-driver), DRIVER-POD, or a glob like team-a:etl-*",
        )
    namespace, _, pattern = raw.rpartition(":")
    if namespace and namespace != "*" and not is_dns_label(namespace):
        raise ConfigError(
            f"{namespace!r} in {text!r} is not a valid namespace name",
            hint="namespaces are lowercase letters, digits and '-'",
        )
    if not _NAME_GLOB.match(pattern):
        raise ConfigError(
            f"{pattern!r} in {text!r} is not a pod name or glob",
            hint="pod names are lowercase letters, digits, '-' and '.'; globs add * ? [...]",
        )
    return Target(namespace or None, pattern)
