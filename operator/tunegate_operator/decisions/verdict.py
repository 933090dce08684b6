"""The verdict of an EvalGate and the promotion it allows (pure): candidate -> eval Job
-> verdict -> promotion.

Promotion is an action the decision asks for only when the verdict is Pass (and,
in manual mode, the approval annotation is set); Fail, Inconclusive and errors
never promote.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from tunegate_contract.base import DocumentError, rfc3339
from tunegate_contract.eval_results import EvalResults
from tunegate_operator.api.evalgate import EvalGateSpec, Phase, Verdict
from tunegate_operator.api.names import APPROVE_ANNOTATION
from tunegate_operator.builders.eval_job import Candidate
from tunegate_operator.decisions.conditions import Cond
from tunegate_operator.decisions.evalgate_actions import (
    CreateEvalJob,
    EvalGateDecision,
    Promote,
)
from tunegate_operator.decisions.gate import (
    GateInputError,
    GateVerdict,
    Outcome,
    SuiteScores,
    judge_suites,
)
from tunegate_operator.decisions.vocabulary import (
    POD_CREATION_FAILED,
    Event,
    JobView,
    pod_creation_problem,
)

# results.json as read: the document, or why it is not one.
ResultsRead = EvalResults | DocumentError

AWAITING_APPROVAL = (
    f"Pass; waiting for approval: kubectl annotate evalgate <name> {APPROVE_ANNOTATION}=true"
)


@dataclass(frozen=True)
class CandidateProblem:
    waiting: bool
    reason: str
    message: str


@dataclass(frozen=True)
class VerdictObserved:
    now: datetime
    generation: int
    status: Mapping[str, Any]
    annotations: Mapping[str, str]
    candidate: Candidate | CandidateProblem
    eval_job: JobView | None = None
    results: ResultsRead | None = None  # the eval command's results.json
    promoted_sha256: str | None = None  # what promotion.uri serves now, if this candidate
    superseded_by: str | None = None  # promotion.uri moved on from this candidate to that
    recorded: bool = False  # the status holds this generation's verdict on this candidate


def verdict_recorded(status: Mapping[str, Any], generation: int, candidate: Candidate) -> bool:
    """A settled gate: its status already judges this candidate at this generation, so
    results are not read nor bootstrapped again (until the spec or candidate changes)."""
    decision = status.get("decision") or {}
    return (
        status.get("observedGeneration") == generation
        and decision.get("judged") == candidate.identity
        and decision.get("verdict") in ("Pass", "Fail", "Inconclusive")
        and bool(status.get("results"))
    )


@dataclass(frozen=True)
class Judgement:
    verdict: Verdict
    outcome: Outcome
    reason: str
    status: dict[str, Any]  # results, summary, decision


def suite_scores(spec: EvalGateSpec, results: EvalResults) -> list[SuiteScores]:
    """Pair the spec's suites with the eval command's per-item scores."""
    scores = []
    for suite in spec.suites:
        row = results.suite(suite.name)
        if row is None:
            raise GateInputError(f"results have no suite {suite.name!r}")
        if suite.group_by and row.groups is None:
            raise GateInputError(
                f"suite {suite.name}: groupBy {suite.group_by!r} is set but the results carry "
                "no group labels (an eval image older than the operator?)"
            )
        threshold = {"target": suite.min_improvement, "drift": suite.max_kl}.get(
            suite.role, suite.max_regression
        )
        scores.append(
            SuiteScores(
                suite.name,
                suite.role,
                suite.metric,
                row.base,
                row.candidate,
                float(threshold or 0.0),
                min_items=suite.min_items,
                groups=row.groups,
            )
        )
    return scores


def judge_results(spec: EvalGateSpec, results: ResultsRead, *, seed: int = 0) -> GateVerdict:
    """The spec's verdict on one results.json (raises GateInputError when unjudgeable)."""
    if isinstance(results, DocumentError):
        raise GateInputError(str(results))
    return judge_suites(
        suite_scores(spec, results),
        confidence=spec.confidence,
        samples=spec.bootstrap_samples,
        on_inconclusive=spec.on_inconclusive,
        seed=seed,
    )


def _rows(decision: GateVerdict) -> list[dict[str, Any]]:
    rows = []
    for r in decision.results:
        row: dict[str, Any] = {
            "suite": r.suite,
            "role": r.role,
            "metric": r.metric,
            "candidate": round(r.candidate, 4),
            "delta": round(r.delta, 4),
            "interval": {"low": round(r.low, 4), "high": round(r.high, 4)},
            "threshold": r.threshold,
            "verdict": r.verdict,
            "items": r.items,
            "method": r.method,
            "minimumDetectableDifference": round(r.mdd, 4),
        }
        if r.clusters is not None:
            row["clusters"] = r.clusters
        if r.items_needed is not None:
            row["itemsNeeded"] = r.items_needed
        if r.base is not None:  # drift has no base score: KL is itself the comparison
            row["base"] = round(r.base, 4)
        rows.append(row)
    return rows


def _summary(decision: GateVerdict) -> dict[str, float]:
    summary: dict[str, float] = {}
    for key, role in (("targetDelta", "target"), ("retentionDelta", "retention"), ("kl", "drift")):
        first = next((r for r in decision.results if r.role == role), None)
        if first is not None:
            summary[key] = round(first.delta, 4)
    return summary


def decide_verdict(
    spec: EvalGateSpec, observed: VerdictObserved, *, samples_seed: int = 0
) -> EvalGateDecision:
    """The verdict and whether to promote. Events mark transitions: they are kept only
    when the phase changes."""
    decision = _decide(spec, observed, samples_seed=samples_seed)
    if decision.phase == observed.status.get("phase"):
        return replace(decision, events=())
    return decision


def _decide(
    spec: EvalGateSpec, observed: VerdictObserved, *, samples_seed: int
) -> EvalGateDecision:
    candidate = observed.candidate
    if isinstance(candidate, CandidateProblem):
        phase: Phase = "WaitingForCandidate" if candidate.waiting else "Failed"
        return EvalGateDecision(
            phase,
            (Cond("CandidateReady", "False", candidate.reason, candidate.message),),
            events=(
                Event(
                    "Warning" if not candidate.waiting else "Normal",
                    candidate.reason,
                    candidate.message,
                ),
            ),
        )
    ready = Cond("CandidateReady", "True", "Ready", f"judging {candidate.source}")
    if observed.results is None and not observed.recorded:
        return _evaluating(observed, ready)
    judged = _judgement(spec, observed, candidate, samples_seed=samples_seed)
    if not isinstance(judged, Judgement):
        return replace(judged, conditions=(ready, *judged.conditions))
    return _promotion(spec, observed, candidate, judged, ready)


def _evaluating(observed: VerdictObserved, ready: Cond) -> EvalGateDecision:
    """No verdict yet: the eval Job is started, runs, or failed to give results."""
    job = observed.eval_job
    if job is not None and job.finished is not None:
        message = (
            f"the eval job failed: {job.message or job.reason}"
            if job.finished == "Failed"
            else "the eval job succeeded but wrote no results"
        )
        return EvalGateDecision(
            "Failed",
            (ready, Cond("Evaluated", "False", "EvalError", message)),
            status={
                "decision": {
                    "verdict": "Error",
                    "reason": message,
                    "decidedAt": rfc3339(observed.now),
                }
            },
            events=(Event("Warning", "EvalError", message),),
        )
    refused = pod_creation_problem(job, "eval")
    if refused:
        return EvalGateDecision(
            "Evaluating",
            (ready, Cond("Evaluated", "Unknown", POD_CREATION_FAILED, refused)),
            events=(Event("Warning", POD_CREATION_FAILED, refused),),
        )
    scoring = Cond(
        "Evaluated", "Unknown", "Evaluating", "scoring base and candidate on every suite"
    )
    return EvalGateDecision(
        "Evaluating",
        (ready, scoring),
        actions=() if job is not None else (CreateEvalJob(),),
        events=(Event("Normal", "Evaluating", "eval job started"),),
    )


def _promotion(
    spec: EvalGateSpec,
    observed: VerdictObserved,
    candidate: Candidate,
    judged: Judgement,
    ready: Cond,
) -> EvalGateDecision:
    """With a verdict: promote only a Pass, and only once (approved, not superseded)."""
    evaluated = Cond("Evaluated", "True", judged.verdict, judged.reason)

    def decided(phase: Phase, promoted: Cond, event: Event | None) -> EvalGateDecision:
        events = (event,) if event else ()
        return EvalGateDecision(phase, (ready, evaluated, promoted), judged.status, events=events)

    if judged.outcome != "Promote":
        message = f"not promoted: {judged.reason}; the current version stays"
        return decided(
            "Held" if judged.outcome == "Hold" else "Rejected",
            Cond("Promoted", "False", judged.verdict, message),
            Event("Warning", judged.verdict, judged.reason),
        )
    if spec.promotion is None:
        message = "spec.promotion is not set: reported only"
        return decided(
            "Passed",
            Cond("Promoted", "False", "NoPromotion", message),
            Event("Normal", "Pass", judged.reason),
        )
    approved = observed.annotations.get(APPROVE_ANNOTATION, "").lower() == "true"
    if spec.promotion.mode == "manual" and not approved:
        return decided(
            "AwaitingApproval",
            Cond("Promoted", "False", "AwaitingApproval", AWAITING_APPROVAL),
            Event("Normal", "AwaitingApproval", AWAITING_APPROVAL),
        )
    if observed.superseded_by is not None:
        message = (
            f"{spec.promotion.uri} has since been given {observed.superseded_by}; "
            f"{candidate.source} is kept in its history and not promoted again"
        )
        return decided(
            "Superseded",
            Cond("Promoted", "False", "Superseded", message),
            Event("Normal", "Superseded", message),
        )
    served = observed.promoted_sha256
    if served is not None and candidate.sha256 in (None, served):
        message = f"{spec.promotion.uri} serves {candidate.source} (sha256 {served[:12]})"
        return decided(
            "Promoted",
            Cond("Promoted", "True", "Promoted", message),
            Event("Normal", "Promoted", message),
        )
    promoting = decided(
        "AwaitingApproval" if spec.promotion.mode == "manual" else "Evaluating",
        Cond("Promoted", "Unknown", "Promoting", f"copying the adapter to {spec.promotion.uri}"),
        None,
    )
    return replace(promoting, actions=(Promote(candidate),))


def _judgement(
    spec: EvalGateSpec, observed: VerdictObserved, candidate: Candidate, *, samples_seed: int
) -> Judgement | EvalGateDecision:
    """The verdict: as recorded in the status for a settled judged, else computed from the
    results (an EvalGateDecision when they cannot be judged)."""
    if observed.recorded:
        recorded = observed.status["decision"]
        verdict = recorded["verdict"]
        outcome: Outcome = "Hold"
        if verdict == "Pass":
            outcome = "Promote"
        elif verdict == "Fail" or spec.on_inconclusive == "fail":
            outcome = "Reject"
        kept = {k: observed.status[k] for k in ("results", "summary", "decision")}
        return Judgement(verdict, outcome, str(recorded.get("reason", "")), kept)
    assert observed.results is not None
    try:
        judged = judge_results(spec, observed.results, seed=samples_seed)
    except GateInputError as exc:
        message = f"results cannot be judged: {exc}"
        return EvalGateDecision(
            "Failed",
            (Cond("Evaluated", "False", "EvalError", message),),
            status={"decision": {"verdict": "Error", "reason": message}},
            events=(Event("Warning", "EvalError", message),),
        )
    status: dict[str, Any] = {
        "results": _rows(judged),
        "summary": _summary(judged),
        "decision": {
            "verdict": judged.verdict,
            "reason": judged.reason,
            "decidedAt": (observed.status.get("decision") or {}).get("decidedAt")
            or rfc3339(observed.now),
            "judged": candidate.identity,
        },
    }
    return Judgement(judged.verdict, judged.outcome, judged.reason, status)


def describe(results: Sequence[Mapping[str, Any]]) -> str:
    """The per-suite table, as `kubectl describe` readers want it in an event."""
    return "; ".join(
        f"{r['suite']} {r['verdict']} Δ{r['delta']:+.3f} "
        f"[{r['interval']['low']:+.3f}, {r['interval']['high']:+.3f}]"
        for r in results
    )
