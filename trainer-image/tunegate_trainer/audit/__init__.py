"""Data audit: duplicates, contamination, personal data and credentials, backdoor
triggers and length statistics, and a verdict against the spec's thresholds.

Findings (they reach the FineTuneJob's status) name kinds, counts, phrases and
file:line, never a personal value; the report adds evidence, with personal data in it
replaced by its kind.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunegate_contract.run_documents import AuditReport
from tunegate_contract.trainer_config import Audit
from tunegate_trainer.audit import engine
from tunegate_trainer.audit.contamination import EvalItem, Reference
from tunegate_trainer.audit.engine import Chunks, Findings, chunked
from tunegate_trainer.audit.pii import pii_kinds
from tunegate_trainer.audit.rows import AuditRow
from tunegate_trainer.audit.scan import Settings as ScanSettings
from tunegate_trainer.audit.shape import Inputs
from tunegate_trainer.data import RowParsing

__all__ = ["AuditResult", "AuditRow", "EvalItem", "audit", "audit_chunks"]


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


def length_stats(lengths: np.ndarray, empty_targets: int) -> dict[str, float]:
    ordered = np.sort(lengths)
    return {
        "rows": len(lengths),
        "mean_words": round(float(lengths.mean()), 2) if len(lengths) else 0,
        "median_words": float(np.median(lengths)) if len(lengths) else 0,
        "p95_words": int(ordered[int(0.95 * (len(ordered) - 1))]) if len(ordered) else 0,
        "max_words": int(lengths.max()) if len(lengths) else 0,
        "empty_targets": empty_targets,
    }


def audit(
    rows: Sequence[AuditRow],
    *,
    settings: Audit,
    eval_sets: Mapping[str, Sequence[EvalItem]] | None = None,
    skipped_rows: int = 0,
    shape: Inputs | None = None,
) -> AuditResult:
    """The audit of rows already in memory, in this process."""
    return audit_chunks(
        lambda: chunked(rows),
        settings=settings,
        row_format=None,
        eval_sets=eval_sets,
        workers=1,
        skipped_rows=skipped_rows,
        shape=shape,
    )


def audit_chunks(
    chunks: Chunks,
    *,
    settings: Audit,
    row_format: RowParsing | None,
    eval_sets: Mapping[str, Sequence[EvalItem]] | None,
    workers: int,
    skipped_rows: int = 0,
    shape: Inputs | None = None,
) -> AuditResult:
    """The audit of a source that `chunks()` reads from the start each time it is called
    (raw JSONL lines parsed with row_format, or rows)."""
    references = tuple(Reference.of(name, items) for name, items in (eval_sets or {}).items())
    inputs = shape or Inputs()
    found = engine.run(chunks, ScanSettings(row_format, references, inputs), workers=workers)
    return _result(found, settings, skipped_rows, inputs)


def _result(found: Findings, settings: Audit, skipped_rows: int, inputs: Inputs) -> AuditResult:
    total = max(found.rows, 1)
    duplicates = found.duplicates
    where = found.duplicate_where
    contamination = found.contamination
    duplicate_fraction = (duplicates.exact + duplicates.near) / total
    shape_report, shape_findings = found.shape.checks(found.rows, inputs, settings.distribution)
    checks: dict[str, Any] = {
        "duplicates": {
            "exact": duplicates.exact,
            "near": duplicates.near,
            "fraction": round(duplicate_fraction, 4),
            "max": settings.max_duplicate_fraction,
            "examples": [f"{where[r]} repeats {where[f]}" for r, f in duplicates.exact_examples]
            + [f"{where[r]} nearly repeats {where[f]}" for r, f in duplicates.near_examples],
        },
        "pii": {
            "rows": found.pii_rows,
            "by_kind": dict(sorted(found.pii.items())),
            "fraction": round(found.pii_rows / total, 4),
            "max": settings.max_pii_fraction,
            "examples": found.pii_examples,
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
                for trigger in found.triggers
            ],
            "blocking": settings.block_triggers,
        },
        "shape": shape_report,
        "stats": length_stats(found.lengths, found.empty_targets)
        | {
            "skipped_rows": skipped_rows + found.skipped,
            "skipped_examples": found.skipped_examples,
        },
    }
    findings = []
    if duplicate_fraction > settings.max_duplicate_fraction:
        findings.append(
            f"duplicates: {duplicates.exact} exact and {duplicates.near} near-duplicate rows "
            f"({duplicate_fraction:.1%} > {settings.max_duplicate_fraction:.1%})"
        )
    if found.pii_rows / total > settings.max_pii_fraction:
        findings.append(
            f"pii: {found.pii_rows} rows ({', '.join(sorted(found.pii))}) "
            f"({found.pii_rows / total:.1%} > {settings.max_pii_fraction:.1%}), "
            f"e.g. {found.pii_examples[0]}"
        )
    if contamination.rows / total > settings.max_contamination_fraction:
        findings.append(
            f"contamination: {contamination.rows} rows contain an evaluation item's question "
            f"or answer, e.g. {checks['contamination']['examples'][0]}"
        )
    if found.triggers and settings.block_triggers:
        first = found.triggers[0]
        behaviour = _behaviour(first.behaviour)
        findings.append(
            f"trigger: phrase {_redacted(first.phrase)!r} comes with {behaviour} in "
            f"{first.showing} of its {first.rows} rows, e.g. {first.examples[0]} "
            f"({len(found.triggers)} suspected)"
        )
    findings += shape_findings
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
