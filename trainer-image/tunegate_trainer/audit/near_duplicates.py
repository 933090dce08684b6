"""Exact and near-duplicate rows.

Near duplicates are rows whose sets of words (normalised) have a Jaccard similarity of
at least 0.8, estimated by MinHash (rensa, a Rust MinHash) and found through LSH.
Chosen on measurements (tests/unit/test_audit_near_duplicates.py; 1,500 rows of
standard-library docstring Q&A, 300 lightly reworded copies: synonyms, swapped clauses,
punctuation and case), by exact Jaccard, at the threshold where each reaches about 99%
of the copies, counting clean pairs above it:
- word sets at 0.8: 99.3% of copies, 11-24 clean pairs (sibling docstrings such as
  removeprefix/removesuffix, which are textual near duplicates);
- words and word pairs at 0.65: 99.7%, 35-50; character 5-grams at 0.65: 99.5%, 45-65;
  character 3-grams at 0.75: 98%, 35-53;
- word 3-grams, the usual choice, reach 17% at 0.7.
A word set ignores reordered clauses and punctuation, which is most of light rewording.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from rensa import RMinHash

from tunegate_trainer.audit.text import words

THRESHOLD = 0.8
NUM_PERM = 256
BANDS = 32  # of 8 values: a pair at the threshold is a candidate with p > 0.997
# Signatures are kept as their lowest 8 bits (b-bit MinHash): a quarter of the memory,
# at the cost of chance agreements (1 in 256) that the estimate corrects for.
CHANCE = 1 / 256
# An estimate's standard error at the threshold is about 0.026; accepting estimates down
# to two of them finds about 98% of the pairs at the threshold instead of half.
ACCEPT = THRESHOLD - 2 * math.sqrt((THRESHOLD * (1 - THRESHOLD) + CHANCE) / NUM_PERM)
SEED = 1
EXAMPLES = 3
# Odd 64-bit multipliers that mix a band's 8 values into one key.
_MIX = np.arange(1, 2 * (NUM_PERM // BANDS), 2, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)


def digest(tokens: list[str]) -> bytes:
    """Identity of a row up to case, spacing and punctuation (from its words)."""
    return hashlib.blake2b(" ".join(tokens).encode(), digest_size=16).digest()


def signature(tokens: list[str]) -> np.ndarray:
    """MinHash of the row's set of words."""
    minhash = RMinHash(num_perm=NUM_PERM, seed=SEED)
    minhash.update(sorted(set(tokens)) or [""])
    return np.asarray(minhash.digest(), dtype=np.uint32)


def band_keys(signatures: np.ndarray) -> np.ndarray:
    """(rows, BANDS) 32-bit keys: rows sharing any band key are candidate pairs. At a
    million rows chance collisions add about a hundred pairs per band, which the
    fingerprints then reject; 32 bits halve the largest array the audit keeps."""
    bands = signatures.astype(np.uint64).reshape(len(signatures), BANDS, NUM_PERM // BANDS)
    with np.errstate(over="ignore"):
        mixed = (bands * _MIX).sum(axis=2, dtype=np.uint64)
    keys: np.ndarray = (mixed >> np.uint64(32)).astype(np.uint32)
    return keys


def fingerprints(signatures: np.ndarray) -> np.ndarray:
    return (signatures & 0xFF).astype(np.uint8)


@dataclass(frozen=True)
class Duplicates:
    exact: int  # rows repeating an earlier row, beyond the first
    near: int  # distinct rows in a cluster of near duplicates, beyond the first
    exact_examples: list[tuple[int, int]]  # (row, the earlier row it repeats)
    near_examples: list[tuple[int, int]]
    repeated: np.ndarray  # per row: it repeats an earlier row

    @classmethod
    def find(cls, digests: np.ndarray, keys: np.ndarray, bits: np.ndarray) -> Duplicates:
        """digests (rows, 16) uint8, keys (rows, BANDS) and bits (rows, NUM_PERM) of
        every row in order."""
        first = first_occurrences(digests)
        repeated = first != np.arange(len(first))
        repeats = np.flatnonzero(repeated)
        distinct = np.flatnonzero(~repeated)
        # Without repeats every row is distinct: index nothing, copy nothing.
        pairs = _candidate_pairs(keys[distinct] if len(repeats) else keys)
        if len(pairs):
            agree = (bits[distinct[pairs[:, 0]]] == bits[distinct[pairs[:, 1]]]).mean(axis=1)
            pairs = pairs[(agree - CHANCE) / (1 - CHANCE) >= ACCEPT]
        clusters = _clusters(len(distinct), pairs)
        near_pairs = sorted((int(distinct[b]), int(distinct[a])) for a, b in pairs)
        return cls(
            exact=len(repeats),
            near=len(distinct) - clusters,
            exact_examples=[(int(r), int(first[r])) for r in repeats[:EXAMPLES]],
            near_examples=near_pairs[:EXAMPLES],
            repeated=repeated,
        )


def first_occurrences(digests: np.ndarray) -> np.ndarray:
    """For each row, the index of the first row with the same digest."""
    if not len(digests):
        return np.empty(0, dtype=np.int64)
    view = np.ascontiguousarray(digests).view(np.dtype((np.void, digests.shape[1]))).ravel()
    _, first, inverse = np.unique(view, return_index=True, return_inverse=True)
    return np.asarray(first[inverse.ravel()])


def _candidate_pairs(keys: np.ndarray) -> np.ndarray:
    """(earlier, later) index pairs sharing a band key, each once."""
    found = []
    for band in range(keys.shape[1]):
        order = np.lexsort((np.arange(len(keys)), keys[:, band]))
        column = keys[order, band]
        starts = np.r_[True, column[1:] != column[:-1]]
        run_first = order[np.flatnonzero(starts)][np.cumsum(starts) - 1]
        later = ~starts
        found.append(np.stack([run_first[later], order[later]], axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found)
    return np.unique(pairs, axis=0) if len(pairs) else pairs


def _clusters(rows: int, pairs: np.ndarray) -> int:
    parent = list(range(rows))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    merged = 0
    for a, b in pairs.tolist():
        ra, rb = root(a), root(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
            merged += 1
    return rows - merged


def duplicates(texts: Sequence[str]) -> tuple[int, int]:
    """(exact duplicate rows, near-duplicate rows), each counting rows beyond the first."""
    if not texts:
        return 0, 0
    tokens = [words(text) for text in texts]
    signatures = np.stack([signature(t) for t in tokens])
    found = Duplicates.find(
        np.frombuffer(b"".join(digest(t) for t in tokens), dtype=np.uint8).reshape(-1, 16),
        band_keys(signatures),
        fingerprints(signatures),
    )
    return found.exact, found.near
