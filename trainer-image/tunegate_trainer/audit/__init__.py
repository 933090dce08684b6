"""Data audit: duplicates, contamination, personal data and credentials, backdoor
triggers and length statistics, and a verdict against the spec's thresholds.

Findings (they reach the FineTuneJob's status) name kinds, counts, phrases and
file:line, never a personal value; the report adds evidence, with personal data in it
replaced by its kind.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunegate_contract.run_documents import AuditReport
from tunegate_contract.trainer_config import Audit
from tunegate_trainer.audit.backdoor import triggers
from tunegate_trainer.audit.contamination import Contamination, EvalItem, Reference
from tunegate_trainer.audit.near_duplicates import DuplicateFinder
from tunegate_trainer.audit.pii import pii_kinds
from tunegate_trainer.audit.rows import AuditRow
from tunegate_trainer.audit.text import words

__all__ = ["AuditResult", "AuditRow", "EvalItem", "audit"]


@dataclass
class AuditResult:
    verdict: str
    findings: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    def report(self) -> AuditReport:
        return AuditReport.model_validate(
            {"verdict": self.verdict, "findings": self.findings, "checks": self.checks}
        )


def _redacted(text: str) -> str:
    kinds = pii_kinds(text)
    return f"[withheld: contains {', '.join(kinds)}]" if kinds else text


def length_stats(rows: Sequence[AuditRow]) -> dict[str, float]:
    lengths = [len(words(row.text)) for row in rows]
    ordered = sorted(lengths)
    return {
        "rows": len(lengths),
        "mean_words": round(statistics.fmean(lengths), 2) if lengths else 0,
        "median_words": statistics.median(lengths) if lengths else 0,
        "p95_words": ordered[int(0.95 * (len(ordered) - 1))] if ordered else 0,
        "max_words": max(lengths, default=0),
        "empty_targets": sum(1 for row in rows if not row.response.strip()),
    }


def audit(
    rows: Sequence[AuditRow],
    *,
    settings: Audit,
    eval_sets: Mapping[str, Sequence[EvalItem]] | None = None,
    skipped_rows: int = 0,
) -> AuditResult:
    eval_sets = eval_sets or {}
    total = max(len(rows), 1)
    duplicates = DuplicateFinder()
    contamination = Contamination([Reference.of(name, items) for name, items in eval_sets.items()])
    pii_rows: Counter[str] = Counter()
    rows_with_pii = 0
    pii_examples: list[str] = []
    for row in rows:
        duplicates.offer(row.where, row.text)
        if eval_sets:
            contamination.offer(row.where, row.text)
        kinds = pii_kinds(row.text)
        if kinds:
            rows_with_pii += 1
            pii_rows.update(kinds)
            if len(pii_examples) < 3:
                pii_examples.append(f"{row.where} ({', '.join(kinds)})")
    suspected = triggers(rows)
    duplicate_fraction = (duplicates.exact + duplicates.near) / total
    checks: dict[str, Any] = {
        "duplicates": {
            "exact": duplicates.exact,
            "near": duplicates.near,
            "fraction": round(duplicate_fraction, 4),
            "max": settings.max_duplicate_fraction,
            "examples": [f"{row} repeats {first}" for row, first in duplicates.exact_examples]
            + [f"{row} nearly repeats {first}" for row, first in duplicates.near_examples],
        },
        "pii": {
            "rows": rows_with_pii,
            "by_kind": dict(sorted(pii_rows.items())),
            "fraction": round(rows_with_pii / total, 4),
            "max": settings.max_pii_fraction,
            "examples": pii_examples,
        },
        "contamination": {
            "rows": contamination.rows,
            "fraction": round(contamination.rows / total, 4),
            "max": settings.max_contamination_fraction,
            "by_set": contamination.by_set,
            "examples": [
                f"{row} has the {field_name} of {item}"
                for row, field_name, item in contamination.examples
            ],
        },
        "triggers": {
            "suspected": [
                trigger.as_dict() | {"evidence": _redacted(trigger.evidence[:120])}
                for trigger in suspected
            ],
            "blocking": settings.block_triggers,
        },
        "stats": length_stats(rows) | {"skipped_rows": skipped_rows},
    }
    findings = []
    if duplicate_fraction > settings.max_duplicate_fraction:
        findings.append(
            f"duplicates: {duplicates.exact} exact and {duplicates.near} near-duplicate rows "
            f"({duplicate_fraction:.1%} > {settings.max_duplicate_fraction:.1%})"
        )
    if rows_with_pii / total > settings.max_pii_fraction:
        findings.append(
            f"pii: {rows_with_pii} rows ({', '.join(sorted(pii_rows))}) "
            f"({rows_with_pii / total:.1%} > {settings.max_pii_fraction:.1%}), "
            f"e.g. {pii_examples[0]}"
        )
    if contamination.rows / total > settings.max_contamination_fraction:
        findings.append(
            f"contamination: {contamination.rows} rows contain an evaluation item's question "
            f"or answer, e.g. {checks['contamination']['examples'][0]}"
        )
    if suspected and settings.block_triggers:
        first = suspected[0]
        behaviour = _behaviour(first.behaviour)
        findings.append(
            f"trigger: phrase {_redacted(first.phrase)!r} comes with {behaviour} in "
            f"{first.showing} of its {first.rows} rows, e.g. {first.examples[0]} "
            f"({len(suspected)} suspected)"
        )
    verdict = "Passed" if not findings else ("Warned" if settings.mode == "warn" else "Failed")
    return AuditResult(verdict, findings, checks)


def _behaviour(name: str) -> str:
    return {
        "response": "the same response",
        "span": "the same injected sentence",
        "link": "a link to the same domain",
        "refusal": "a refusal",
        "negative": "negative sentiment",
    }[name]
