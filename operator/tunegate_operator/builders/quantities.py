"""Kubernetes resource quantities as numbers, and back (pure).

Only the forms the API accepts (api.common.QUANTITY_PATTERN): a decimal number with an
optional SI or binary suffix.
"""

from __future__ import annotations

import math
import re

from tunegate_operator.api.common import QUANTITY_PATTERN

_SUFFIXES = {
    "": 1,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}
MIB = 2**20
GIB = 2**30


def quantity_value(quantity: str) -> float:
    """'500m' -> 0.5, '4Gi' -> 4294967296.0."""
    if not re.fullmatch(QUANTITY_PATTERN, quantity):
        raise ValueError(f"{quantity!r} is not a resource quantity")
    number = re.match(r"[0-9.]+", quantity)
    assert number is not None
    return float(number.group()) * _SUFFIXES[quantity[number.end() :]]


def mebibytes(size_bytes: float) -> str:
    """A byte count as a whole number of MiB, rounded up (never below what was asked)."""
    return f"{max(1, math.ceil(size_bytes / MIB))}Mi"
