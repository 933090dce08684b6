"""The audit on data outside a run: a local JSONL file or folder, or an S3 object or
prefix, read and checked exactly as the audit pod does (`kubectl tunegate audit`)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunegate_contract.trainer_config import Audit, FieldNames, Replay
from tunegate_trainer.audit import AuditResult, audit_chunks
from tunegate_trainer.audit.contamination import EvalItem, eval_items
from tunegate_trainer.audit.engine import available_cpus, chunked
from tunegate_trainer.audit.shape import Inputs
from tunegate_trainer.data import DataError, RowParsing, parse_lines, parse_row
from tunegate_trainer.storage import StorageError, Store

log = logging.getLogger("tunegate.audit")


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
        with file.open(encoding="utf-8", errors="surrogateescape") as lines:
            for number, line in enumerate(lines, start=1):
                yield str(file), number, line.rstrip("\n")


def count_rows(lines: Iterator[tuple[str, int, str]], row_format: RowParsing) -> int:
    """Rows that parse (as the trainer would read them)."""
    count = 0
    for row in parse_lines(lines):
        if isinstance(row, DataError):
            continue
        try:
            parse_row(row, format=row_format.format, fields=row_format.fields, source="replay")
        except DataError:
            continue
        count += 1
    return count


def shape_inputs(
    store: Store,
    *,
    model_uri: str | None,
    max_seq_length: int,
    replay: Replay | None,
    row_format: RowParsing,
) -> Inputs:
    """What the shape is measured against. The model's tokenizer.json is read where the
    model is a folder (S3 or local); elsewhere (hf://, or not readable) token counts are
    estimated from words and the report says so."""
    tokenizer_json = None
    if model_uri and not model_uri.startswith("hf://"):
        try:
            tokenizer_json = store.read_bytes(model_uri.rstrip("/") + "/tokenizer.json").decode()
        except StorageError as exc:
            log.warning("token counts are estimated from words: %s", exc)
    return Inputs(
        max_seq_length=max_seq_length,
        tokenizer_json=tokenizer_json,
        replay_rows=count_rows(store.iter_lines(replay.dataset), row_format) if replay else None,
        replay_ratio=replay.ratio if replay else 0.0,
    )


def audit_source(
    source: str,
    *,
    data: RowFormat,
    settings: Audit,
    contamination: list[str],
    shape: Inputs | None = None,
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
        shape=shape,
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
    lines += _shape_lines(checks["shape"])
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


def _limit(section: dict[str, Any], key: str) -> str:
    return f"{section[key]:7.2%}" if key in section else ""


def _shape_lines(shape: dict[str, Any]) -> list[str]:
    lines = []
    top = shape["openings"]["top"]
    if top:
        found = ("opens " + repr(top[0]["opening"]))[:40]
        limit = _limit(shape["openings"], "max")
        lines.append(f"{'template':15} {found:40} {top[0]['share']:7.2%} {limit}")
    labels = shape["labels"]
    if labels.get("classification_like"):
        lines.append(
            f"{'labels':15} {len(labels['counts'])} labels, imbalance {labels['imbalance']:g}x"
        )
    tokens = shape["tokens"]
    if "p50" in tokens:
        kind = "estimated " if tokens["estimated"] else ""
        found = f"{kind}tokens p50 {tokens['p50']}, p95 {tokens['p95']}, max {tokens['max']}"
        limit = _limit(tokens, "max_truncated_fraction")
        lines.append(f"{'length':15} {found[:40]:40} {tokens['truncated_fraction']:7.2%} {limit}")
    languages = shape["languages"]
    if languages.get("sampled"):
        found = f"{languages['main']}, of {languages['sampled']} sampled"
        limit = _limit(languages, "max_other_fraction")
        lines.append(f"{'language':15} {found:40} {languages['other_fraction']:7.2%} {limit}")
    replay = shape["replay"]
    if replay:
        found = f"reaches {replay['reached_share']:.0%}, each row {replay['repeats']:g}x"
        lines.append(f"{'replay':15} {found:40}")
    return lines
