"""Examples from JSONL rows: parsing per format, malformed rows, validation split,
replay mixing. Pure apart from `load_rows`, which reads through a Store."""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

from tunegate_contract.trainer_config import Data, FieldNames
from tunegate_trainer.storage import Store


class RowParsing(Protocol):
    """How rows are read: the trainer config's `data`, or the local audit's flags."""

    @property
    def format(self) -> str: ...
    @property
    def fields(self) -> FieldNames: ...
    @property
    def on_malformed_row(self) -> str: ...


class DataError(Exception):
    """A malformed row; the message names the file and line."""


@dataclass(frozen=True)
class Example:
    """One training example: the prompt part (not learned) and the target part."""

    prompt: str
    target: str
    source: str  # "train" or "replay"
    where: str = ""  # "file:line" it was read from

    @property
    def text(self) -> str:
        return self.prompt + self.target


@dataclass(frozen=True)
class Row:
    where: str  # "file:line"
    value: dict[str, Any]


@dataclass
class Loaded:
    examples: list[Example]
    skipped: list[str]  # "file:line: reason"


def render_chat(messages: list[dict[str, str]], *, template: Any = None) -> tuple[str, str]:
    """Prompt = everything before the last assistant turn; target = that turn."""
    last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=-1)
    if last < 0:
        raise ValueError("no assistant message to learn from")
    if template is not None:
        prompt = template(messages[:last], add_generation_prompt=True)
        return prompt, messages[last]["content"] + "<|im_end|>\n"
    prompt = (
        "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages[:last])
        + "<|im_start|>assistant\n"
    )
    return prompt, messages[last]["content"] + "<|im_end|>\n"


def parse_row(row: Row, *, format: str, fields: FieldNames, source: str) -> Example:
    value = row.value
    try:
        if format == "text":
            text = value[fields.text]
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"{fields.text!r} must be a non-empty string")
            return Example("", text, source, row.where)
        if format == "instruction":
            prompt, response = value[fields.prompt], value[fields.response]
            extra = value.get(fields.input) or ""
            if not isinstance(prompt, str) or not isinstance(response, str) or not response:
                raise ValueError(f"{fields.prompt!r} and {fields.response!r} must be strings")
            body = f"{prompt}\n\n{extra}" if extra else prompt
            return Example(
                f"<|im_start|>user\n{body}<|im_end|>\n<|im_start|>assistant\n",
                f"{response}<|im_end|>\n",
                source,
                row.where,
            )
        messages = value[fields.messages]
        if not isinstance(messages, list) or not all(
            isinstance(m, dict)
            and isinstance(m.get("role"), str)
            and isinstance(m.get("content"), str)
            for m in messages
        ):
            raise ValueError(f"{fields.messages!r} must be a list of {{role, content}} objects")
        prompt, target = render_chat(messages)
        return Example(prompt, target, source, row.where)
    except KeyError as missing:
        raise DataError(
            f"{row.where}: missing key {missing.args[0]!r} for format {format}"
        ) from None
    except ValueError as exc:
        raise DataError(f"{row.where}: {exc}") from None


# Readers decode with errors="surrogateescape": each byte that is not UTF-8 survives as
# one of these, so the row is reported rather than trained on with U+FFFD in it.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


def parse_lines(lines: Iterable[tuple[str, int, str]]) -> Iterator[Row | DataError]:
    for uri, number, line in lines:
        if not line.strip():
            continue
        where = f"{uri}:{number}"
        if bad := _UNDECODABLE.search(line):
            byte = ord(bad.group()) - 0xDC00
            yield DataError(
                f"{where}: not valid UTF-8 (byte 0x{byte:02x} at column {bad.start() + 1})"
            )
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield DataError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})")
            continue
        except RecursionError:
            yield DataError(f"{where}: JSON nested too deeply to read")
            continue
        if not isinstance(value, dict):
            yield DataError(f"{where}: expected a JSON object, got {type(value).__name__}")
            continue
        yield Row(where, value)


def examples_from(
    lines: Iterable[tuple[str, int, str]], *, data: RowParsing, source: str, origin: str = ""
) -> Loaded:
    """The rows of `origin` (the dataset's URI, for messages) as examples."""
    loaded = Loaded([], [])
    for item in parse_lines(lines):
        try:
            if isinstance(item, DataError):
                raise item
            loaded.examples.append(
                parse_row(item, format=data.format, fields=data.fields, source=source)
            )
        except DataError as exc:
            if data.on_malformed_row == "fail":
                raise
            loaded.skipped.append(str(exc))
    if not loaded.examples:
        why = (
            f"all {len(loaded.skipped)} rows were skipped, the first: {loaded.skipped[0]}"
            if loaded.skipped
            else "it has no rows"
        )
        raise DataError(f"{origin or 'the dataset'}: no usable {source} examples ({why})")
    return loaded


def split_validation(
    examples: list[Example], *, fraction: float, seed: int
) -> tuple[list[Example], list[Example]]:
    if fraction <= 0 or len(examples) < 2:
        return examples, []
    shuffled = list(examples)
    random.Random(seed).shuffle(shuffled)
    count = max(1, round(len(shuffled) * fraction))
    return shuffled[count:], shuffled[:count]


def mix_replay(
    train: list[Example], replay: list[Example], *, ratio: float, seed: int
) -> list[Example]:
    """Add replay examples so they make up `ratio` of the mix; shuffled with the seed."""
    mixed = list(train)
    if ratio > 0 and replay:
        wanted = round(len(train) * ratio / (1 - ratio))
        rng = random.Random(seed + 1)
        picks = (
            [replay[i % len(replay)] for i in range(wanted)]
            if wanted > len(replay)
            else rng.sample(replay, wanted)
        )
        mixed.extend(picks)
    random.Random(seed).shuffle(mixed)
    return mixed


@dataclass
class Datasets:
    train: list[Example]
    validation: list[Example]
    skipped: list[str]


def load_datasets(store: Store, data: Data, *, seed: int) -> Datasets:
    train = examples_from(
        store.iter_lines(data.train), data=data, source="train", origin=data.train
    )
    skipped = list(train.skipped)
    if data.validation:
        validation_rows = examples_from(
            store.iter_lines(data.validation),
            data=data,
            source="validation",
            origin=data.validation,
        )
        skipped += validation_rows.skipped
        training, validation = train.examples, validation_rows.examples
    else:
        training, validation = split_validation(
            train.examples, fraction=data.validation_split, seed=seed
        )
    if data.replay:
        replay = examples_from(
            store.iter_lines(data.replay.dataset),
            data=data,
            source="replay",
            origin=data.replay.dataset,
        )
        skipped += replay.skipped
        training = mix_replay(training, replay.examples, ratio=data.replay.ratio, seed=seed)
    return Datasets(training, validation, skipped)
