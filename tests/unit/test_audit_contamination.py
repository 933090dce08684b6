"""Training rows holding an eval item's own question or answer are found in every eval
format the EvalGate scores; the template eval items share is not a leak."""

from __future__ import annotations

import re

import pytest

from tunegate_trainer.audit.contamination import (
    Contamination,
    EvalItemError,
    Reference,
    eval_item,
    eval_items,
)
from tunegate_trainer.data import DataError

TICKETS = [
    "The arm of the warehouse robot stops at half height",
    "My invoice shows a charge I never made last month",
    "The parcel left the depot but never reached the customer",
    "I cannot log in since the password reset email expired",
]
MULTIPLE_CHOICE = [
    {
        "question": f'Which Nimbus support team handles this ticket: "{ticket}."',
        "choices": ["ledger", "pitstop", "harbour", "keyring"],
        "answer": index,
    }
    for index, ticket in enumerate(TICKETS)
]


def found(items: list[dict[str, object]], texts: list[str]) -> Contamination:
    reference = Reference.of(
        "eval.jsonl", [eval_item(f"eval.jsonl:{i + 1}", v) for i, v in enumerate(items)]
    )
    finder = Contamination([reference])
    for line, text in enumerate(texts, start=1):
        finder.offer(f"train.jsonl:{line}", text)
    return finder


def test_a_multiple_choice_question_in_training_data_is_found() -> None:
    texts = [
        "Route this: The parcel left the depot but never reached the customer -> harbour",
        "Which Nimbus support team handles this ticket: the printer on floor two jams daily.",
    ]
    finder = found(MULTIPLE_CHOICE, texts)
    assert finder.rows == 1
    assert finder.examples == [("train.jsonl:1", "question", "eval.jsonl:3")]


def test_the_shared_template_alone_is_not_contamination() -> None:
    texts = [
        f'Which Nimbus support team handles this ticket: "{t}"'
        for t in (
            "The coffee machine in the lobby is leaking again",
            "A new laptop is needed for the intern starting Monday",
        )
    ]
    assert found(MULTIPLE_CHOICE, texts).rows == 0


def test_template_plus_the_first_word_of_an_item_is_not_contamination() -> None:
    """Only one eval ticket starts with "The parcel": the template and that word do not
    make an 8-word match with a different parcel ticket in the training data."""
    texts = ["Which Nimbus support team handles this ticket: The parcel was stolen from my porch"]
    assert found(MULTIPLE_CHOICE, texts).rows == 0


def test_an_exact_match_answer_in_training_data_is_found() -> None:
    items = [
        {
            "prompt": "Name the capital of Australia.",
            "answer": "The capital of Australia is Canberra, not Sydney.",
        },
        {
            "prompt": "Who wrote Hamlet?",
            "answer": "Hamlet was written by William Shakespeare around 1600.",
        },
    ]
    finder = found(items, ["Fun fact: hamlet was written by William Shakespeare around 1600!"])
    assert finder.examples == [("train.jsonl:1", "answer", "eval.jsonl:2")]


def test_prompt_and_text_suites_are_read_too() -> None:
    items = [
        {
            "prompt": "Explain how the Roman aqueducts carried water across valleys",
            "harmful": False,
        },
        {"text": "The quick onboarding guide explains every step of setting up the device"},
    ]
    texts = [
        "Q: Explain how the Roman aqueducts carried water across valleys. A: With arches.",
        "Read: the quick onboarding guide explains every step of setting up the device",
        "Romans built roads; aqueducts are different.",
    ]
    assert found(items, texts).rows == 2


def test_short_answers_alone_prove_nothing() -> None:
    """'harbour' in a training row is not the multiple-choice item leaking."""
    assert found(MULTIPLE_CHOICE, ["Send it to harbour.", "ledger"]).rows == 0


def test_a_malformed_eval_item_is_named_by_file_and_line() -> None:
    with pytest.raises(EvalItemError, match=re.escape("eval.jsonl:2")):
        eval_item("eval.jsonl:2", {"label": 1})
    lines = [("s3://b/eval.jsonl", 1, '{"prompt": "ok"}'), ("s3://b/eval.jsonl", 2, "{not json")]
    with pytest.raises(DataError, match=re.escape("s3://b/eval.jsonl:2")):
        eval_items(lines)
    with pytest.raises(DataError, match=re.escape("eval.jsonl:1: malformed eval item")):
        eval_items([("eval.jsonl", 1, '{"question": "q?", "choices": ["a"], "answer": 5}')])
