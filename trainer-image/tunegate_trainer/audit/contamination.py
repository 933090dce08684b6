"""Training rows that contain an evaluation item's own question or answer.

Eval sets come in the formats an EvalGate scores (multiple choice, exact match,
prompts, texts) or in the training data's format. Each item gives a question and an
answer, compared separately. Text shared by several eval items is their template:
templated prompts share it with their own training data by construction, so a match
counts only when most of its words are the item's own.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunegate_trainer.audit.text import ngrams, plain, words

NGRAM = 8  # words; shorter fields are matched whole
MIN_WORDS = 4  # a field shorter than this is too common to prove a leak ("Paris")
TEMPLATE_ITEMS = 2  # a word run in this many items or more is template text
TEMPLATE_GRAM = 3  # the length of those runs
EXAMPLES = 3


class EvalItemError(ValueError):
    pass


@dataclass(frozen=True)
class EvalItem:
    where: str  # "file:line"
    question: str
    answer: str


def eval_item(where: str, value: dict[str, Any]) -> EvalItem:
    """An eval item in any format the EvalGate accepts (or a chat row)."""
    try:
        if "question" in value:
            choices = value.get("choices")
            answer = choices[int(value["answer"])] if choices else value.get("answer", "")
            return EvalItem(where, str(value["question"]), str(answer))
        if "prompt" in value:
            answer = value.get("answer", value.get("response", ""))
            return EvalItem(where, str(value["prompt"]), "" if answer is None else str(answer))
        if "text" in value:
            return EvalItem(where, str(value["text"]), "")
        if isinstance(value.get("messages"), list):
            turns = [m for m in value["messages"] if isinstance(m, dict)]
            asked = " ".join(str(m.get("content", "")) for m in turns if m.get("role") == "user")
            said = [str(m.get("content", "")) for m in turns if m.get("role") == "assistant"]
            return EvalItem(where, asked, said[-1] if said else "")
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise EvalItemError(f"{where}: malformed eval item ({exc!r})") from None
    raise EvalItemError(
        f"{where}: an eval item needs 'question', 'prompt', 'text' or 'messages'; "
        f"found keys {sorted(value)[:8]}"
    )


def eval_items(lines: Iterable[tuple[str, int, str]]) -> list[EvalItem]:
    """An eval set's items; a malformed line stops the audit with its file:line."""
    from tunegate_trainer.data import DataError, parse_lines

    items = []
    for row in parse_lines(lines):
        if isinstance(row, DataError):
            raise row
        try:
            items.append(eval_item(row.where, row.value))
        except EvalItemError as exc:
            raise DataError(str(exc)) from None
    return items


def _distinctive_phrases(tokens: list[str], template: set[tuple[str, ...]]) -> set[tuple[str, ...]]:
    """Word runs of NGRAM (or the whole field, if shorter) in which most words are the
    item's own: a word is template when a TEMPLATE_GRAM it starts, ends or sits in is
    shared with other items."""
    if len(tokens) < MIN_WORDS:
        return set()
    own = [True] * len(tokens)
    for start in range(len(tokens) - TEMPLATE_GRAM + 1):
        if tuple(tokens[start : start + TEMPLATE_GRAM]) in template:
            own[start : start + TEMPLATE_GRAM] = [False] * TEMPLATE_GRAM
    size = min(NGRAM, len(tokens))
    return {
        tuple(tokens[start : start + size])
        for start in range(len(tokens) - size + 1)
        if 2 * sum(own[start : start + size]) > size
    }


@dataclass
class Reference:
    """The distinctive phrases of one eval set, by field."""

    name: str
    items: int
    phrases: dict[str, dict[tuple[str, ...], str]]  # field -> phrase -> item's file:line
    lengths: set[int]

    @classmethod
    def of(cls, name: str, items: Sequence[EvalItem]) -> Reference:
        fields = [
            {"question": words(plain(item.question)), "answer": words(plain(item.answer))}
            for item in items
        ]
        shared: defaultdict[tuple[str, ...], int] = defaultdict(int)
        for item_fields in fields:
            grams = set().union(*(ngrams(t, TEMPLATE_GRAM) for t in item_fields.values()))
            for gram in grams:
                shared[gram] += 1
        template = {gram for gram, count in shared.items() if count >= TEMPLATE_ITEMS}
        phrases: dict[str, dict[tuple[str, ...], str]] = {"question": {}, "answer": {}}
        for item, item_fields in zip(items, fields, strict=True):
            for field_name, tokens in item_fields.items():
                for phrase in _distinctive_phrases(tokens, template):
                    phrases[field_name][phrase] = item.where
        lengths = {len(p) for found in phrases.values() for p in found}
        return cls(name, len(items), phrases, lengths)


@dataclass
class Contamination:
    """Training rows matched against each eval set."""

    references: list[Reference]
    rows: int = 0
    by_set: dict[str, dict[str, int]] = field(default_factory=dict)
    examples: list[tuple[str, str, str]] = field(default_factory=list)  # row, field, item

    def offer(self, where: str, text: str) -> None:
        tokens = words(plain(text))
        grams = {size: ngrams(tokens, size) for size in self._lengths()}
        hit = False
        for reference in self.references:
            for field_name, phrases in reference.phrases.items():
                matched = next(
                    (
                        phrases[phrase]
                        for size in reference.lengths
                        for phrase in grams.get(size, ())
                        if phrase in phrases
                    ),
                    None,
                )
                if matched is None:
                    continue
                counts = self.by_set.setdefault(reference.name, {"question": 0, "answer": 0})
                counts[field_name] += 1
                hit = True
                if len(self.examples) < EXAMPLES:
                    self.examples.append((where, field_name, matched))
        self.rows += hit

    def merge(self, other: Contamination) -> None:
        """Add another chunk's matches (rows in source order)."""
        self.rows += other.rows
        for name, counts in other.by_set.items():
            mine = self.by_set.setdefault(name, {"question": 0, "answer": 0})
            for field_name, count in counts.items():
                mine[field_name] += count
        self.examples = (self.examples + other.examples)[:EXAMPLES]

    def _lengths(self) -> set[int]:
        return set().union(*(reference.lengths for reference in self.references))


def contaminated(texts: Iterable[str], eval_sets: Sequence[Sequence[EvalItem]]) -> int:
    """How many training texts contain a distinctive question or answer phrase."""
    finder = Contamination([Reference.of(str(i), items) for i, items in enumerate(eval_sets)])
    for index, text in enumerate(texts):
        finder.offer(str(index), text)
    return finder.rows
