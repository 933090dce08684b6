"""One EvalGate reconcile, decided (pure): the rules that carry a gate's state between
passes (a refused promotion stays refused, a rollback seen on the pointer, the
re-evaluation's condition between rounds), the status mirroring the pointer, the
hand-off and report actions, and the folds of action outcomes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from gate_specs import eval_results, gate_spec

from tunegate_contract.eval_results import EvalResults
from tunegate_contract.promotion_record import PromotionRecord
from tunegate_operator.api.evalgate import EvalGateSpec
from tunegate_operator.builders.eval_job import Candidate
from tunegate_operator.decisions.conditions import Cond
from tunegate_operator.decisions.evalgate import (
    GateObserved,
    decide_evalgate,
    handed_off,
    promotion_failed,
    rollback_failed,
)
from tunegate_operator.decisions.evalgate_actions import (
    EvalGateDecision,
    HandOff,
    Promote,
    PublishReport,
    RollBack,
    StartRound,
)
from tunegate_operator.decisions.promotion_record import NO_POINTER, replaced_by, served_sha256_of
from tunegate_operator.decisions.verdict import VerdictObserved
from tunegate_operator.decisions.vocabulary import Event

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
ADAPTER = "s3://runs/legal/adapter"
MINE, OLDER, OTHER = "a1" * 32, "b2" * 32, "c3" * 32
CANDIDATE = Candidate(ADAPTER, "s3://models/base", MINE, "FineTuneJob legal")
ROOT = "s3://serving/legal"
REPORT = "s3://runs/legal/evals/gate-g3/report/index.html"
PASS = eval_results([0.0] * 100, [1.0] * 100)
FAIL = eval_results([1.0] * 100, [0.0] * 100)


def spec(**promotion: Any) -> EvalGateSpec:
    return gate_spec(
        promotion={"mode": "auto", "uri": ROOT, "configMap": "legal-serving"} | promotion,
        reevaluate={"schedule": "@daily", "rollbackOnFail": True},
    )


def entry(sha: str, source: str, at: str = "2026-06-01T11:00:00Z") -> dict[str, Any]:
    return {"sha256": sha, "uri": f"{ROOT}/versions/{sha[:12]}", "source": source, "at": at}


def pointer(current: str, source: str, **lists: list[dict[str, Any]]) -> dict[str, Any]:
    return {"layout": 2, "current": entry(current, source), **lists}


SERVES_MINE = pointer(MINE, ADAPTER, previous=[entry(OLDER, "s3://runs/older/adapter")])
MINE_ROLLED_BACK = pointer(
    OLDER, "s3://runs/older/adapter", previous=[], rolledBack=[entry(MINE, ADAPTER)]
)
MOVED_ON = pointer(OTHER, "s3://runs/other/adapter", previous=[entry(MINE, ADAPTER)])
PROMOTED_MINE = {"uri": f"{ROOT}/versions/{MINE[:12]}", "sha256": MINE, "previous": OLDER}


def status(phase: str, generation: int = 3, **fields: Any) -> dict[str, Any]:
    return {"phase": phase, "observedGeneration": generation, "report": REPORT, **fields}


def observe(
    status: dict[str, Any],
    pointer: dict[str, Any] | None,
    *,
    results: EvalResults | None = PASS,
    **round_: Any,
) -> GateObserved:
    """As reconcile_evalgate.observe reads the world: the pointer parsed, and what it
    says about this candidate."""
    record = None if pointer is None else PromotionRecord.model_validate(pointer)
    facts = VerdictObserved(
        NOW,
        3,
        status,
        {},
        CANDIDATE,
        results=results,
        promoted_sha256=served_sha256_of(record or NO_POINTER, ADAPTER),
        superseded_by=replaced_by(record or NO_POINTER, ADAPTER),
    )
    return GateObserved(facts, record, report_uri=REPORT, adapter_uri=ADAPTER, **round_)


def kinds(decision: EvalGateDecision) -> list[str]:
    return [type(a).__name__ for a in decision.actions]


def cond(decision: EvalGateDecision, kind: str) -> Cond:
    return next(c for c in decision.conditions if c.type == kind)


HANDED_MINE = {"sha256": MINE, "at": "2026-06-01T11:00:05Z", "targets": []}


@pytest.mark.parametrize(
    ("case", "observed", "phase", "actions"),
    [
        (
            "pass, nothing promoted yet: promote (and publish the report)",
            observe({}, {}),
            "Evaluating",
            ["Promote", "PublishReport"],
        ),
        (
            "the pointer names this candidate: Promoted, serving is told",
            observe(status("Evaluating"), SERVES_MINE),
            "Promoted",
            ["HandOff"],
        ),
        (
            "Promoted and handed off: nothing to do",
            observe(status("Promoted", promoted=PROMOTED_MINE, handoff=HANDED_MINE), SERVES_MINE),
            "Promoted",
            [],
        ),
        (
            "a refused promotion stays Failed at this generation",
            observe(
                status(
                    "Failed",
                    conditions=[
                        {"type": "Promoted", "status": "False", "reason": "PromotionFailed"}
                    ],
                ),
                {},
            ),
            "Failed",
            [],
        ),
        (
            "a refused promotion is tried again at a new generation",
            observe(
                status(
                    "Failed",
                    generation=2,
                    conditions=[
                        {"type": "Promoted", "status": "False", "reason": "PromotionFailed"}
                    ],
                ),
                {},
            ),
            "Evaluating",
            ["Promote"],
        ),
        (
            "the pointer shows this candidate rolled back: RolledBack, the restored one told",
            observe(
                status("Promoted", promoted=PROMOTED_MINE, handoff=HANDED_MINE), MINE_ROLLED_BACK
            ),
            "RolledBack",
            ["HandOff"],
        ),
        (
            "RolledBack and handed off: it stays so",
            observe(
                status(
                    "RolledBack",
                    promoted={"sha256": OLDER, "previous": MINE},
                    handoff={"sha256": OLDER},
                ),
                MINE_ROLLED_BACK,
            ),
            "RolledBack",
            [],
        ),
        (
            "a rolled-back candidate at a new generation is only Superseded",
            observe(status("RolledBack", generation=2), MINE_ROLLED_BACK),
            "Superseded",
            [],
        ),
        (
            "another gate's version replaced it: Superseded, no hand-off",
            observe(status("Promoted", promoted=PROMOTED_MINE, handoff=HANDED_MINE), MOVED_ON),
            "Superseded",
            [],
        ),
        (
            "a re-evaluation is due: a round starts",
            observe(
                status(
                    "Promoted",
                    promoted=PROMOTED_MINE | {"at": "2026-05-29T12:00:00Z"},
                    handoff=HANDED_MINE,
                ),
                SERVES_MINE,
            ),
            "Promoted",
            ["StartRound"],
        ),
        (
            "a round that fails asks for a rollback (seen on the pointer next pass)",
            observe(
                status(
                    "Promoted",
                    promoted=PROMOTED_MINE,
                    handoff=HANDED_MINE,
                    reevaluation={"round": 1, "active": True, "sha256": MINE},
                ),
                SERVES_MINE,
                round_results=FAIL,
            ),
            "Promoted",
            ["RollBack"],
        ),
        (
            "no report yet: it is published",
            observe(status("Rejected") | {"report": None}, {}, results=FAIL),
            "Rejected",
            ["PublishReport"],
        ),
    ],
)
def test_evalgate_decision_table(
    case: str, observed: GateObserved, phase: str, actions: list[str]
) -> None:
    decision = decide_evalgate(spec(), observed)
    assert decision.phase == phase
    assert kinds(decision) == actions


def test_promoted_status_mirrors_the_pointer_after_a_crash_between_the_writes() -> None:
    decision = decide_evalgate(spec(), observe(status("Evaluating"), SERVES_MINE))
    assert decision.status["promoted"] == {
        "uri": f"{ROOT}/versions/{MINE[:12]}",
        "sha256": MINE,
        "previous": OLDER,
        "at": "2026-06-01T11:00:00Z",
    }
    (handoff,) = decision.actions
    assert isinstance(handoff, HandOff) and handoff.served.sha256 == MINE
    assert "Promoted" in [e.reason for e in decision.events]


def test_a_rollback_seen_on_the_pointer_reports_what_was_restored() -> None:
    before = status(
        "Promoted",
        promoted=PROMOTED_MINE,
        handoff=HANDED_MINE,
        reevaluation={"round": 2, "lastVerdict": "Fail", "lastReason": "round 2: t (target) Fail"},
        conditions=[{"type": "Reevaluated", "status": "False", "reason": "Fail", "message": "m"}],
    )
    decision = decide_evalgate(spec(), observe(before, MINE_ROLLED_BACK))
    assert decision.status["promoted"]["sha256"] == OLDER
    assert decision.status["promoted"]["previous"] == MINE  # the version it replaced
    assert decision.status["reevaluation"]["lastVerdict"] == "Fail"
    assert cond(decision, "Promoted") == Cond(
        "Promoted", "False", "RolledBack", "round 2: t (target) Fail"
    )
    assert cond(decision, "Reevaluated").reason == "Fail"  # carried over
    assert [e.reason for e in decision.events] == ["RolledBack", "Results"]
    (handoff,) = decision.actions
    assert isinstance(handoff, HandOff) and handoff.served.sha256 == OLDER


def test_between_rounds_the_last_reevaluated_condition_stays() -> None:
    said = {"type": "Reevaluated", "status": "True", "reason": "Pass", "message": "round 1: ok"}
    before = status(
        "Promoted",
        promoted=PROMOTED_MINE,
        handoff=HANDED_MINE,
        reevaluation={"round": 1, "active": False, "scheduledAt": "2026-06-01T00:00:00Z"},
        conditions=[said],
    )
    decision = decide_evalgate(spec(), observe(before, SERVES_MINE))
    assert decision.actions == ()
    assert cond(decision, "Reevaluated") == Cond("Reevaluated", "True", "Pass", "round 1: ok")
    assert decision.status["reevaluation"]["nextAt"] == "2026-06-02T00:00:00Z"


def test_the_round_and_rollback_actions_carry_what_they_act_on() -> None:
    due = status(
        "Promoted",
        promoted=PROMOTED_MINE | {"at": "2026-05-29T12:00:00Z"},
        handoff=HANDED_MINE,
    )
    (start,) = decide_evalgate(spec(), observe(due, SERVES_MINE)).actions
    assert start == StartRound(1)
    failing = status(
        "Promoted",
        promoted=PROMOTED_MINE,
        handoff=HANDED_MINE,
        reevaluation={"round": 1, "active": True, "sha256": MINE},
    )
    (back,) = decide_evalgate(spec(), observe(failing, SERVES_MINE, round_results=FAIL)).actions
    assert back == RollBack(MINE)


def test_without_config_map_or_handoff_there_is_nothing_to_tell() -> None:
    decision = decide_evalgate(spec(configMap=None), observe(status("Evaluating"), SERVES_MINE))
    assert decision.phase == "Promoted" and decision.actions == ()


def test_the_report_is_published_once_and_the_table_is_an_event_on_transition() -> None:
    decision = decide_evalgate(spec(), observe({}, {}, results=FAIL))
    assert decision.actions == (PublishReport(REPORT),)
    assert decision.status["report"] == REPORT
    assert "Results" in [e.reason for e in decision.events]
    again = decide_evalgate(spec(), observe(status("Rejected"), {}, results=FAIL))
    assert again.actions == () and "Results" not in [e.reason for e in again.events]


def test_a_refused_promotion_fails_the_gate_with_the_reason() -> None:
    decided = decide_evalgate(spec(), observe(status("Evaluating"), {}))
    assert decided.actions == (Promote(CANDIDATE),)
    failed = promotion_failed(decided, "x has sha256 1, the manifest says 2; not promoted")
    assert failed.phase == "Failed" and failed.actions == ()
    assert cond(failed, "Promoted").reason == "PromotionFailed"
    assert [e.reason for e in failed.events] == ["PromotionFailed"]


def test_a_refused_rollback_is_said_in_the_reevaluated_condition() -> None:
    decided = EvalGateDecision("Promoted", (Cond("Reevaluated", "False", "Fail", "m"),))
    refused = rollback_failed(decided, "s3://serving/legal has no previous version to restore")
    assert refused.phase == "Promoted"
    assert cond(refused, "Reevaluated").reason == "RollbackFailed"
    assert [e.reason for e in refused.events] == ["RollbackFailed"]


def test_a_hand_off_failure_repeated_every_pass_is_reported_once() -> None:
    decided = EvalGateDecision("Promoted", ())
    refused = Cond("HandedOff", "False", "HandoffFailed", "apps/v1 Deployment/x: not found")
    event = Event("Warning", "HandoffFailed", refused.message)
    first = handed_off(decided, {}, record=None, condition=refused, event=event)
    assert first.events == (event,) and "handoff" not in first.status
    seen = {
        "conditions": [
            {
                "type": "HandedOff",
                "status": "False",
                "reason": "HandoffFailed",
                "message": refused.message,
            }
        ]
    }
    again = handed_off(decided, seen, record=None, condition=refused, event=event)
    assert again.events == () and cond(again, "HandedOff") == refused
    told = Cond("HandedOff", "True", "HandedOff", "v1 ConfigMap/x name ...")
    done = handed_off(
        decided,
        seen,
        record={"sha256": MINE},
        condition=told,
        event=Event("Normal", "HandedOff", ""),
    )
    assert done.status["handoff"] == {"sha256": MINE}
    assert [e.reason for e in done.events] == ["HandedOff"]


def test_a_promoted_gate_whose_pointer_vanished_promotes_again() -> None:
    """promotion.json deleted by hand: the candidate is promoted again, not re-evaluated."""
    due = status(
        "Promoted",
        promoted=PROMOTED_MINE | {"at": (NOW - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")},
    )
    decision = decide_evalgate(spec(), observe(due, {}))
    assert decision.phase == "Evaluating"  # nothing serves this candidate: promote again
    assert kinds(decision) == ["Promote"]
