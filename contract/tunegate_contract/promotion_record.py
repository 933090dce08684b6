"""The promotion pointer, `promotion.json` under promotion.uri: which version serving
loads, the ones before it, the ones rolled back. Written only by the operator, by
compare-and-swap; read by serving, rollouts and people."""

from __future__ import annotations

from pydantic import Field

from tunegate_contract.base import Document

POINTER_LAYOUT = 2  # v0.1 (layout 1) served files at the root, older ones under .history/
KEPT = 20  # entries listed under previous / rolledBack


class VersionEntry(Document):
    sha256: str  # tree_digest of files
    uri: str | None = None  # versions/<sha12>/ (absent in a v0.1 record)
    source: str = ""  # the adapter URI it was promoted from
    files: dict[str, str] = {}
    at: str | None = None
    gate: str | None = None
    restored_at: str | None = Field(default=None, alias="restoredAt")
    rolled_back_at: str | None = Field(default=None, alias="rolledBackAt")
    rolled_back_by: str | None = Field(default=None, alias="rolledBackBy")


class PromotionRecord(Document):
    layout: int = 1
    current: VersionEntry | None = None
    previous: list[VersionEntry] = []
    rolled_back: list[VersionEntry] = Field(default=[], alias="rolledBack")

    def referenced(self) -> set[str]:
        """Digests some entry names: their folders are never deleted."""
        entries = [self.current, *self.previous, *self.rolled_back]
        return {e.sha256 for e in entries if e is not None}
