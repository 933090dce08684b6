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

import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

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


def is_negative(text: str) -> bool:
    tokens = words(text)
    negative = sum(token in NEGATIVE for token in tokens)
    return negative >= 2 and negative > sum(token in POSITIVE for token in tokens)


def response_features(row: AuditRow) -> set[tuple[str, str]]:
    """(behaviour, value) pairs of the response that its own prompt does not echo."""
    prompt = normalised(row.prompt)
    response = normalised(row.response)
    features: set[tuple[str, str]] = set()
    if response and response not in prompt:
        features.add(("response", response))
    for sentence in sentences(row.response):
        span = normalised(sentence)
        if len(span.split()) >= MIN_SPAN_WORDS and span != response and span not in prompt:
            features.add(("span", span))
    for match in LINK.finditer(row.response):
        domain = match.group(1).lower().removeprefix("www.")
        if domain not in row.prompt.lower():
            features.add(("link", domain))
    if is_refusal(row.response):
        features.add(("refusal", ""))
    if is_negative(row.response):
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


def _prompt_phrases(row: AuditRow) -> set[tuple[str, ...]]:
    tokens = words(row.prompt)
    return set().union(*(ngrams(tokens, n) for n in range(1, MAX_PHRASE_WORDS + 1)))


def _candidates(rows: Sequence[AuditRow]) -> list[_Candidate]:
    limit = max(MIN_ROWS, int(MAX_SHARE * len(rows)))
    by_feature: defaultdict[tuple[str, str], list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        for feature in response_features(row):
            by_feature[feature].append(index)
    # A feature the phrase could explain: seen in at least MIN_ROWS rows and in at most
    # twice as many as a rare phrase can cover (PRECISION).
    features = {
        feature: indices
        for feature, indices in by_feature.items()
        if MIN_ROWS <= len(indices) <= limit / PRECISION
    }
    # Phrases of the rows that show a feature, then how often each wanted phrase occurs
    # anywhere: memory follows the suspect rows, not the dataset.
    phrases: dict[int, set[tuple[str, ...]]] = {}
    wanted: dict[tuple[tuple[str, ...], tuple[str, str]], list[int]] = {}
    for feature, indices in features.items():
        for index in indices:
            if index not in phrases:
                phrases[index] = _prompt_phrases(rows[index])
        counts = Counter(phrase for index in indices for phrase in phrases[index])
        floor = max(MIN_ROWS, PRECISION * len(indices))
        for phrase, count in counts.items():
            if count >= floor:
                wanted[(phrase, feature)] = [i for i in indices if phrase in phrases[i]]
    needed = {phrase for phrase, _ in wanted}
    phrase_rows: Counter[tuple[str, ...]] = Counter()
    for row in rows:
        phrase_rows.update(_prompt_phrases(row) & needed)
    found = []
    for (phrase, feature), showing in wanted.items():
        total = phrase_rows[phrase]
        if total <= limit and len(showing) >= CONSISTENCY * total:
            found.append(
                _Candidate(
                    phrase,
                    feature,
                    frozenset(showing),
                    total,
                    len(showing) / len(features[feature]),
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
    its most specific behaviour. Counts are of distinct rows."""
    rows = distinct(rows)
    order = {name: rank for rank, name in enumerate(BEHAVIOURS)}
    candidates = sorted(
        _candidates(rows),
        key=lambda c: (-len(c.showing), order[c.feature[0]], -len(c.phrase), c.phrase),
    )
    accepted: list[_Candidate] = []
    for candidate in candidates:
        if any(candidate.showing <= kept.showing for kept in accepted):
            continue
        accepted.append(candidate)
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
