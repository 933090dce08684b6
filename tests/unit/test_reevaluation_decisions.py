"""Scheduled re-evaluation (pure): when rounds start, how they end, and that only a
Fail with rollbackOnFail restores the previous version."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from gate_specs import UNSURE_SCORES, eval_results, gate_spec

from tunegate_contract.promotion_record import PromotionRecord
from tunegate_operator.api.evalgate import EvalGateSpec, ReevaluateSpec
from tunegate_operator.builders.eval_job import Candidate, GateRef, eval_job_name, results_uri
from tunegate_operator.decisions.evalgate_actions import RollBack, StartRound
from tunegate_operator.decisions.reevaluation import ReevalObserved, decide_reevaluation
from tunegate_operator.decisions.vocabulary import JobView
from tunegate_operator.reevaluation_io import served_candidate

PROMOTED_AT = datetime(2026, 3, 1, 10, 30, tzinfo=UTC)
SHA = "cd" * 32


def spec(schedule: str = "0 * * * *", rollback: bool = True) -> tuple[EvalGateSpec, ReevaluateSpec]:
    parsed = gate_spec(
        promotion={"mode": "auto", "uri": "s3://serving/x"},
        reevaluate={"schedule": schedule, "rollbackOnFail": rollback},
    )
    assert parsed.reevaluate is not None
    return parsed, parsed.reevaluate


def observe(now: datetime, state: dict[str, Any] | None = None, **fields: Any) -> ReevalObserved:
    return ReevalObserved(
        now=now,
        state=state or {},
        promoted_at=PROMOTED_AT,
        served_sha256=SHA,
        **fields,
    )


ACTIVE = {"round": 2, "active": True, "scheduledAt": "2026-03-01T12:00:00Z", "sha256": SHA}
PASS = eval_results([0.0] * 50, [1.0] * 50)
FAIL = eval_results([1.0] * 50, [0.0] * 50)
UNSURE = eval_results(*UNSURE_SCORES)


def test_nothing_happens_before_the_first_schedule_time() -> None:
    gate, reevaluate = spec()
    decision = decide_reevaluation(gate, reevaluate, observe(PROMOTED_AT + timedelta(minutes=10)))
    assert decision.actions == ()
    assert decision.state["nextAt"] == "2026-03-01T11:00:00Z"


def test_a_due_round_starts_once_even_after_a_long_outage() -> None:
    gate, reevaluate = spec()
    now = PROMOTED_AT + timedelta(days=3, minutes=5)
    decision = decide_reevaluation(gate, reevaluate, observe(now))
    assert decision.actions == (StartRound(1),)
    # The round belongs to the latest due tick, so the next one is in the future.
    assert decision.state["scheduledAt"] == "2026-03-04T10:00:00Z"
    assert decision.state["nextAt"] == "2026-03-04T11:00:00Z"
    assert decision.state["sha256"] == SHA and decision.state["active"] is True
    again = decide_reevaluation(gate, reevaluate, observe(now, decision.state))
    # Observed again before its Job shows up: the same round, never a second one.
    assert again.actions == (StartRound(1),) and again.state["round"] == 1


def test_an_active_round_without_its_job_recreates_the_same_round() -> None:
    gate, reevaluate = spec()
    now = datetime(2026, 3, 1, 12, 1, tzinfo=UTC)
    assert decide_reevaluation(gate, reevaluate, observe(now, ACTIVE)).actions == (StartRound(2),)
    running = observe(now, ACTIVE, job=JobView("j", active=1))
    assert decide_reevaluation(gate, reevaluate, running).actions == ()


@pytest.mark.parametrize(
    ("results", "rollback", "verdict", "actions", "condition"),
    [
        (PASS, True, "Pass", (), "True"),
        (UNSURE, True, "Inconclusive", (), "Unknown"),
        (FAIL, False, "Fail", (), "False"),
        (FAIL, True, "Fail", (RollBack(SHA),), "False"),
    ],
)
def test_round_outcomes(
    results: dict[str, Any],
    rollback: bool,
    verdict: str,
    actions: tuple[Any, ...],
    condition: str,
) -> None:
    gate, reevaluate = spec(rollback=rollback)
    now = datetime(2026, 3, 1, 12, 20, tzinfo=UTC)
    job = JobView("j", succeeded=1, finished="Complete")
    decision = decide_reevaluation(gate, reevaluate, observe(now, ACTIVE, job=job, results=results))
    assert decision.state["lastVerdict"] == verdict
    assert decision.state["active"] is False
    assert decision.actions == actions
    assert decision.condition is not None and decision.condition.status == condition
    assert decision.condition.message.startswith("round 2: ")


def test_a_failed_eval_job_is_an_error_and_never_rolls_back() -> None:
    gate, reevaluate = spec(rollback=True)
    now = datetime(2026, 3, 1, 12, 20, tzinfo=UTC)
    job = JobView("j", failed=2, finished="Failed", reason="BackoffLimitExceeded", message="OOM")
    decision = decide_reevaluation(gate, reevaluate, observe(now, ACTIVE, job=job))
    assert decision.actions == ()
    assert decision.state["lastVerdict"] == "Error"
    assert "OOM" in decision.state["lastReason"]


def test_an_invalid_schedule_is_reported_with_its_field() -> None:
    gate, reevaluate = spec(schedule="99 * * * *")
    decision = decide_reevaluation(gate, reevaluate, observe(PROMOTED_AT + timedelta(days=1)))
    assert decision.actions == ()
    assert decision.condition is not None
    assert decision.condition.message.startswith("spec.reevaluate.schedule: '99 * * * *'")


def test_rounds_have_their_own_job_and_results_beside_the_original() -> None:
    candidate = Candidate("s3://b/runs/x/adapter", "s3://b/base", "ab" * 32, "FineTuneJob x")
    pointer = PromotionRecord.model_validate(
        {"current": {"sha256": SHA, "uri": f"s3://b/serving/x/versions/{SHA[:12]}"}}
    )
    served = served_candidate(candidate, "s3://b/serving/x/", pointer, SHA)
    gate = GateRef("ml", "gate", "uid", 3)
    assert eval_job_name(gate) == "gate-eval-3"
    assert eval_job_name(GateRef("ml", "gate", "uid", 3, round=2)) == "gate-eval-3-r2"
    # Only the served version's files, never the whole history under the prefix.
    assert served.adapter_uri == f"s3://b/serving/x/versions/{SHA[:12]}"
    # A round that judges a version the pointer has since left still reads that one.
    moved = PromotionRecord.model_validate(
        {"current": {"sha256": "ef" * 32, "uri": "s3://b/serving/x/versions/efefefefefef"}}
    )
    assert served_candidate(candidate, "s3://b/serving/x", moved, SHA).adapter_uri == (
        f"s3://b/serving/x/versions/{SHA[:12]}"
    )
    # A v0.1 record, not yet migrated, served the files at the root.
    legacy = PromotionRecord.model_validate({"current": {"sha256": SHA}})
    assert served_candidate(candidate, "s3://b/serving/x/", legacy, SHA).adapter_uri == (
        "s3://b/serving/x"
    )
    assert results_uri(served, GateRef("ml", "gate", "uid", 3, round=2)) == (
        "s3://b/runs/x/evals/gate-g3-r2/results.json"
    )
