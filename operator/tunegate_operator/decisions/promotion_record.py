"""The promotion pointer, `promotion.json`, as the decisions read it (pure: no I/O
here; promotion.py writes it)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Promoted:
    uri: str  # the version's folder: what serving loads
    sha256: str
    source: str
    previous: str | None  # the version it replaced
    at: str

    def status(self) -> dict[str, str | None]:
        """The gate's status.promoted."""
        return {"uri": self.uri, "sha256": self.sha256, "previous": self.previous, "at": self.at}

    def serving_record(self) -> dict[str, str]:
        """The data of the ConfigMap serving reads."""
        return {
            "adapterUri": self.uri,
            "sha256": self.sha256,
            "source": self.source,
            "promotedAt": self.at,
        }


def promoted_of(record: Mapping[str, Any]) -> Promoted | None:
    """The pointer's current version (None for no pointer, or a v0.1 record that
    names no version folder)."""
    entry = record.get("current") or {}
    if not entry.get("sha256") or not entry.get("uri"):
        return None
    before = record.get("previous") or []
    return Promoted(
        entry["uri"],
        entry["sha256"],
        str(entry.get("source", "")),
        before[0]["sha256"] if before else None,
        str(entry.get("restoredAt") or entry.get("at") or ""),
    )


def served_sha256_of(record: Mapping[str, Any], adapter_uri: str) -> str | None:
    """The digest the pointer serves, when it serves this candidate."""
    entry = record.get("current") or {}
    return entry.get("sha256") if entry.get("source") == adapter_uri else None


def replaced_by(record: Mapping[str, Any], adapter_uri: str) -> str | None:
    """What the pointer serves instead, when it served this candidate once and moved on
    (another gate promoted, or a re-evaluation rolled it back)."""
    entry = record.get("current") or {}
    if entry.get("source") == adapter_uri:
        return None
    earlier = [*(record.get("previous") or []), *(record.get("rolledBack") or [])]
    if any(e.get("source") == adapter_uri for e in earlier):
        return str(entry.get("source") or "another version")
    return None


def rolled_back_sha256(record: Mapping[str, Any], adapter_uri: str) -> str | None:
    """This candidate's digest, when a re-evaluation rolled it back."""
    for entry in record.get("rolledBack") or []:
        if entry.get("source") == adapter_uri:
            return str(entry.get("sha256"))
    return None
