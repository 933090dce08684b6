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
from dataclasses import dataclass, field

from rensa import RMinHash, RMinHashLSH

from tunegate_trainer.audit.text import normalised, words

THRESHOLD = 0.8
NUM_PERM = 256
# A MinHash estimate has a standard error of sqrt(J(1-J)/NUM_PERM), 0.025 at the
# threshold; accepting estimates down to two of them finds about 98% of the pairs at the
# threshold instead of half.
ACCEPT = THRESHOLD - 2 * math.sqrt(THRESHOLD * (1 - THRESHOLD) / NUM_PERM)
# 32 bands of 8 rows: a pair at the threshold becomes a candidate with probability
# 1 - (1 - 0.8**8)**32 > 0.997; candidates are then checked against the threshold.
BANDS = 32
SEED = 1
EXAMPLES = 3


def shingles(text: str) -> list[str]:
    return sorted(set(words(text))) or [""]


@dataclass
class DuplicateFinder:
    """Rows are offered one at a time; each is an exact duplicate, a near duplicate of
    an earlier row, or new. Memory: a digest and a signature per distinct row."""

    exact: int = 0
    near: int = 0
    # (row, the earlier row it repeats), a few of each
    exact_examples: list[tuple[str, str]] = field(default_factory=list)
    near_examples: list[tuple[str, str]] = field(default_factory=list)
    _digests: dict[bytes, str] = field(default_factory=dict)
    _signatures: list[RMinHash] = field(default_factory=list)
    _where: list[str] = field(default_factory=list)
    _lsh: RMinHashLSH = field(
        default_factory=lambda: RMinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM, num_bands=BANDS)
    )

    def offer(self, where: str, text: str) -> None:
        digest = hashlib.blake2b(normalised(text).encode(), digest_size=16).digest()
        if digest in self._digests:
            self.exact += 1
            if len(self.exact_examples) < EXAMPLES:
                self.exact_examples.append((where, self._digests[digest]))
            return
        self._digests[digest] = where
        signature = RMinHash(num_perm=NUM_PERM, seed=SEED)
        signature.update(shingles(text))
        for key in self._lsh.query(signature):
            if signature.jaccard(self._signatures[key]) >= ACCEPT:
                self.near += 1
                if len(self.near_examples) < EXAMPLES:
                    self.near_examples.append((where, self._where[key]))
                return
        self._lsh.insert(len(self._signatures), signature)
        self._signatures.append(signature)
        self._where.append(where)


def duplicates(texts: Sequence[str]) -> tuple[int, int]:
    """(exact duplicate rows, near-duplicate rows), each counting rows beyond the first."""
    finder = DuplicateFinder()
    for index, text in enumerate(texts):
        finder.offer(str(index), text)
    return finder.exact, finder.near
