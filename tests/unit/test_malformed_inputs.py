"""Malformed inputs, generated: dataset rows, eval items and model configs. Each is
either read or refused with an error naming its file:line or field; nothing else
escapes, and nothing is dropped without a word."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tunegate_contract.base import DocumentError
from tunegate_contract.eval_config import Suite
from tunegate_contract.trainer_config import FieldNames
from tunegate_operator.api.finetunejob import FineTuneJobSpec
from tunegate_operator.decisions.preflight import PreflightInputs, preflight
from tunegate_operator.planner.shapes import ConfigError, shape_from_hf_config
from tunegate_operator.s3_io import parse_json_object
from tunegate_trainer.data import DataError, examples_from, parse_lines
from tunegate_trainer.eval_items import FIELDS, checked_items

FILE = "s3://bucket/data.jsonl"
WHERE = re.compile(r"^s3://bucket/data\.jsonl:(\d+): \S")
EMPTY = re.compile(r"^s3://bucket/data\.jsonl: no usable train examples \((it has no rows|all \d+)")

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
# Rows as they arrive: objects with the keys a format reads (right or wrong types),
# other JSON, broken JSON, and bytes that are not UTF-8.
keyed_rows = st.dictionaries(
    st.sampled_from(["text", "prompt", "response", "input", "messages", "role", "content"]),
    json_values
    | st.lists(st.fixed_dictionaries({"role": st.text(max_size=9), "content": json_values})),
    max_size=4,
).map(json.dumps)
raw_lines = st.one_of(
    keyed_rows,
    json_values.map(json.dumps),
    st.text(max_size=40),
    st.binary(max_size=40).map(lambda b: b.decode("utf-8", errors="surrogateescape")),
).filter(lambda line: "\n" not in line and "\r" not in line)


@dataclass(frozen=True)
class Parsing:
    format: str
    on_malformed_row: str
    fields: FieldNames = field(default_factory=FieldNames)


def numbered(lines: list[str]) -> list[tuple[str, int, str]]:
    return [(FILE, number, line) for number, line in enumerate(lines, start=1)]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(raw_lines, max_size=12),
    row_format=st.sampled_from(["chat", "instruction", "text"]),
)
def test_every_row_is_an_example_or_a_named_skip(lines: list[str], row_format: str) -> None:
    rows = sum(1 for line in lines if line.strip())
    try:
        loaded = examples_from(
            numbered(lines), data=Parsing(row_format, "skip"), source="train", origin=FILE
        )
    except DataError as error:
        assert EMPTY.match(str(error)), error
        return
    assert len(loaded.examples) + len(loaded.skipped) == rows  # nothing dropped unsaid
    for reason in loaded.skipped:
        assert WHERE.match(reason), reason
        assert 1 <= int(WHERE.match(reason)[1]) <= len(lines)  # type: ignore[index]


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(raw_lines, max_size=12),
    row_format=st.sampled_from(["chat", "instruction", "text"]),
)
def test_fail_mode_stops_at_the_first_bad_row_by_name(lines: list[str], row_format: str) -> None:
    try:
        examples_from(
            numbered(lines), data=Parsing(row_format, "fail"), source="train", origin=FILE
        )
    except DataError as error:
        assert WHERE.match(str(error)) or EMPTY.match(str(error)), error


def test_bytes_that_are_not_utf8_are_named_not_replaced() -> None:
    line = b'{"text": "caf\xe9"}'.decode("utf-8", errors="surrogateescape")
    (found,) = parse_lines(numbered([line]))
    assert isinstance(found, DataError)
    assert str(found) == f"{FILE}:1: not valid UTF-8 (byte 0xe9 at column 14)"


def test_json_nested_past_the_parser_is_a_row_error() -> None:
    (found,) = parse_lines(numbered(["[" * 100_000 + "]" * 100_000]))
    assert str(found) == f"{FILE}:1: JSON nested too deeply to read"


def test_a_ten_megabyte_row_is_read_whole() -> None:
    text = "word " * 2_000_000
    loaded = examples_from(
        numbered([json.dumps({"text": text})]), data=Parsing("text", "fail"), source="train"
    )
    assert loaded.examples[0].target == text


# -- eval items ----------------------------------------------------------------------


def suite(metric: str, group_by: str | None = None) -> Suite:
    return Suite(name="s", role="target", metric=metric, dataset=FILE, group_by=group_by)


eval_rows = st.one_of(
    st.dictionaries(
        st.sampled_from(["question", "choices", "answer", "prompt", "harmful", "text", "group"]),
        json_values | st.lists(st.text(max_size=5), max_size=5),
        max_size=5,
    ).map(json.dumps),
    raw_lines,
)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(eval_rows, min_size=1, max_size=8),
    metric=st.sampled_from(sorted(FIELDS)),
    group_by=st.sampled_from([None, "group"]),
)
def test_eval_items_are_checked_or_refused_by_file_line(
    lines: list[str], metric: str, group_by: str | None
) -> None:
    try:
        items = checked_items(suite(metric, group_by), parse_lines(numbered(lines)))
    except DataError as error:
        message = str(error)
        assert message.startswith("suite s: "), message
        assert WHERE.match(message.removeprefix("suite s: ")) or "has no items" in message
        return
    for item in items:  # what the scorer reads is there, of the type it uses
        for key in FIELDS[metric]:
            assert key in item
        if metric == "multipleChoiceAccuracy":
            assert 0 <= int(item["answer"]) < len(item["choices"])


@pytest.mark.parametrize(
    ("metric", "row", "problem"),
    [
        ("kl", {"text": "x"}, "no 'prompt' (metric kl reads prompt)"),
        ("refusal", {"prompt": "p", "harmful": "yes"}, "'harmful' must be true or false, not str"),
        (
            "multipleChoiceAccuracy",
            {"question": "q", "choices": ["a", "b"], "answer": 2},
            "'answer' 2 is past the last of 2 choices",
        ),
        ("perplexity", {"text": "t"}, None),
    ],
)
def test_eval_item_messages(metric: str, row: dict[str, Any], problem: str | None) -> None:
    lines = numbered([json.dumps(row)])
    if problem is None:
        assert checked_items(suite(metric), parse_lines(lines)) == [row]
        return
    with pytest.raises(DataError) as raised:
        checked_items(suite(metric), parse_lines(lines))
    assert str(raised.value) == f"suite s: {FILE}:1: {problem}"


# -- model configs -------------------------------------------------------------------

CONFIG_KEYS = [
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "intermediate_size",
    "vocab_size",
]


@settings(max_examples=300)
@given(
    config=st.one_of(
        st.dictionaries(
            st.sampled_from(CONFIG_KEYS),
            st.integers(min_value=-(2**70), max_value=2**70) | json_values,
            max_size=6,
        ),
        json_values,
    )
)
def test_a_model_config_gives_a_shape_or_a_config_error_naming_the_key(config: Any) -> None:
    try:
        shape = shape_from_hf_config(config)
    except ConfigError as error:
        assert "config.json" in str(error)
        return
    assert shape.total_parameters() > 0 and shape.head_dim >= 0


def test_absurd_sizes_are_refused_by_name() -> None:
    config = dict.fromkeys(CONFIG_KEYS, 64) | {"vocab_size": 10**40}
    with pytest.raises(ConfigError, match=r"'vocab_size' is 10{40}; expected 1 to"):
        shape_from_hf_config(config)


CONFIG_URI = "s3://bucket/model/config.json"


@settings(max_examples=300)
@given(
    body=st.one_of(
        st.binary(max_size=60),
        json_values.map(lambda value: json.dumps(value).encode()),
        raw_lines.map(lambda line: line.encode("utf-8", errors="surrogateescape")),
    )
)
def test_an_s3_document_is_an_object_or_an_error_naming_it(body: bytes) -> None:
    try:
        document = parse_json_object(CONFIG_URI, body)
    except DocumentError as error:
        assert re.match(r"^s3://bucket/model/config\.json(:\d+)?: \S", str(error)), error
        return
    assert isinstance(document, dict)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            b'{"hidden_size": 64,\n "vocab_size": }',
            ":2: not valid JSON (Expecting value at column 16)",
        ),
        (b'{"model_type": "caf\xe9"}', ": not valid UTF-8 (byte 19)"),
        (b"[" * 100_000 + b"]" * 100_000, ": JSON nested too deeply to read"),
        (b'["hidden_size", 64]', ": holds a JSON array, not an object"),
        (b"", ":1: not valid JSON (Expecting value at column 1)"),
    ],
)
def test_s3_document_errors_say_where_and_what(body: bytes, message: str) -> None:
    with pytest.raises(DocumentError) as error:
        parse_json_object(CONFIG_URI, body)
    assert str(error.value) == CONFIG_URI + message


def _preflight_model(**inputs: Any) -> list[tuple[str, str, str, bool]]:
    spec = FineTuneJobSpec.model_validate(
        {
            "model": {"uri": "s3://bucket/model"},
            "dataset": {"train": "s3://bucket/train.jsonl"},
            "output": {"uri": "s3://bucket/out"},
        }
    )
    result = preflight(spec, PreflightInputs(secret_name=None, secret_keys=None, **inputs))
    # No nodes here: the placement problem that gives is not this test's concern.
    return [
        (p.field, p.reason, p.message, p.waiting)
        for p in result.problems
        if p.field == "spec.model.uri"
    ]


def test_a_model_config_that_is_not_json_waits_naming_the_file_and_line() -> None:
    error = f"{CONFIG_URI}:2: not valid JSON (Expecting value at column 16)"
    assert _preflight_model(model_config_uri=CONFIG_URI, model_config_error=error) == [
        ("spec.model.uri", "ModelConfigInvalid", f"spec.model.uri: {error}", True)
    ]
    ((field_name, reason, message, waiting),) = _preflight_model(model_config_uri=CONFIG_URI)
    assert (field_name, reason, waiting) == ("spec.model.uri", "ModelNotFound", True)
    assert f"{CONFIG_URI} does not exist" in message
    assert _preflight_model(model_config_uri=CONFIG_URI, model_config={"hidden_size": 64}) == []
    assert _preflight_model() == []  # an hf:// model is looked up by the pod, not here
