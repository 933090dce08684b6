"""The promotion pointer, `promotion.json`, as the decisions read it (pure: no I/O
here; promotion.py writes it)."""

from __future__ import annotations

from dataclasses import dataclass

from tunegate_contract.promotion_record import PromotionRecord

NO_POINTER = PromotionRecord()  # promotion.uri holds no promotion.json yet


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


def promoted_of(record: PromotionRecord) -> Promoted | None:
    """The pointer's current version (None for no pointer, or a v0.1 record that
    names no version folder)."""
    entry = record.current
    if entry is None or not entry.uri:
        return None
    before = record.previous[0].sha256 if record.previous else None
    return Promoted(
        entry.uri, entry.sha256, entry.source, before, entry.restored_at or entry.at or ""
    )


def served_sha256_of(record: PromotionRecord, adapter_uri: str) -> str | None:
    """The digest the pointer serves, when it serves this candidate."""
    entry = record.current
    return entry.sha256 if entry is not None and entry.source == adapter_uri else None


def replaced_by(record: PromotionRecord, adapter_uri: str) -> str | None:
    """What the pointer serves instead, when it served this candidate once and moved on
    (another gate promoted, or a re-evaluation rolled it back)."""
    entry = record.current
    if entry is not None and entry.source == adapter_uri:
        return None
    if any(e.source == adapter_uri for e in [*record.previous, *record.rolled_back]):
        return (entry.source if entry else "") or "another version"
    return None


def rolled_back_sha256(record: PromotionRecord, adapter_uri: str) -> str | None:
    """This candidate's digest, when a re-evaluation rolled it back."""
    return next((e.sha256 for e in record.rolled_back if e.source == adapter_uri), None)
