"""Whether this replica may act, by the rule kopf's peering applies.

kopf pauses its watches when another live replica has a higher priority (or the same
one), but our own ticker is not kopf's: it asks this before queueing anything, from
the same peering object kopf reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from tunegate_contract.base import parse_rfc3339

# kopf's default when a peer does not state its lifetime.
DEFAULT_LIFETIME_SECONDS = 60


def _alive_priorities(status: Mapping[str, Any], now: datetime) -> list[int]:
    priorities = []
    for entry in status.values():
        if not isinstance(entry, Mapping):
            continue
        lifetime = timedelta(seconds=int(entry.get("lifetime", DEFAULT_LIFETIME_SECONDS)))
        seen = entry.get("lastseen")
        # kopf counts a peer without lastseen as seen now.
        if seen is None or parse_rfc3339(str(seen)) + lifetime > now:
            priorities.append(int(entry.get("priority", 0)))
    return priorities


def may_act(
    peering_status: Mapping[str, Any] | None,
    *,
    own_priority: int,
    mandatory: bool,
    now: datetime,
) -> bool:
    """peering_status: the peering object's status (identity -> priority, lifetime,
    lastseen), None when the object does not exist (kopf then runs alone, unless
    peering is mandatory). Our own entry is the one with our priority: kopf pauses
    every replica when two share one."""
    if peering_status is None:
        return not mandatory
    alive = _alive_priorities(peering_status, now)
    if any(priority > own_priority for priority in alive):
        return False
    return alive.count(own_priority) <= 1
