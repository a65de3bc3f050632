"""Kubernetes resource quantities for device capacity: parse what a user writes, format what we publish.

Only the forms a capacity needs: a non-negative integer with an optional binary (``Ki`` … ``Ei``)
or decimal (``k``, ``M`` … ``E``) suffix. ``80Gi`` → 85899345920; 150754820096 → ``143771Mi``
(the largest suffix that divides exactly, as the API server's canonical form does).
"""

from __future__ import annotations

import re

_SUFFIXES: dict[str, int] = {
    "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60,
}
# Largest multiplier first: the first exact one is the shortest form.
_BY_SIZE = sorted(((m, s) for s, m in _SUFFIXES.items() if s), reverse=True)
_QUANTITY = re.compile(r"([0-9]{1,19})(|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)")
MAX_QUANTITY = 2**63 - 1  # what the API server's int64 holds


def parse_quantity(text: str) -> int:
    """``80Gi`` → 85899345920. ``ValueError`` (saying what is allowed) for anything else."""
    match = _QUANTITY.fullmatch(text.strip())
    if not match:
        raise ValueError(f"{text[:40]!r} is not a quantity: an integer with an optional suffix, e.g. 80Gi or 141G")
    value = int(match.group(1)) * _SUFFIXES[match.group(2)]
    if value > MAX_QUANTITY:
        raise ValueError(f"{text[:40]!r} is larger than the API allows (2^63 - 1)")
    return value


def format_quantity(value: int) -> str:
    """The canonical quantity string for a non-negative integer: the largest exact suffix, else plain digits."""
    if value < 0:
        raise ValueError(f"a capacity cannot be negative: {value}")
    for multiplier, suffix in _BY_SIZE:
        if value and value % multiplier == 0:
            return f"{value // multiplier}{suffix}"
    return str(value)
