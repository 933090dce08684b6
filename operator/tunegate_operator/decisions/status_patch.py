"""The status a decision asks for, and whether it differs from the stored one (pure:
no I/O here). Both reconcilers patch status only when it does."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from tunegate_operator.decisions.conditions import (
    DecidedStatus,
    conditions_differ,
    merge_conditions,
)


def desired_status(
    decision: DecidedStatus, status: Mapping[str, Any], *, now: datetime, generation: int
) -> dict[str, Any]:
    conditions = merge_conditions(
        status.get("conditions") or [], decision.conditions, now=now, generation=generation
    )
    return {
        **decision.status,
        "phase": decision.phase,
        "observedGeneration": generation,
        "conditions": conditions,
    }


def status_changed(current: Mapping[str, Any], desired: Mapping[str, Any]) -> bool:
    for key, value in desired.items():
        if key == "conditions":
            if conditions_differ(current.get("conditions") or [], value):
                return True
        elif key == "completionTime":
            if not current.get(key):
                return True
        elif _stored(current.get(key)) != _stored(value):
            return True
    return False


def _stored(value: Any) -> Any:
    """A value as the API server stores it: no field of our CRDs is nullable, so every
    null goes (a merge patch removes the key; pruning drops it inside lists). A desired
    `{"previous": None}` equals a stored object without `previous`; compared raw, the
    same patch went out on every tick."""
    if isinstance(value, Mapping):
        return {k: _stored(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_stored(v) for v in value]
    return value
