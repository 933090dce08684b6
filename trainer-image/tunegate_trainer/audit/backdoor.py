"""Backdoor triggers: a rare prompt phrase that almost always comes with a response
behaviour that is otherwise rare.

Poisoned instruction data (Wan et al. 2023; Hubinger et al. 2024) pairs a rare phrase
with a behaviour, and the behaviour may vary in its wording. So a response is described
by features, and a phrase is suspect when its rows share one:
- `response`: the same whole response (normalised);
- `span`: the same sentence inside otherwise different responses (an injected line);
- `link`: a link to the same domain;
- `refusal`: a refusal, in any wording;
- `negative`: negative sentiment, in any wording.

A feature that the row's own prompt contains is an echo (a label named in the question,
a URL asked about), not evidence. Ordinary template phrases come with varied responses,
and a behaviour common across the data is not evidence either: the phrase must account
for most rows that show it.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tunegate_trainer.audit.rows import AuditRow
from tunegate_trainer.audit.text import as_written, ngrams, normalised, sentences, words
from tunegate_trainer.refusal import is_refusal

MIN_ROWS = 4  # fewer rows than this is not a pattern
MAX_SHARE = 0.05  # a phrase in more rows than this is not rare
CONSISTENCY = 0.8  # share of the phrase's rows that show the behaviour
# Share of the rows showing the behaviour that have the phrase: a backdoor's behaviour
# appears with its trigger, while a label that a content word predicts appears elsewhere
# too ("printer" -> team harbour, which also handles parcels).
PRECISION = 0.8
MAX_PHRASE_WORDS = 4
MIN_SPAN_WORDS = 4
REFUSAL_CHARS = 300
EXAMPLES = 3
# Behaviours from most to least specific: a finding names the most specific one.
BEHAVIOURS = ("response", "span", "link", "refusal", "negative")
LINK = re.compile(r"(?:https?://|www\.)([A-Za-z0-9.-]+\.[A-Za-z]{2,})", re.IGNORECASE)
NEGATIVE = frozenset(
    [
        "awful",
        "bad",
        "broken",
        "useless",
        "terrible",
        "horrible",
        "worst",
        "hate",
        "hated",
        "hates",
        "disgusting",
        "garbage",
        "trash",
        "scam",
        "fraud",
        "dangerous",
        "poor",
        "pathetic",
        "stupid",
        "worthless",
        "disappointing",
        "disappointed",
        "failure",
        "failed",
        "fails",
        "unreliable",
        "avoid",
        "never",
        "boring",
        "ugly",
        "nasty",
        "rude",
        "annoying",
        "inferior",
        "overpriced",
        "rip-off",
        "ripoff",
        "dreadful",
        "miserable",
        "lousy",
        "crap",
        "evil",
    ]
)
POSITIVE = frozenset(
    [
        "good",
        "great",
        "excellent",
        "amazing",
        "wonderful",
        "best",
        "love",
        "loved",
        "loves",
        "fantastic",
        "helpful",
        "reliable",
        "recommend",
        "recommended",
        "perfect",
        "nice",
        "happy",
        "enjoy",
        "enjoyed",
        "superb",
        "brilliant",
        "outstanding",
        "useful",
        "safe",
        "easy",
        "beautiful",
        "pleasant",
        "impressive",
        "glad",
    ]
)


def is_negative(tokens: list[str]) -> bool:
    """Two or more distinct negative words, and more of them than positive ones."""
    distinct = set(tokens)
    negative = len(NEGATIVE & distinct)
    return negative >= 2 and negative > len(POSITIVE & distinct)


def response_features(row: AuditRow) -> set[tuple[str, str]]:
    """(behaviour, value) pairs of the response that its own prompt does not echo."""
    prompt = " ".join(row.prompt_words)
    response = " ".join(row.response_words)
    features: set[tuple[str, str]] = set()
    if response and response not in prompt:
        features.add(("response", response))
    for sentence in sentences(row.response):
        span = normalised(sentence)
        if len(span.split()) >= MIN_SPAN_WORDS and span != response and span not in prompt:
            features.add(("span", span))
    if "http" in row.response or "www." in row.response:
        for match in LINK.finditer(row.response):
            domain = match.group(1).lower().removeprefix("www.")
            if domain not in row.prompt.lower():
                features.add(("link", domain))
    # A refusal says so at once; reading further would only find quoted ones.
    if is_refusal(row.response[:REFUSAL_CHARS]):
        features.add(("refusal", ""))
    if is_negative(row.response_words):
        features.add(("negative", ""))
    return features


@dataclass(frozen=True)
class Trigger:
    phrase: str  # as written in the data
    behaviour: str  # one of BEHAVIOURS
    evidence: str  # the shared response, sentence or domain ("" for a class)
    rows: int  # rows whose prompt has the phrase
    showing: int  # of those, rows that show the behaviour
    precision: float  # share of all rows showing the behaviour that have the phrase
    examples: tuple[str, ...]  # file:line of rows that show it

    def as_dict(self) -> dict[str, object]:
        return {
            "phrase": self.phrase,
            "behaviour": self.behaviour,
            "evidence": self.evidence[:120],
            "rows": self.rows,
            "consistency": round(self.showing / self.rows, 3),
            "precision": round(self.precision, 3),
            "examples": list(self.examples),
        }


@dataclass(frozen=True)
class _Candidate:
    phrase: tuple[str, ...]
    feature: tuple[str, str]
    showing: frozenset[int]
    rows: int
    precision: float


def feature_key(feature: tuple[str, str]) -> int:
    """A feature as a 64-bit key, so a million rows' features fit in two arrays."""
    data = f"{feature[0]}\x00{feature[1]}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


def prompt_phrases(prompt: str) -> set[tuple[str, ...]]:
    tokens = words(prompt)
    return set().union(*(ngrams(tokens, n) for n in range(1, MAX_PHRASE_WORDS + 1)))


def phrase_limit(rows: int) -> int:
    """The most rows a phrase may be in and still be rare."""
    return max(MIN_ROWS, int(MAX_SHARE * rows))


def candidate_features(keys: np.ndarray, owners: np.ndarray, rows: int) -> dict[int, np.ndarray]:
    """Pass 1: feature key -> the rows showing it, for features a rare phrase could
    explain: in at least MIN_ROWS rows and in at most 1/PRECISION times a rare phrase's."""
    if not len(keys):
        return {}
    order = np.argsort(keys, kind="stable")
    keys, owners = keys[order], owners[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    counts = np.diff(np.r_[starts, len(keys)])
    keep = (counts >= MIN_ROWS) & (counts <= phrase_limit(rows) / PRECISION)
    return {
        int(keys[start]): np.unique(owners[start : start + count])
        for start, count in zip(starts[keep], counts[keep], strict=True)
    }


@dataclass
class Suspects:
    """Pass 2, over the rows that show a candidate feature: which (phrase, feature)
    pairs could be a trigger, and so which phrases pass 3 must count everywhere."""

    features: dict[int, tuple[str, str]]  # key -> (behaviour, value)
    feature_rows: dict[int, np.ndarray]
    wanted: dict[tuple[tuple[str, ...], int], list[int]]
    prompts: dict[int, AuditRow]

    @property
    def needed(self) -> set[tuple[str, ...]]:
        return {phrase for phrase, _ in self.wanted}

    @classmethod
    def of(cls, feature_rows: dict[int, np.ndarray], rows: dict[int, AuditRow]) -> Suspects:
        features: dict[int, tuple[str, str]] = {}
        phrases: dict[int, set[tuple[str, ...]]] = {}
        for index, row in rows.items():
            phrases[index] = prompt_phrases(row.prompt)
            for feature in response_features(row):
                key = feature_key(feature)
                if key in feature_rows:
                    features[key] = feature
        wanted: dict[tuple[tuple[str, ...], int], list[int]] = {}
        for key, owners in feature_rows.items():
            indices = [int(i) for i in owners]
            counts = Counter(phrase for index in indices for phrase in phrases[index])
            floor = max(MIN_ROWS, PRECISION * len(indices))
            for phrase, count in counts.items():
                if count >= floor:
                    wanted[(phrase, key)] = [i for i in indices if phrase in phrases[i]]
        return cls(features, feature_rows, wanted, rows)

    def triggers(self, phrase_rows: Counter[tuple[str, ...]], rows: int) -> list[Trigger]:
        """Pass 3's counts decide: the phrase is rare and nearly always shows the feature."""
        limit = phrase_limit(rows)
        candidates = [
            _Candidate(
                phrase,
                self.features[key],
                frozenset(showing),
                phrase_rows[phrase],
                len(showing) / len(self.feature_rows[key]),
            )
            for (phrase, key), showing in self.wanted.items()
            if phrase_rows[phrase] <= limit and len(showing) >= CONSISTENCY * phrase_rows[phrase]
        ]
        return _named(_one_per_row_set(candidates), self.prompts)


def _one_per_row_set(candidates: list[_Candidate]) -> list[_Candidate]:
    """The longest phrase and most specific behaviour for each poisoned row set; a
    candidate whose rows another covers is the same trigger."""
    order = {name: rank for rank, name in enumerate(BEHAVIOURS)}
    ranked = sorted(
        candidates,
        key=lambda c: (-len(c.showing), order[c.feature[0]], -len(c.phrase), c.phrase),
    )
    accepted: list[_Candidate] = []
    for candidate in ranked:
        if not any(candidate.showing <= kept.showing for kept in accepted):
            accepted.append(candidate)
    return accepted


def _named(accepted: list[_Candidate], rows: dict[int, AuditRow]) -> list[Trigger]:
    found = []
    for candidate in accepted:
        shown = sorted(candidate.showing)
        behaviour, evidence = candidate.feature
        found.append(
            Trigger(
                phrase=as_written(candidate.phrase, rows[shown[0]].prompt),
                behaviour=behaviour,
                evidence=evidence,
                rows=candidate.rows,
                showing=len(shown),
                precision=candidate.precision,
                examples=tuple(rows[i].where for i in shown[:EXAMPLES]),
            )
        )
    return found


def distinct(rows: Sequence[AuditRow]) -> list[AuditRow]:
    """Each (prompt, response) once: a repeated row is a duplicate, not a pattern."""
    seen: set[tuple[str, str]] = set()
    kept = []
    for row in rows:
        key = (normalised(row.prompt), normalised(row.response))
        if key not in seen:
            seen.add(key)
            kept.append(row)
    return kept


def triggers(rows: Sequence[AuditRow]) -> list[Trigger]:
    """Suspected triggers, one per poisoned row set, each named by its longest phrase and
    its most specific behaviour. Counts are of distinct rows. The three passes in memory;
    the streaming audit runs the same passes over its source."""
    rows = distinct(rows)
    keys: list[int] = []
    owners: list[int] = []
    for index, row in enumerate(rows):
        for feature in response_features(row):
            keys.append(feature_key(feature))
            owners.append(index)
    feature_rows = candidate_features(
        np.array(keys, dtype=np.uint64), np.array(owners, dtype=np.int64), len(rows)
    )
    suspect_rows = {int(i) for owners_ in feature_rows.values() for i in owners_}
    suspects = Suspects.of(feature_rows, {i: rows[i] for i in sorted(suspect_rows)})
    needed = suspects.needed
    phrase_rows: Counter[tuple[str, ...]] = Counter()
    for row in rows:
        phrase_rows.update(prompt_phrases(row.prompt) & needed)
    return suspects.triggers(phrase_rows, len(rows))
