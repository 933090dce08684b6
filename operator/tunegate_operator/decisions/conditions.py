"""Standard conditions (pure): desired conditions merged into the existing ones so
lastTransitionTime only moves when a condition's status really changes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol

from tunegate_contract.base import rfc3339

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Cond:
    type: str
    status: Status
    reason: str
    message: str = ""


class DecidedStatus(Protocol):
    """What a reconciler's decision says about the object's status."""

    @property
    def phase(self) -> str: ...
    @property
    def conditions(self) -> Sequence[Cond]: ...
    @property
    def status(self) -> Mapping[str, Any]: ...


def merge_conditions(
    existing: Sequence[dict[str, Any]],
    desired: Sequence[Cond],
    *,
    now: datetime,
    generation: int,
) -> list[dict[str, Any]]:
    by_type = {c["type"]: c for c in existing}
    merged: list[dict[str, Any]] = []
    for cond in desired:
        previous = by_type.get(cond.type)
        changed = previous is None or previous.get("status") != cond.status
        merged.append(
            {
                "type": cond.type,
                "status": cond.status,
                "reason": cond.reason,
                "message": cond.message,
                "observedGeneration": generation,
                "lastTransitionTime": (
                    rfc3339(now)
                    if changed or previous is None
                    else previous.get("lastTransitionTime", rfc3339(now))
                ),
            }
        )
    desired_types = {c.type for c in desired}
    merged.extend(c for c in existing if c["type"] not in desired_types)
    return sorted(merged, key=lambda c: str(c["type"]))


def conditions_differ(a: Sequence[dict[str, Any]], b: Sequence[dict[str, Any]]) -> bool:
    def key(items: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
        return sorted(
            (
                c["type"],
                c.get("status"),
                c.get("reason"),
                c.get("message"),
                c.get("observedGeneration"),
            )
            for c in items
        )

    return key(a) != key(b)
