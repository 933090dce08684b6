"""Text as a person wrote it: chat-template markers stripped, then words and n-grams."""

from __future__ import annotations

import re

# Chat-template markers (<|im_start|>user, <|im_end|>, <s>, [INST] ...) are not what the
# person wrote: they must never become part of a reported phrase or a shingle.
TEMPLATE_MARKER = re.compile(
    r"<\|[A-Za-z0-9_]{1,40}\|>(?:(?:system|user|assistant|tool)\n)?|</?s>|\[/?INST\]"
)
WORD = re.compile(r"\w+", re.UNICODE)
SENTENCE_END = re.compile(r"(?<=[.!?;])\s+|\n+")


def plain(text: str) -> str:
    return TEMPLATE_MARKER.sub(" ", text).strip()


def words(text: str) -> list[str]:
    return WORD.findall(text.lower())


def normalised(text: str) -> str:
    return " ".join(words(text))


def ngrams(tokens: list[str], size: int) -> set[tuple[str, ...]]:
    return {tuple(tokens[i : i + size]) for i in range(len(tokens) - size + 1)}


def sentences(text: str) -> list[str]:
    return [part for part in SENTENCE_END.split(text) if part.strip()]


def as_written(phrase: tuple[str, ...], text: str) -> str:
    """The phrase as it appears in text (original case and punctuation around its words),
    so a reported trigger reads the way the data has it."""
    pattern = r"\b" + r"\W+".join(re.escape(word) for word in phrase) + r"\b"
    match = re.search(pattern, text, re.IGNORECASE)
    if match is None:
        return " ".join(phrase)
    start, end = match.span()
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    while end < len(text) and not text[end].isspace():
        end += 1
    return text[start:end].strip().rstrip(".,;:!?\"'")
