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
        elif current.get(key) != value:
            return True
    return False
