"""The audit on data outside a run: a local JSONL file or folder, or an S3 object or
prefix, read and checked exactly as the audit pod does (`kubectl tunegate audit`)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunegate_contract.trainer_config import Audit, FieldNames
from tunegate_trainer.audit import AuditResult, audit_chunks
from tunegate_trainer.audit.contamination import EvalItem, eval_items
from tunegate_trainer.audit.engine import available_cpus, chunked
from tunegate_trainer.data import DataError


@dataclass(frozen=True)
class RowFormat:
    """spec.dataset's format, field names and malformed-row policy."""

    format: Literal["chat", "instruction", "text"]
    fields: FieldNames = field(default_factory=FieldNames)
    on_malformed_row: Literal["fail", "skip"] = "fail"


def read_lines(source: str) -> Iterator[tuple[str, int, str]]:
    """(file, line number, text) of every JSONL line under source."""
    if source.startswith("s3://"):
        from tunegate_trainer.storage import store_from_env

        yield from store_from_env(None, "us-east-1").iter_lines(source)
        return
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*.jsonl") if p.is_file())
        if not files:
            raise DataError(f"{source}: no .jsonl files in this folder")
    elif path.is_file():
        files = [path]
    else:
        raise DataError(f"{source}: no such file or folder")
    for file in files:
        with file.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                yield str(file), number, line.rstrip("\n")


def audit_source(
    source: str, *, data: RowFormat, settings: Audit, contamination: list[str]
) -> AuditResult:
    eval_sets: dict[str, list[EvalItem]] = {
        name: eval_items(read_lines(name)) for name in contamination
    }
    return audit_chunks(
        lambda: chunked(read_lines(source)),
        settings=settings,
        row_format=data,
        eval_sets=eval_sets,
        workers=available_cpus(),
    )


def summary(result: AuditResult) -> str:
    """The checks as a table, then the findings and where to look."""
    checks: dict[str, Any] = result.checks
    rows = [
        (
            "duplicates",
            f"{checks['duplicates']['exact']} exact, {checks['duplicates']['near']} near",
            checks["duplicates"]["fraction"],
            checks["duplicates"]["max"],
        ),
        (
            "personal data",
            ", ".join(f"{k} {v}" for k, v in checks["pii"]["by_kind"].items()) or "none",
            checks["pii"]["fraction"],
            checks["pii"]["max"],
        ),
        (
            "contamination",
            f"{checks['contamination']['rows']} rows",
            checks["contamination"]["fraction"],
            checks["contamination"]["max"],
        ),
    ]
    lines = [f"{'CHECK':15} {'FOUND':40} {'SHARE':>7} {'LIMIT':>7}"]
    lines += [
        f"{name:15} {found[:40]:40} {share:7.2%} {limit:7.2%}" for name, found, share, limit in rows
    ]
    action = "block" if checks["triggers"]["blocking"] else "warn"
    for trigger in checks["triggers"]["suspected"]:
        lines.append(
            f"{'trigger':15} {trigger['phrase'][:40]:40} {trigger['consistency']:7.0%} {action:>7}"
        )
    stats = checks["stats"]
    lines.append(
        f"{stats['rows']} rows ({stats['skipped_rows']} skipped), median {stats['median_words']} "
        f"words, p95 {stats['p95_words']}, max {stats['max_words']}"
    )
    lines.append(f"verdict: {result.verdict}")
    lines += [f"  - {finding}" for finding in result.findings]
    for check in ("duplicates", "pii", "contamination"):
        lines += [f"  {check}: {example}" for example in checks[check]["examples"]]
    for trigger in checks["triggers"]["suspected"]:
        lines.append(
            f"  trigger {trigger['phrase']!r}: {trigger['behaviour']} "
            f"({trigger['evidence'][:60]!r}), rows {', '.join(trigger['examples'])}"
        )
    return "\n".join(lines)
