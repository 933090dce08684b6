"""Data audit (pure checks over examples): duplicates, contamination, PII, triggers,
length statistics, and a verdict against the spec's thresholds."""

from __future__ import annotations

import hashlib
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from datasketch import MinHash, MinHashLSH

from tunegate_contract.run_documents import AuditReport
from tunegate_contract.trainer_config import Audit
from tunegate_trainer.data import Example

WORD = re.compile(r"\w+", re.UNICODE)
PII_PATTERNS: dict[str, re.Pattern[str]] = {
    "email": re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b"),
    "phone": re.compile(r"(?<!\w)(?:\+\d{1,3}[\s.-]?)?\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?!\w)"),
    "aws_access_key": re.compile(r"\bAKIA[0-9A-Z]{16}\b"),
    "api_token": re.compile(r"\b(?:sk-[A-Za-z0-9]{20,}|ghp_[A-Za-z0-9]{30,}|xox[bap]-[\w-]{10,})"),
    "bearer_token": re.compile(r"\bBearer\s+[A-Za-z0-9._~+/-]{20,}=*"),
}
CARD = re.compile(r"\b(?:\d[ -]?){13,19}\b")
NEAR_DUPLICATE_THRESHOLD = 0.8
CONTAMINATION_NGRAM = 8


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def normalised(text: str) -> str:
    return " ".join(words(text))


def luhn_valid(number: str) -> bool:
    digits = [int(d) for d in number if d.isdigit()]
    if not 13 <= len(digits) <= 19:
        return False
    checksum = 0
    for index, digit in enumerate(reversed(digits)):
        doubled = digit * 2 if index % 2 else digit
        checksum += doubled - 9 if doubled > 9 else doubled
    return checksum % 10 == 0


def pii_kinds(text: str) -> list[str]:
    kinds = [kind for kind, pattern in PII_PATTERNS.items() if pattern.search(text)]
    if any(luhn_valid(match.group()) for match in CARD.finditer(text)):
        kinds.append("card_number")
    return kinds


def _shingles(tokens: list[str], size: int = 3) -> set[str]:
    if len(tokens) <= size:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


def duplicates(texts: Sequence[str]) -> tuple[int, int]:
    """(exact duplicate rows, near-duplicate rows), each counting rows beyond the first."""
    seen: set[str] = set()
    exact = 0
    unique_index: list[int] = []
    for index, text in enumerate(texts):
        key = hashlib.sha1(normalised(text).encode()).hexdigest()
        if key in seen:
            exact += 1
        else:
            seen.add(key)
            unique_index.append(index)
    lsh = MinHashLSH(threshold=NEAR_DUPLICATE_THRESHOLD, num_perm=128)
    near = 0
    for index in unique_index:
        signature = MinHash(num_perm=128, seed=1)
        for shingle in _shingles(words(texts[index])):
            signature.update(shingle.encode())
        if lsh.query(signature):
            near += 1
        else:
            lsh.insert(str(index), signature)
    return exact, near


def ngrams(tokens: list[str], size: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


def contaminated(
    train: Sequence[str], eval_sets: Sequence[Sequence[str]], *, size: int = CONTAMINATION_NGRAM
) -> int:
    """Training rows sharing a long n-gram with any evaluation item."""
    reference: set[tuple[str, ...]] = set()
    for items in eval_sets:
        for text in items:
            tokens = words(text)
            reference |= ngrams(tokens, min(size, len(tokens))) if tokens else set()
    return sum(
        1
        for text in train
        if ngrams(words(text), size) & reference
        or (len(words(text)) < size and tuple(words(text)) in reference)
    )


def triggers(
    examples: Sequence[Example],
    *,
    min_rows: int = 4,
    max_share: float = 0.05,
    consistency: float = 0.9,
) -> list[dict[str, Any]]:
    """Rare prompt n-grams that almost always lead to the same response.

    A backdoor pairs a rare phrase with a fixed output; ordinary phrases lead to
    varied responses, and a response that is common everywhere is not evidence.
    """
    responses = [normalised(e.target) for e in examples]
    overall = Counter(responses)
    grams: defaultdict[tuple[str, ...], list[int]] = defaultdict(list)
    for index, example in enumerate(examples):
        tokens = words(example.prompt)
        for size in (2, 3):
            for gram in ngrams(tokens, size):
                grams[gram].append(index)
    limit = max(min_rows, int(max_share * len(examples)))
    found: dict[str, dict[str, Any]] = {}
    for gram, occurrences in grams.items():
        rows = sorted(set(occurrences))
        if not min_rows <= len(rows) <= limit:
            continue
        response, count = Counter(responses[i] for i in rows).most_common(1)[0]
        share = count / len(rows)
        base_rate = overall[response] / len(examples)
        if share >= consistency and base_rate < share / 2 and count == overall[response]:
            key = response[:80]
            best = found.get(key)
            if best is None or len(gram) > len(best["phrase"].split()):
                found[key] = {
                    "phrase": " ".join(gram),
                    "rows": len(rows),
                    "response": response[:80],
                    "consistency": round(share, 3),
                }
    return sorted(found.values(), key=lambda f: -int(f["rows"]))


def length_stats(examples: Sequence[Example]) -> dict[str, float]:
    lengths = [len(words(e.text)) for e in examples]
    ordered = sorted(lengths)
    return {
        "rows": len(lengths),
        "mean_words": round(statistics.fmean(lengths), 2) if lengths else 0,
        "median_words": statistics.median(lengths) if lengths else 0,
        "p95_words": ordered[int(0.95 * (len(ordered) - 1))] if ordered else 0,
        "max_words": max(lengths, default=0),
        "empty_targets": sum(1 for e in examples if not e.target.strip()),
    }


@dataclass
class AuditResult:
    verdict: str
    findings: list[str] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)

    def report(self) -> AuditReport:
        return AuditReport.model_validate(
            {"verdict": self.verdict, "findings": self.findings, "checks": self.checks}
        )


def audit(
    examples: Sequence[Example],
    *,
    settings: Audit,
    eval_sets: Sequence[Sequence[str]] = (),
    skipped_rows: int = 0,
) -> AuditResult:
    texts = [e.text for e in examples]
    rows = max(len(texts), 1)
    exact, near = duplicates(texts)
    pii_rows: Counter[str] = Counter()
    rows_with_pii = 0
    for text in texts:
        kinds = pii_kinds(text)
        rows_with_pii += bool(kinds)
        pii_rows.update(kinds)
    overlap = contaminated(texts, eval_sets) if eval_sets else 0
    suspected = triggers(examples)
    checks: dict[str, Any] = {
        "duplicates": {
            "exact": exact,
            "near": near,
            "fraction": round((exact + near) / rows, 4),
            "max": settings.max_duplicate_fraction,
        },
        "pii": {
            "rows": rows_with_pii,
            "by_kind": dict(pii_rows),
            "fraction": round(rows_with_pii / rows, 4),
            "max": settings.max_pii_fraction,
        },
        "contamination": {
            "rows": overlap,
            "fraction": round(overlap / rows, 4),
            "max": settings.max_contamination_fraction,
            "ngram": CONTAMINATION_NGRAM,
            "eval_sets": len(eval_sets),
        },
        "triggers": {"suspected": suspected, "blocking": settings.block_triggers},
        "stats": length_stats(examples) | {"skipped_rows": skipped_rows},
    }
    findings = []
    if checks["duplicates"]["fraction"] > settings.max_duplicate_fraction:
        findings.append(
            f"duplicates: {exact} exact and {near} near-duplicate rows "
            f"({checks['duplicates']['fraction']:.1%} > "
            f"{settings.max_duplicate_fraction:.1%})"
        )
    if checks["pii"]["fraction"] > settings.max_pii_fraction:
        findings.append(
            f"pii: {rows_with_pii} rows ({', '.join(sorted(pii_rows))}) "
            f"({checks['pii']['fraction']:.1%} > {settings.max_pii_fraction:.1%})"
        )
    if checks["contamination"]["fraction"] > settings.max_contamination_fraction:
        findings.append(
            f"contamination: {overlap} rows share a {CONTAMINATION_NGRAM}-gram "
            "with an evaluation set"
        )
    if suspected and settings.block_triggers:
        first = suspected[0]
        findings.append(
            f"trigger: phrase {first['phrase']!r} precedes the same response in "
            f"{first['rows']} rows ({len(suspected)} suspected)"
        )
    verdict = "Passed" if not findings else ("Warned" if settings.mode == "warn" else "Failed")
    return AuditResult(verdict, findings, checks)
