"""Trainer data: each format, malformed rows named by file and line, splits, replay."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tunegate_contract.trainer_config import Data, FieldNames, Replay
from tunegate_trainer.data import DataError, Example, examples_from, mix_replay, split_validation


def lines(*rows: Any, name: str = "s3://b/train.jsonl") -> list[tuple[str, int, str]]:
    return [(name, i, r if isinstance(r, str) else json.dumps(r)) for i, r in enumerate(rows, 1)]


def data(format: str = "chat", **overrides: Any) -> Data:
    return Data.model_validate(
        {
            "train": "s3://bkt/t.jsonl",
            "validation_split": 0.0,
            "format": format,
            "on_malformed_row": "fail",
        }
        | overrides
    )


def test_chat_learns_only_the_last_assistant_turn() -> None:
    row = {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris."},
        ]
    }
    (example,) = examples_from(lines(row), data=data("chat"), source="train").examples
    assert example.prompt.endswith("<|im_start|>assistant\n")
    assert "Capital of France?" in example.prompt and "Be brief." in example.prompt
    assert example.target == "Paris.<|im_end|>\n"


def test_instruction_with_custom_field_names() -> None:
    fields = FieldNames(prompt="question", response="answer", input="context")
    row = {"question": "Sum?", "context": "2 and 3", "answer": "5"}
    (example,) = examples_from(
        lines(row), data=data("instruction", fields=fields), source="train"
    ).examples
    assert "Sum?\n\n2 and 3" in example.prompt and example.target.startswith("5")


def test_text_format_learns_everything() -> None:
    (example,) = examples_from(
        lines({"text": "plain words"}), data=data("text"), source="train"
    ).examples
    assert example.prompt == "" and example.target == "plain words"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", r"s3://b/train.jsonl:2: not valid JSON"),
        ([1, 2], r"s3://b/train.jsonl:2: expected a JSON object, got list"),
        ({"prompt": "x"}, r"s3://b/train.jsonl:2: missing key 'messages' for format chat"),
        (
            {"messages": [{"role": "user", "content": "hi"}]},
            r"s3://b/train.jsonl:2: no assistant message",
        ),
        ({"messages": "hello"}, r"s3://b/train.jsonl:2: 'messages' must be a list"),
    ],
)
def test_malformed_row_names_file_and_line(row: Any, message: str) -> None:
    good = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}
    with pytest.raises(DataError, match=message):
        examples_from(lines(good, row), data=data("chat"), source="train")


def test_skip_mode_drops_and_counts_malformed_rows() -> None:
    loaded = examples_from(
        lines({"text": "ok"}, "{bad", {"text": ""}, {"text": "fine"}),
        data=data("text", on_malformed_row="skip"),
        source="train",
    )
    assert [e.target for e in loaded.examples] == ["ok", "fine"]
    assert len(loaded.skipped) == 2 and loaded.skipped[0].startswith("s3://b/train.jsonl:2")


def test_no_usable_rows_is_an_error() -> None:
    with pytest.raises(DataError, match="no usable train examples"):
        examples_from(lines("{bad"), data=data("text", on_malformed_row="skip"), source="train")


def test_validation_split_is_deterministic_and_disjoint() -> None:
    examples = [Example("", f"row {i}", "train") for i in range(100)]
    train, validation = split_validation(examples, fraction=0.1, seed=7)
    again, _ = split_validation(examples, fraction=0.1, seed=7)
    assert len(validation) == 10 and len(train) == 90 and train == again
    assert not {e.target for e in train} & {e.target for e in validation}


@pytest.mark.parametrize("ratio", [0.0, 0.2, 0.5, 0.75])
def test_replay_makes_up_the_requested_ratio(ratio: float) -> None:
    train = [Example("", f"task {i}", "train") for i in range(300)]
    replay = [Example("", f"general {i}", "replay") for i in range(50)]
    mixed = mix_replay(train, replay, ratio=ratio, seed=1)
    share = sum(e.source == "replay" for e in mixed) / len(mixed)
    assert share == pytest.approx(ratio, abs=0.005)
    assert sum(e.source == "train" for e in mixed) == 300
    assert Replay(dataset="s3://bkt/r.jsonl", ratio=ratio).ratio == ratio


def test_a_missing_group_by_key_names_the_suite_item_and_key() -> None:
    from tunegate_contract.eval_config import Suite
    from tunegate_trainer.evaluate import item_groups

    suite = Suite(
        name="legal",
        role="target",
        metric="exactMatch",
        dataset="s3://bkt/legal.jsonl",
        group_by="document",
    )
    items = [{"prompt": "a", "document": "d1"}, {"prompt": "b"}]
    with pytest.raises(DataError, match=r"legal: item 2 \(s3://bkt/legal.jsonl\).*'document'"):
        item_groups(suite, items)
    assert item_groups(suite, items[:1]) == ["d1"]
