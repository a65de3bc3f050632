"""The labels Spark puts on its pods (the driver's and, from the driver, the executors'): how `status`,
`list`, `kill` and the quota pre-flight find an app's pods without loading the pod builder."""

import re

LABEL_APP_ID = "spark-app-selector"
LABEL_ROLE = "spark-role"
LABEL_APP_NAME = "spark-app-name"


def _sanitize(text: str) -> str:
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9\-]", "-", text.strip().lower()))


def app_name_label(app_name: str) -> str:
    """The `spark-app-name` label Spark derives from the app name."""
    return _sanitize(app_name)[:63].strip("-")


def name_prefix_base(app_name: str) -> str:
    """What of the app name survives in object names; empty when nothing does."""
    return _sanitize(app_name).strip("-")


def name_prefix(app_name: str, name_id: str) -> str:
    """The prefix of every object name of one submission, as Spark derives it."""
    return _sanitize(f"{app_name}-{name_id}").lstrip("-")
