"""One EvalGate reconcile, decided (pure: no I/O here): the verdict and promotion
(decisions.verdict), the scheduled re-evaluation (decisions.reevaluation), the
hand-off to serving, the report, and the rules that carry a gate's state from one
pass to the next.

The I/O shell (reconcile_evalgate) runs the actions. What they change comes back as an
observation on the next pass: a promotion or rollback moves the pointer, which the
next pass reads. Only outcomes nothing else records are folded into this pass's
status, by the pure `promotion_failed`, `rollback_failed` and `handed_off` below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from tunegate_contract.base import parse_rfc3339
from tunegate_contract.promotion_record import PromotionRecord
from tunegate_operator.api.evalgate import EvalGateSpec
from tunegate_operator.decisions.conditions import Cond
from tunegate_operator.decisions.evalgate_actions import (
    EvalGateDecision,
    HandOff,
    PublishReport,
)
from tunegate_operator.decisions.handoff import handoff_due
from tunegate_operator.decisions.promotion_record import (
    NO_POINTER,
    Promoted,
    promoted_of,
    rolled_back_sha256,
)
from tunegate_operator.decisions.reevaluation import (
    ReevalObserved,
    decide_reevaluation,
)
from tunegate_operator.decisions.verdict import (
    ResultsRead,
    VerdictObserved,
    decide_verdict,
    describe,
)
from tunegate_operator.decisions.vocabulary import Event, JobView


@dataclass(frozen=True)
class GateObserved:
    verdict: VerdictObserved  # what the verdict and promotion decide on
    pointer: PromotionRecord | None = None  # promotion.json as read (None: no promotion)
    round_job: JobView | None = None  # the active re-evaluation round's Job
    round_results: ResultsRead | None = None  # and its results.json
    report_uri: str | None = None  # where this candidate's report is published
    adapter_uri: str | None = None  # the candidate's adapter (None: no candidate yet)


def decide_evalgate(spec: EvalGateSpec, observed: GateObserved) -> EvalGateDecision:
    facts = observed.verdict
    status, generation = facts.status, facts.generation
    served = promoted_of(observed.pointer or NO_POINTER)
    decision = decide_verdict(spec, facts)
    if promotion_refused(status, generation) and decision.actions:
        # Not retried every few seconds: the spec must change (new generation) first.
        decision = EvalGateDecision("Failed", conditions_of(status), decision.status)
    restored_over = _rolled_back_here(status, generation, observed)
    if restored_over is not None:
        decision = _rolled_back(decision, status, served, restored_over)
    elif decision.phase == "Promoted":
        decision = _promoted(spec, observed, decision, served)
    decision = _with_handoff(spec, decision, status, served)
    return _with_report(decision, status, observed.report_uri)


def conditions_of(status: Mapping[str, Any]) -> tuple[Cond, ...]:
    return tuple(
        Cond(str(c["type"]), c["status"], str(c.get("reason", "")), str(c.get("message", "")))
        for c in status.get("conditions") or []
    )


def promotion_refused(status: Mapping[str, Any], generation: int) -> bool:
    """This generation's promotion failed verification: it stays Failed."""
    return (
        status.get("phase") == "Failed"
        and status.get("observedGeneration") == generation
        and any(
            c.get("type") == "Promoted" and c.get("reason") == "PromotionFailed"
            for c in status.get("conditions") or []
        )
    )


def _rolled_back_here(
    status: Mapping[str, Any], generation: int, observed: GateObserved
) -> str | None:
    """The digest this gate's candidate had, when a re-evaluation of this generation
    rolled it back (the pointer lists it under rolledBack); None otherwise. A new
    generation starts over: the rolled-back candidate is then only Superseded."""
    if status.get("observedGeneration") != generation or observed.adapter_uri is None:
        return None
    failed = rolled_back_sha256(observed.pointer or NO_POINTER, observed.adapter_uri)
    if status.get("phase") == "RolledBack":
        return failed or str((status.get("promoted") or {}).get("previous") or "")
    if status.get("phase") == "Promoted" and failed:
        return failed
    return None


def _rolled_back(
    decision: EvalGateDecision, status: Mapping[str, Any], served: Promoted | None, failed: str
) -> EvalGateDecision:
    reevaluation = status.get("reevaluation") or {}
    kept = [c for c in decision.conditions if c.type not in ("Promoted", "Reevaluated")]
    reason = str(reevaluation.get("lastReason") or "a scheduled re-evaluation failed")
    kept.append(Cond("Promoted", "False", "RolledBack", reason))
    kept.extend(c for c in conditions_of(status) if c.type == "Reevaluated")
    new_status = {**decision.status, "reevaluation": reevaluation}
    events: tuple[Event, ...] = ()
    if status.get("phase") != "RolledBack" and served is not None:
        new_status["promoted"] = replace(served, previous=failed).status()
        message = f"{served.uri} serves {served.sha256[:12]} again (replaced {failed[:12]})"
        events = (Event("Warning", "RolledBack", message),)
    return EvalGateDecision("RolledBack", tuple(kept), new_status, events=events)


def _promoted(
    spec: EvalGateSpec, observed: GateObserved, decision: EvalGateDecision, served: Promoted | None
) -> EvalGateDecision:
    """Promoted: the status mirrors the pointer (also after a crash between the pointer
    and the status write), and a scheduled re-evaluation runs its course."""
    status = observed.verdict.status
    new_status = dict(decision.status)
    if served is not None:
        new_status["promoted"] = served.status()
    if spec.reevaluate is None or spec.promotion is None:
        return replace(decision, status=new_status)
    promoted_at = (status.get("promoted") or {}).get("at") or (served.at if served else "")
    round_decision = decide_reevaluation(
        spec,
        spec.reevaluate,
        ReevalObserved(
            now=observed.verdict.now,
            state=status.get("reevaluation") or {},
            promoted_at=parse_rfc3339(promoted_at) if promoted_at else observed.verdict.now,
            served_sha256=served.sha256 if served else None,
            job=observed.round_job,
            results=observed.round_results,
        ),
    )
    new_status["reevaluation"] = round_decision.state
    # Between transitions the round has no condition to say: the last one stays.
    said = (round_decision.condition,) if round_decision.condition else ()
    kept = said or tuple(c for c in conditions_of(status) if c.type == "Reevaluated")
    return EvalGateDecision(
        decision.phase,
        (*decision.conditions, *kept),
        new_status,
        actions=(*decision.actions, *round_decision.actions),
        events=(*decision.events, *round_decision.events),
    )


def _with_handoff(
    spec: EvalGateSpec,
    decision: EvalGateDecision,
    status: Mapping[str, Any],
    served: Promoted | None,
) -> EvalGateDecision:
    promotion = spec.promotion
    if promotion is None or served is None or not (promotion.config_map or promotion.handoff):
        return decision
    promoted = decision.status.get("promoted") or status.get("promoted") or {}
    handed = (status.get("handoff") or {}).get("sha256")
    if not handoff_due(decision.phase, promoted.get("sha256"), served.sha256, handed):
        return decision
    return replace(decision, actions=(*decision.actions, HandOff(served)))


def _with_report(
    decision: EvalGateDecision, status: Mapping[str, Any], report_uri: str | None
) -> EvalGateDecision:
    """With results: the report is published once, and the per-suite table is an event
    when the phase changes."""
    if "results" not in decision.status:
        return decision
    events = decision.events
    if status.get("phase") != decision.phase:
        table = describe(decision.status["results"])[:1000]
        events = (*events, Event("Normal", "Results", table))
    actions = decision.actions
    new_status = dict(decision.status)
    if report_uri is not None and status.get("report") != report_uri:
        actions = (*actions, PublishReport(report_uri))
        new_status["report"] = report_uri
    return replace(decision, status=new_status, actions=actions, events=events)


# --- outcomes of actions that nothing else records ---------------------------------


def promotion_failed(decision: EvalGateDecision, message: str) -> EvalGateDecision:
    """The version did not verify: the gate fails (and stays so, promotion_refused)."""
    kept = tuple(c for c in decision.conditions if c.type != "Promoted")
    return EvalGateDecision(
        "Failed",
        (*kept, Cond("Promoted", "False", "PromotionFailed", message)),
        decision.status,
        events=(*decision.events, Event("Warning", "PromotionFailed", message)),
    )


def rollback_failed(decision: EvalGateDecision, message: str) -> EvalGateDecision:
    said = f"rollback failed: {message}"
    kept = tuple(c for c in decision.conditions if c.type != "Reevaluated")
    return replace(
        decision,
        conditions=(*kept, Cond("Reevaluated", "False", "RollbackFailed", said)),
        events=(*decision.events, Event("Warning", "RollbackFailed", said)),
    )


def handed_off(
    decision: EvalGateDecision,
    status: Mapping[str, Any],
    *,
    record: Mapping[str, Any] | None,
    condition: Cond,
    event: Event,
) -> EvalGateDecision:
    """Serving was told (record: the new status.handoff) or refused (record None: retried
    next pass). A failure repeated every pass is reported once."""
    before = next((c for c in conditions_of(status) if c.type == "HandedOff"), None)
    kept = tuple(c for c in decision.conditions if c.type != "HandedOff")
    new_status = {**decision.status, "handoff": record} if record else decision.status
    events = decision.events if before == condition else (*decision.events, event)
    return replace(decision, conditions=(*kept, condition), status=new_status, events=events)
