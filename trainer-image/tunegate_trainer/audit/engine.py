"""The audit over a source read in chunks, on every CPU the pod may use.

Pass 1 (all rows, in workers) keeps per row a digest, LSH band keys, an 8-bit MinHash
fingerprint, a length and its response features' keys: a few hundred bytes, whatever
the row's size. Pass 2 re-reads only the rows that show a rare behaviour; pass 3 (in
workers, only when pass 2 found something to count) counts the phrases that could be
their trigger. Memory follows the row count by those bytes, never the text.
"""

from __future__ import annotations

import multiprocessing
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tunegate_trainer.audit.backdoor import Suspects, Trigger, candidate_features
from tunegate_trainer.audit.contamination import Contamination
from tunegate_trainer.audit.near_duplicates import Duplicates
from tunegate_trainer.audit.rows import AuditRow
from tunegate_trainer.audit.scan import (
    ChunkFacts,
    Item,
    Settings,
    count_phrases,
    join_where,
    read_row,
    scan,
)
from tunegate_trainer.audit.shape import Shape, ShapeFacts

CHUNK = 1000
EXAMPLES = 3
Chunks = Callable[[], Iterator[tuple[int, list[Item]]]]


def chunked(items: Iterable[Item], size: int = CHUNK) -> Iterator[tuple[int, list[Item]]]:
    """(position of the first, items) in order."""
    batch: list[Item] = []
    start = 0
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield start, batch
            start += size
            batch = []
    if batch:
        yield start, batch


def available_cpus() -> int:
    """CPUs this process may use: the cgroup's CPU quota where one is set (a pod's
    limit), else the affinity mask."""
    cpus = len(os.sched_getaffinity(0))
    quota = _cgroup_quota()
    return max(1, min(cpus, int(quota)) if quota else cpus)


def _cgroup_quota() -> float | None:
    try:  # cgroup v2: "<quota> <period>" or "max <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:  # cgroup v1: a quota of -1 means none
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 else None
    except (OSError, ValueError):
        return None


_WORKER: dict[str, Any] = {}


def _init(settings: Settings, extra: tuple[Any, ...]) -> None:
    _WORKER["settings"], _WORKER["extra"] = settings, extra


def _scan(job: tuple[int, list[Item]]) -> ChunkFacts:
    return scan(job[0], job[1], _WORKER["settings"])


def _count(job: tuple[int, list[Item]]) -> Counter[tuple[str, ...]]:
    needed, repeated = _WORKER["extra"]
    return count_phrases(job[0], job[1], _WORKER["settings"], needed, repeated)


def _map(
    function: Callable[[tuple[int, list[Item]]], Any],
    jobs: Iterator[tuple[int, list[Item]]],
    settings: Settings,
    workers: int,
    extra: tuple[Any, ...] = (),
) -> Iterator[Any]:
    if workers <= 1:
        _init(settings, extra)
        yield from map(function, jobs)
        return
    # fork: workers need no re-import of the entry point (`python -m ...`, a console
    # script or stdin all work); pages they share with this process are not copied.
    context = multiprocessing.get_context("fork")
    with context.Pool(workers, initializer=_init, initargs=(settings, extra)) as pool:
        yield from pool.imap(function, jobs)


@dataclass
class Totals:
    """Pass 1's facts of every chunk, in source order; file names kept once."""

    contamination: Contamination
    shape: Shape
    files: dict[str, int] = field(default_factory=dict)
    parts: list[ChunkFacts] = field(default_factory=list)
    file_ids: list[np.ndarray] = field(default_factory=list)
    skipped: int = 0
    skipped_examples: list[str] = field(default_factory=list)

    def add(self, facts: ChunkFacts) -> None:
        self.file_ids.append(
            np.array(
                [self.files.setdefault(f, len(self.files)) for f in facts.files], dtype=np.int64
            )
        )
        facts.files = []
        self.contamination.merge(facts.contamination)
        facts.contamination = Contamination([])
        self.shape.add(facts.shape)
        facts.shape = ShapeFacts.empty()  # merged: the chunk's texts need not stay
        self.skipped += len(facts.skipped)
        self.skipped_examples = (self.skipped_examples + facts.skipped)[:EXAMPLES]
        self.parts.append(facts)

    def column(self, name: str, empty: np.ndarray) -> np.ndarray:
        values = [getattr(part, name) for part in self.parts]
        return np.concatenate(values) if values else empty

    def take(self, name: str, empty: np.ndarray) -> np.ndarray:
        """One array of every chunk's `name`, freeing the chunks' own: at a million rows
        holding both would double the audit's largest arrays."""
        values = [getattr(part, name) for part in self.parts]
        for part in self.parts:
            setattr(part, name, empty)
        joined = np.concatenate(values) if values else empty
        del values
        return joined

    def where(self, index: int) -> str:
        """file:line of the index-th row read."""
        names = list(self.files)
        for part, ids in zip(self.parts, self.file_ids, strict=True):
            if index < len(part.positions):
                return join_where(names[int(ids[index])], int(part.lines[index]))
            index -= len(part.positions)
        raise IndexError(index)


@dataclass
class Findings:
    rows: int
    skipped: int
    skipped_examples: list[str]
    duplicates: Duplicates
    duplicate_where: dict[int, str]
    pii: Counter[str]
    pii_rows: int
    pii_examples: list[str]
    contamination: Contamination
    triggers: list[Trigger]
    lengths: np.ndarray
    empty_targets: int
    shape: Shape


def run(chunks: Chunks, settings: Settings, *, workers: int) -> Findings:
    totals = Totals(
        Contamination(list(settings.references)),
        Shape(estimated_tokens=settings.shape.tokenizer_json is None),
    )
    for facts in _map(_scan, chunks(), settings, workers):
        totals.add(facts)
    positions = totals.column("positions", np.empty(0, dtype=np.int64))
    duplicates = Duplicates.find(
        totals.take("digests", np.empty((0, 16), dtype=np.uint8)),
        totals.take("keys", np.empty((0, 32), dtype=np.uint32)),
        totals.take("bits", np.empty((0, 256), dtype=np.uint8)),
    )
    # A repeated row is a duplicate, not a pattern: triggers count distinct rows.
    repeated = np.zeros(int(positions.max()) + 1 if len(positions) else 0, dtype=bool)
    repeated[positions[duplicates.repeated]] = True
    triggers = _triggers(
        chunks, settings, totals=totals, positions=positions, repeated=repeated, workers=workers
    )
    index_of = {int(p): i for i, p in enumerate(positions)}
    pii: Counter[str] = Counter()
    pii_examples: list[str] = []
    for part in totals.parts:
        for position, kinds in part.pii:
            pii.update(kinds)
            if len(pii_examples) < EXAMPLES:
                pii_examples.append(f"{totals.where(index_of[position])} ({', '.join(kinds)})")
    shown = {i for pair in duplicates.exact_examples + duplicates.near_examples for i in pair}
    return Findings(
        rows=len(positions),
        skipped=totals.skipped,
        skipped_examples=totals.skipped_examples,
        duplicates=duplicates,
        duplicate_where={i: totals.where(i) for i in shown},
        pii=pii,
        pii_rows=sum(len(part.pii) for part in totals.parts),
        pii_examples=pii_examples,
        contamination=totals.contamination,
        triggers=triggers,
        lengths=totals.column("lengths", np.empty(0, dtype=np.int64)),
        empty_targets=sum(part.empty_targets for part in totals.parts),
        shape=totals.shape,
    )


def _triggers(
    chunks: Chunks,
    settings: Settings,
    *,
    totals: Totals,
    positions: np.ndarray,
    repeated: np.ndarray,
    workers: int,
) -> list[Trigger]:
    distinct_rows = int(len(positions) - repeated.sum())
    keys = totals.column("feature_keys", np.empty(0, dtype=np.uint64))
    owners = totals.column("feature_owners", np.empty(0, dtype=np.int64))
    if len(owners):
        keep = ~repeated[owners]
        keys, owners = keys[keep], owners[keep]
    feature_rows = candidate_features(keys, owners, distinct_rows)
    if not feature_rows:
        return []
    wanted = {int(p) for rows in feature_rows.values() for p in rows}
    suspects: dict[int, AuditRow] = {}
    for start, items in chunks():  # pass 2: only the rows showing a rare behaviour
        for offset, item in enumerate(items):
            if start + offset in wanted:
                row = read_row(item, settings.row_format)
                if isinstance(row, AuditRow):
                    suspects[start + offset] = row
    found = Suspects.of(feature_rows, suspects)
    needed = frozenset(found.needed)
    if not needed:
        return []
    phrase_rows: Counter[tuple[str, ...]] = Counter()
    for counts in _map(_count, chunks(), settings, workers, (needed, repeated)):
        phrase_rows.update(counts)
    return found.triggers(phrase_rows, distinct_rows)
