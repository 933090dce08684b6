"""The shape of the data, beside its hazards: what made past fine-tunes overfit a
phrasing or lose a skill. Response-template dominance, label balance of
classification-like data, length in tokens against maxSeqLength, language mix, and the
replay share the trainer will reach."""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tunegate_contract.trainer_config import Distribution
from tunegate_trainer.audit.rows import AuditRow

OPENING_WORDS = 3
LABEL_WORDS = 3  # a response this short is a label
LABELS_AT_MOST = 50  # more distinct short answers than this is not a label set
LABELLED_SHARE = 0.9  # classification-like: this share of rows answer with a label
TEXTS_KEPT = 100_000  # openings whose text is kept for the report (the first seen)
LANGUAGE_FIRST_ROWS = 5000  # language of these rows, then of 1 in LANGUAGE_EVERY
LANGUAGE_EVERY = 32
WORDS_PER_TOKEN_ESTIMATE = 1.3  # used when no tokenizer could be read


@dataclass(frozen=True)
class Inputs:
    """What the shape is judged against: the run's settings."""

    max_seq_length: int = 2048
    tokenizer_json: str | None = None  # the base model's tokenizer.json, when readable
    replay_rows: int | None = None
    replay_ratio: float = 0.0


def opening(row: AuditRow) -> str | None:
    """A response's first words; text rows (no prompt) have no response to judge."""
    words = row.response_words
    if not row.prompt or len(words) <= OPENING_WORDS:
        return None
    return " ".join(words[:OPENING_WORDS])


def label(row: AuditRow) -> str | None:
    words = row.response_words
    return " ".join(words) if row.prompt and 0 < len(words) <= LABEL_WORDS else None


def key_of(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def sampled_for_language(position: int) -> bool:
    return position < LANGUAGE_FIRST_ROWS or position % LANGUAGE_EVERY == 0


class TokenCounter:
    """Tokens of each rendered row, by the model's own tokenizer when it is known."""

    def __init__(self, tokenizer_json: str | None) -> None:
        self.tokenizer: Any = None
        if tokenizer_json:
            from tokenizers import Tokenizer

            self.tokenizer = Tokenizer.from_str(tokenizer_json)

    @property
    def estimated(self) -> bool:
        return self.tokenizer is None

    def lengths(self, rows: list[AuditRow]) -> np.ndarray:
        if self.tokenizer is None:
            return np.array(
                [round(len(row.words) * WORDS_PER_TOKEN_ESTIMATE) for row in rows], dtype=np.int64
            )
        encoded = self.tokenizer.encode_batch(
            [row.rendered or row.text for row in rows], add_special_tokens=False
        )
        return np.array([len(e.ids) for e in encoded], dtype=np.int64)


def language(text: str) -> str:
    import py3langid

    code, _ = py3langid.classify(text[:1000])
    return str(code)


@dataclass
class ShapeFacts:
    """One chunk's contribution."""

    opening_keys: np.ndarray
    opening_texts: dict[int, str]
    labels: Counter[str]
    tokens: np.ndarray
    languages: Counter[str]

    @classmethod
    def empty(cls) -> ShapeFacts:
        return cls(np.empty(0, np.uint64), {}, Counter(), np.empty(0, np.int64), Counter())


def chunk_facts(rows: list[tuple[int, AuditRow]], counter: TokenCounter) -> ShapeFacts:
    openings = [(key_of(text), text) for _, row in rows if (text := opening(row))]
    labels = Counter(text for _, row in rows if (text := label(row)))
    return ShapeFacts(
        opening_keys=np.array([key for key, _ in openings], dtype=np.uint64),
        opening_texts=dict(openings),
        labels=labels,
        tokens=counter.lengths([row for _, row in rows]),
        languages=Counter(
            language(row.text) for position, row in rows if sampled_for_language(position)
        ),
    )


@dataclass
class Shape:
    """All chunks' facts, merged in the parent."""

    estimated_tokens: bool
    opening_keys: list[np.ndarray] = field(default_factory=list)
    opening_texts: dict[int, str] = field(default_factory=dict)
    labels: Counter[str] = field(default_factory=Counter)
    tokens: list[np.ndarray] = field(default_factory=list)
    languages: Counter[str] = field(default_factory=Counter)

    def add(self, facts: ShapeFacts) -> None:
        self.opening_keys.append(facts.opening_keys)
        for key, text in facts.opening_texts.items():
            if len(self.opening_texts) < TEXTS_KEPT:
                self.opening_texts.setdefault(key, text)
        if len(self.labels) <= LABELS_AT_MOST:  # beyond it there is no label set to judge
            self.labels.update(facts.labels)
        self.tokens.append(facts.tokens)
        self.languages.update(facts.languages)

    def checks(
        self, rows: int, inputs: Inputs, limits: Distribution | None
    ) -> tuple[dict[str, Any], list[str]]:
        """The report's `shape` section and the findings past the limits."""
        total = max(rows, 1)
        findings: list[str] = []
        labelled = sum(self.labels.values())
        classification = len(self.labels) <= LABELS_AT_MOST and labelled >= LABELLED_SHARE * total
        report: dict[str, Any] = {
            "openings": self._openings(total),
            "labels": self._labels(classification),
            "tokens": self._tokens(inputs),
            "languages": self._languages(),
            "replay": _replay(rows, inputs),
        }
        if limits is None:
            return report, findings
        report["openings"]["max"] = limits.max_response_opening_share
        report["labels"]["max_imbalance"] = limits.max_label_imbalance
        report["tokens"]["max_truncated_fraction"] = limits.max_truncated_fraction
        report["languages"]["max_other_fraction"] = limits.max_other_language_fraction
        if report["replay"]:
            report["replay"]["max_repeats"] = limits.max_replay_repeats
        top = report["openings"]["top"]
        if not classification and top and top[0]["share"] > limits.max_response_opening_share:
            findings.append(
                f"template: {top[0]['share']:.0%} of responses open with {top[0]['opening']!r} "
                f"(> {limits.max_response_opening_share:.0%})"
            )
        imbalance = report["labels"].get("imbalance")
        if imbalance and imbalance > limits.max_label_imbalance:
            counts = report["labels"]["counts"]
            most, least = max(counts, key=counts.get), min(counts, key=counts.get)
            findings.append(
                f"labels: {most!r} {counts[most]} rows, {least!r} {counts[least]} rows "
                f"({imbalance:.0f}x > {limits.max_label_imbalance:.0f}x)"
            )
        truncated = report["tokens"]["truncated_fraction"]
        if truncated > limits.max_truncated_fraction:
            limit = limits.max_truncated_fraction
            findings.append(
                f"length: {truncated:.1%} of rows are longer than maxSeqLength "
                f"{inputs.max_seq_length} tokens and get cut (> {limit:.1%})"
            )
        other = report["languages"].get("other_fraction", 0.0)
        if other > limits.max_other_language_fraction:
            findings.append(
                f"language: {other:.0%} of sampled rows are not {report['languages']['main']!r} "
                f"(> {limits.max_other_language_fraction:.0%})"
            )
        repeats = report["replay"].get("repeats")
        if repeats and repeats > limits.max_replay_repeats:
            findings.append(
                f"replay: ratio {inputs.replay_ratio} needs {report['replay']['wanted_rows']} "
                f"replay rows; the replay set has {inputs.replay_rows}, each used {repeats:.1f} "
                f"times (> {limits.max_replay_repeats:g})"
            )
        return report, findings

    def _openings(self, total: int) -> dict[str, Any]:
        keys = np.concatenate(self.opening_keys) if self.opening_keys else np.empty(0, np.uint64)
        if not len(keys):
            return {"top": []}
        values, counts = np.unique(keys, return_counts=True)
        order = np.argsort(-counts, kind="stable")[:3]
        return {
            "top": [
                {
                    "opening": self.opening_texts.get(int(values[i]), "?"),
                    "rows": int(counts[i]),
                    "share": round(int(counts[i]) / total, 4),
                }
                for i in order
            ]
        }

    def _labels(self, classification: bool) -> dict[str, Any]:
        if not classification or not self.labels:
            return {"classification_like": False}
        counts = dict(self.labels.most_common())
        return {
            "classification_like": True,
            "counts": counts,
            "imbalance": round(max(counts.values()) / min(counts.values()), 2),
        }

    def _tokens(self, inputs: Inputs) -> dict[str, Any]:
        tokens = np.concatenate(self.tokens) if self.tokens else np.empty(0, np.int64)
        if not len(tokens):
            return {"truncated_fraction": 0.0, "estimated": self.estimated_tokens}
        p50, p95, p99 = np.percentile(tokens, [50, 95, 99])
        truncated = int((tokens > inputs.max_seq_length).sum())
        return {
            "estimated": self.estimated_tokens,
            "p50": int(p50),
            "p95": int(p95),
            "p99": int(p99),
            "max": int(tokens.max()),
            # outliers: more than 4x the 99th percentile's distance from the median
            "outliers": int((tokens > p50 + 4 * (p99 - p50)).sum()),
            "max_seq_length": inputs.max_seq_length,
            "truncated": truncated,
            "truncated_fraction": round(truncated / len(tokens), 4),
        }

    def _languages(self) -> dict[str, Any]:
        sampled = sum(self.languages.values())
        if not sampled:
            return {"sampled": 0}
        main, count = self.languages.most_common(1)[0]
        return {
            "sampled": sampled,
            "main": main,
            "shares": {k: round(v / sampled, 4) for k, v in self.languages.most_common(5)},
            "other_fraction": round(1 - count / sampled, 4),
        }


def _replay(rows: int, inputs: Inputs) -> dict[str, Any]:
    """The share replay reaches in the trainer's mix (`mix_replay`), and how often each
    replay row is reused to get there."""
    if inputs.replay_rows is None or inputs.replay_ratio <= 0:
        return {}
    wanted = round(rows * inputs.replay_ratio / (1 - inputs.replay_ratio))
    return {
        "ratio": inputs.replay_ratio,
        "replay_rows": inputs.replay_rows,
        "wanted_rows": wanted,
        "reached_share": round(wanted / max(rows + wanted, 1), 4),
        "distinct_share": round(min(wanted, inputs.replay_rows) / max(rows + wanted, 1), 4),
        "repeats": round(wanted / max(inputs.replay_rows, 1), 2),
    }
