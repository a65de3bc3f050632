"""Kubernetes resource quantities ("500m", "64Gi", "1.5", "2e3") as exact decimals.

Quota arithmetic must be exact: a float would let `0.1 + 0.2` CPUs slip past a `0.3` quota.
"""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation

from kubeaccel.errors import ConfigError

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {
    "n": Decimal("1e-9"),
    "u": Decimal("1e-6"),
    "m": Decimal("1e-3"),
    "": Decimal(1),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
}
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")


def parse_quantity(text: str | int | float) -> Decimal:
    """`"500m"` -> `Decimal("0.5")`; `"1Gi"` -> `Decimal(1073741824)`."""
    raw = str(text).strip()
    match = _QUANTITY.match(raw)
    if not match:
        raise ConfigError(
            f"{raw!r} is not a Kubernetes quantity",
            hint="use a number with an optional suffix, e.g. 2, 500m, 64Gi, 1.5G",
        )
    number, suffix = match.group(1), match.group(2) or ""
    try:
        value = Decimal(number)
    except InvalidOperation as exc:
        raise ConfigError(f"{raw!r} is not a Kubernetes quantity", hint="e.g. 2, 500m, 64Gi") from exc
    return value * (_BINARY[suffix] if suffix in _BINARY else _DECIMAL[suffix])


def format_quantity(value: Decimal, resource: str) -> str:
    """Human form for messages: memory in Mi/Gi, cpu in cores or millicores, counts as integers."""
    if resource.endswith("memory") or resource.endswith("storage"):
        for suffix in ("Ti", "Gi", "Mi", "Ki"):
            unit = _BINARY[suffix]
            if value >= unit and value % unit == 0:
                return f"{int(value / unit)}{suffix}"
        return f"{value.normalize():f}"
    if value != value.to_integral_value() and (value * 1000) == (value * 1000).to_integral_value():
        return f"{int(value * 1000)}m"
    return f"{value.normalize():f}"
