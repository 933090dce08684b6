"""The data's shape: each number is measured, and each limit in spec.audit.distribution
turns into a finding when the data is past it."""

from __future__ import annotations

import random

import pytest
from audit_settings import ENFORCE

from tunegate_cluster.audit_data import docstring_qa, sentiment_labels
from tunegate_contract.trainer_config import Audit, Distribution
from tunegate_trainer.audit import AuditRow, audit
from tunegate_trainer.audit.shape import Inputs

LIMITS = Distribution(
    max_response_opening_share=0.5,
    max_label_imbalance=20,
    max_truncated_fraction=0.05,
    max_other_language_fraction=0.1,
    max_replay_repeats=4,
)
SETTINGS = Audit.model_validate(ENFORCE.model_dump() | {"distribution": LIMITS.model_dump()})
FRENCH = [
    "Le chat dort sur le canapé pendant que la pluie tombe doucement sur la ville.",
    "Nous avons acheté du pain frais et des fromages au marché ce matin.",
    "La réunion de demain commencera à neuf heures dans la grande salle.",
    "Il faut vérifier les résultats avant de les envoyer au client.",
]


def rows(pairs: list, seed: int = 0) -> list[AuditRow]:  # type: ignore[type-arg]
    return [AuditRow(f"train.jsonl:{i + 1}", p.prompt, p.response) for i, p in enumerate(pairs)]


def shape_findings(data: list[AuditRow], shape: Inputs | None = None) -> list[str]:
    result = audit(data, settings=SETTINGS, shape=shape)
    return [
        f
        for f in result.findings
        if f.split(":")[0] in {"template", "labels", "length", "language", "replay"}
    ]


def test_clean_docstring_qa_is_within_every_limit() -> None:
    result = audit(rows(docstring_qa(800, seed=81)), settings=SETTINGS)
    assert result.verdict == "Passed", result.findings
    shape = result.checks["shape"]
    assert shape["languages"]["main"] == "en" and shape["labels"] == {
        "classification_like": False,
        "max_imbalance": 20,
    }
    assert shape["tokens"]["estimated"] and shape["tokens"]["truncated"] == 0


def test_responses_that_open_alike_are_a_template() -> None:
    data = rows(docstring_qa(600, seed=82))
    parroted = [
        AuditRow(r.where, r.prompt, f"Sure, here is the answer. {r.response}") for r in data[:400]
    ]
    findings = shape_findings(parroted + data[400:])
    assert findings == ["template: 67% of responses open with 'sure here is' (> 50%)"]


def test_label_imbalance_in_classification_like_data() -> None:
    pairs = sentiment_labels(2000, seed=83)
    rng = random.Random(83)
    # keep about 1 in 40 negative reviews: 40:1
    skewed = [p for p in pairs if p.response == "positive" or rng.random() < 0.025]
    findings = shape_findings(rows(skewed))
    assert len(findings) == 1 and findings[0].startswith("labels: 'positive'")
    assert shape_findings(rows(pairs)) == []  # balanced


def test_rows_longer_than_max_seq_length_are_counted_with_the_models_tokenizer() -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace

    tokenizer = Tokenizer(WordLevel({"[UNK]": 0}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    data = rows(docstring_qa(400, seed=84))
    long = [AuditRow(r.where, r.prompt, " ".join([r.response] * 60)) for r in data[:40]]
    shape = Inputs(max_seq_length=200, tokenizer_json=tokenizer.to_str())
    result = audit(long + data[40:], settings=SETTINGS, shape=shape)
    tokens = result.checks["shape"]["tokens"]
    assert not tokens["estimated"] and tokens["truncated"] >= 40
    assert any(f.startswith("length: ") and "maxSeqLength 200" in f for f in result.findings)


def test_a_language_mix_past_the_limit() -> None:
    data = rows(docstring_qa(300, seed=85))
    mixed = data + [
        AuditRow(f"train.jsonl:{301 + i}", "Traduisez, s'il vous plaît.", FRENCH[i % 4] * 2)
        for i in range(90)
    ]
    findings = shape_findings(mixed)
    assert findings == ["language: 23% of sampled rows are not 'en' (> 10%)"]


@pytest.mark.parametrize(("replay_rows", "found"), [(10, True), (80, False)])
def test_replay_reused_too_often(replay_rows: int, found: bool) -> None:
    data = rows(docstring_qa(100, seed=86))
    shape = Inputs(replay_rows=replay_rows, replay_ratio=0.5)
    result = audit(data, settings=SETTINGS, shape=shape)
    replay = result.checks["shape"]["replay"]
    assert replay["wanted_rows"] == 100 and replay["reached_share"] == 0.5
    assert replay["repeats"] == 100 / replay_rows
    assert any(f.startswith("replay: ratio 0.5 needs 100") for f in result.findings) == found
