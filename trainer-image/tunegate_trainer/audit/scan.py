"""Pass 1 of the audit over one chunk of rows, in a worker process: everything a row
contributes, as arrays, so the parent keeps a few hundred bytes per row and never the
text. Pass 3 (phrase counts) runs here too."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Union

import numpy as np

from tunegate_trainer.audit.backdoor import feature_key, prompt_phrases, response_features
from tunegate_trainer.audit.contamination import Contamination, Reference
from tunegate_trainer.audit.near_duplicates import (
    band_keys,
    digest,
    fingerprints,
    signature,
)
from tunegate_trainer.audit.pii import pii_kinds
from tunegate_trainer.audit.rows import AuditRow
from tunegate_trainer.audit.shape import Inputs, ShapeFacts, TokenCounter, chunk_facts
from tunegate_trainer.data import DataError, RowParsing, parse_lines, parse_row

# A raw JSONL line (file, line number, text) or a row already read.
Item = Union[tuple[str, int, str], AuditRow]  # noqa: UP007 (pickled to workers)


@dataclass(frozen=True)
class Settings:
    """What every worker needs: how to read rows, the eval sets' references, and what
    the data's shape is measured against."""

    row_format: RowParsing | None
    references: tuple[Reference, ...] = ()
    shape: Inputs = field(default_factory=Inputs)


@lru_cache(maxsize=2)
def _token_counter(tokenizer_json: str | None) -> TokenCounter:
    return TokenCounter(tokenizer_json)


@dataclass
class ChunkFacts:
    positions: np.ndarray  # each row's position in the source (malformed lines included)
    files: list[str]
    lines: np.ndarray
    digests: np.ndarray  # (rows, 16) uint8
    keys: np.ndarray  # (rows, BANDS) uint64
    bits: np.ndarray  # (rows, NUM_PERM) uint8
    lengths: np.ndarray  # words per row
    empty_targets: int
    pii: list[tuple[int, list[str]]]  # (position, kinds) of rows with any
    contamination: Contamination
    feature_keys: np.ndarray
    feature_owners: np.ndarray  # positions
    shape: ShapeFacts
    skipped: list[str] = field(default_factory=list)


def split_where(where: str) -> tuple[str, int]:
    """("file", line) of "file:line"; (where, 0) when it names no line."""
    file, _, line = where.rpartition(":")
    return (file, int(line)) if file and line.isdigit() else (where, 0)


def join_where(file: str, line: int) -> str:
    return f"{file}:{line}" if line else file


def read_row(item: Item, row_format: RowParsing | None) -> AuditRow | DataError | None:
    """The row, the reason it is malformed, or None for a blank line (not a row, as the
    trainer reads it)."""
    if isinstance(item, AuditRow):
        return item
    if row_format is None:
        raise ValueError("raw lines need a row format")
    parsed = next(parse_lines([item]), None)
    if parsed is None:
        return None
    if isinstance(parsed, DataError):
        return parsed
    try:
        example = parse_row(
            parsed, format=row_format.format, fields=row_format.fields, source="train"
        )
    except DataError as exc:
        return exc
    return AuditRow.of(example)


def scan(start: int, items: Sequence[Item], settings: Settings) -> ChunkFacts:
    """Pass 1 over items, which sit at positions start, start + 1, ... of the source."""
    rows: list[tuple[int, AuditRow]] = []
    skipped: list[str] = []
    for offset, item in enumerate(items):
        row = read_row(item, settings.row_format)
        if row is None:
            continue
        if isinstance(row, DataError):
            if settings.row_format is not None and settings.row_format.on_malformed_row == "fail":
                raise row
            skipped.append(str(row))
            continue
        rows.append((start + offset, row))
    contamination = Contamination(list(settings.references))
    pii: list[tuple[int, list[str]]] = []
    keys: list[int] = []
    owners: list[int] = []
    signatures = []
    digests = []
    lengths = []
    for position, row in rows:
        text = row.text
        tokens = row.words
        digests.append(digest(tokens))
        signatures.append(signature(tokens))
        lengths.append(len(tokens))
        if settings.references:
            contamination.offer(row.where, text)
        kinds = pii_kinds(text)
        if kinds:
            pii.append((position, kinds))
        for feature in response_features(row):
            keys.append(feature_key(feature))
            owners.append(position)
    stacked = np.stack(signatures) if signatures else np.empty((0, 256), dtype=np.uint32)
    places = [split_where(row.where) for _, row in rows]
    return ChunkFacts(
        positions=np.array([p for p, _ in rows], dtype=np.int64),
        files=[file for file, _ in places],
        lines=np.array([line for _, line in places], dtype=np.int64),
        digests=np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, 16),
        keys=band_keys(stacked),
        bits=fingerprints(stacked),
        lengths=np.array(lengths, dtype=np.int64),
        empty_targets=sum(1 for _, row in rows if not row.response.strip()),
        pii=pii,
        contamination=contamination,
        feature_keys=np.array(keys, dtype=np.uint64),
        feature_owners=np.array(owners, dtype=np.int64),
        shape=chunk_facts(rows, _token_counter(settings.shape.tokenizer_json)),
        skipped=skipped,
    )


def count_phrases(
    start: int,
    items: Sequence[Item],
    settings: Settings,
    needed: frozenset[tuple[str, ...]],
    repeated: np.ndarray,
) -> Counter[tuple[str, ...]]:
    """Pass 3: how many distinct rows (repeats skipped) hold each needed phrase."""
    counts: Counter[tuple[str, ...]] = Counter()
    for offset, item in enumerate(items):
        position = start + offset
        if position < len(repeated) and repeated[position]:
            continue
        row = read_row(item, settings.row_format)
        if isinstance(row, AuditRow):
            counts.update(prompt_phrases(row.prompt) & needed)
    return counts
