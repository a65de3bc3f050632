"""The one error family users see.

Everything a user can get wrong (config, IDs, globs, an unreachable cluster) is raised as a
``KubeaccelError`` carrying what was wrong and how to fix it; the CLI prints it without a
traceback and exits with ``exit_code``. Library code raises, it never exits the process.
"""

from __future__ import annotations


class KubeaccelError(Exception):
    """A problem the user can fix. ``hint`` says how."""

    exit_code: int = 2

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
    """A configuration file or option is malformed."""


class NotFoundError(KubeaccelError):
    """Something the user named does not exist."""

    exit_code = 3


class UnavailableError(KubeaccelError):
    """A service we depend on (kubelet, API server, NVML) cannot be reached."""

    exit_code = 4
