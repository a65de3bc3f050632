"""Kubernetes' object-name rules, written once: DNS-1123 labels (namespaces, Services) and subdomains (most
other objects, e.g. Pods and ConfigMaps). Every name a user gives is checked here before it reaches a URL."""

from __future__ import annotations

import re

DNS_LABEL_MAX = 63
DNS_SUBDOMAIN_MAX = 253
_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


def is_dns_label(name: str) -> bool:
    """RFC 1123 label: namespaces, Service names. At most 63 lowercase alphanumerics and '-'."""
    return len(name) <= DNS_LABEL_MAX and _LABEL.fullmatch(name) is not None


def is_dns_subdomain(name: str) -> bool:
    """RFC 1123 subdomain: Pod, ConfigMap, Secret names. At most 253 characters, dot-separated labels."""
    return len(name) <= DNS_SUBDOMAIN_MAX and _SUBDOMAIN.fullmatch(name) is not None


def label_problem(name: str, what: str) -> str | None:
    """Why `name` is not a valid DNS label for `what`, or None when it is."""
    if is_dns_label(name):
        return None
    if len(name) > DNS_LABEL_MAX:
        return f"{what} {name[:80]!r} is longer than {DNS_LABEL_MAX} characters"
    return (
        f"{what} {name[:80]!r} is not a DNS label (lowercase letters, digits and '-', starting and ending alphanumeric)"
    )


def subdomain_problem(name: str, what: str) -> str | None:
    """Why `name` is not a valid DNS subdomain for `what`, or None when it is."""
    if is_dns_subdomain(name):
        return None
    if len(name) > DNS_SUBDOMAIN_MAX:
        return f"{what} {name[:80]!r}... is longer than {DNS_SUBDOMAIN_MAX} characters"
    return f"{what} {name[:80]!r} is not a DNS subdomain (lowercase letters, digits, '-' and '.')"
