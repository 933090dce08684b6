"""Scheduled re-evaluation of the promoted adapter (pure).

Once a gate has promoted, `spec.reevaluate.schedule` re-runs its suites on what
serving loads. Rounds are numbered; a round's Job and results are named by its
number, so a restarted operator finds the round it started instead of starting
another. A Fail restores the previous version only with `rollbackOnFail`; an
Error or Inconclusive never acts (no rollback on doubt).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from croniter import croniter

from tunegate_contract.base import parse_rfc3339, rfc3339
from tunegate_operator.api.evalgate import EvalGateSpec, ReevaluateSpec
from tunegate_operator.decisions.conditions import Cond
from tunegate_operator.decisions.evalgate_actions import RollBack, StartRound
from tunegate_operator.decisions.gate import GateInputError
from tunegate_operator.decisions.verdict import ResultsRead, judge_results
from tunegate_operator.decisions.vocabulary import Event, JobView


@dataclass(frozen=True)
class ReevalObserved:
    now: datetime
    state: Mapping[str, Any]  # status.reevaluation
    promoted_at: datetime  # when the current version was promoted
    served_sha256: str | None  # what promotion.uri serves now
    job: JobView | None = None  # the active round's Job
    results: ResultsRead | None = None  # the active round's results.json


@dataclass(frozen=True)
class ReevalDecision:
    state: dict[str, Any]
    condition: Cond | None = None
    actions: tuple[StartRound | RollBack, ...] = ()
    events: tuple[Event, ...] = ()


def schedule_error(schedule: str) -> str | None:
    if croniter.is_valid(schedule):
        return None
    return f"spec.reevaluate.schedule: {schedule!r} is not a valid cron expression"


def _next_after(schedule: str, moment: datetime) -> datetime:
    result: datetime = croniter(schedule, moment).get_next(datetime)
    return result


def _latest_due(schedule: str, now: datetime) -> datetime:
    """The most recent schedule time at or before now: a long outage starts one
    round, not one per missed tick."""
    result: datetime = croniter(schedule, now + timedelta(seconds=1)).get_prev(datetime)
    return result


def decide_reevaluation(
    spec: EvalGateSpec, reevaluate: ReevaluateSpec, observed: ReevalObserved
) -> ReevalDecision:
    state = dict(observed.state)
    error = schedule_error(reevaluate.schedule)
    if error:
        return ReevalDecision(state, Cond("Reevaluated", "False", "InvalidSchedule", error))
    if state.get("active"):
        return _finish_round(spec, reevaluate, observed, state)
    since = (
        parse_rfc3339(state["scheduledAt"]) if state.get("scheduledAt") else observed.promoted_at
    )
    due = _next_after(reevaluate.schedule, since)
    if observed.now < due:
        state["nextAt"] = rfc3339(due)
        return ReevalDecision(state)
    if observed.served_sha256 is None:
        return ReevalDecision(
            state,
            Cond("Reevaluated", "False", "NothingServed", "the promotion record is missing"),
        )
    round_number = int(state.get("round", 0)) + 1
    scheduled = _latest_due(reevaluate.schedule, observed.now)
    state.update(
        round=round_number,
        active=True,
        scheduledAt=rfc3339(scheduled),
        nextAt=rfc3339(_next_after(reevaluate.schedule, scheduled)),
        sha256=observed.served_sha256,
    )
    message = f"re-evaluating the served adapter (round {round_number})"
    return ReevalDecision(
        state,
        Cond("Reevaluated", "Unknown", "Evaluating", message),
        actions=(StartRound(round_number),),
        events=(Event("Normal", "Reevaluating", message),),
    )


def _finish_round(
    spec: EvalGateSpec,
    reevaluate: ReevaluateSpec,
    observed: ReevalObserved,
    state: dict[str, Any],
) -> ReevalDecision:
    round_number = int(state.get("round", 0))
    if observed.results is None:
        job = observed.job
        if job is None:  # the round was recorded but its Job not yet created
            return ReevalDecision(state, actions=(StartRound(round_number),))
        if job.finished is None:
            return ReevalDecision(state)
        reason = f"round {round_number}: the eval job failed: {job.message or job.reason}"
        return _error(state, observed, reason)
    try:
        gate = judge_results(spec, observed.results)
    except GateInputError as exc:
        reason = f"round {round_number}: results cannot be judged: {exc}"
        return _error(state, observed, reason)
    reason = f"round {round_number}: {gate.reason}"
    if gate.outcome != "Reject":
        passed = Cond("Reevaluated", "True", gate.verdict, reason)
        unsure = Cond("Reevaluated", "Unknown", gate.verdict, reason)
        return _done(
            state, observed, gate.verdict, reason, passed if gate.verdict == "Pass" else unsure
        )
    failed = str(state.get("sha256") or "")
    if not reevaluate.rollback_on_fail or not failed:
        message = f"{reason}; the served version stays (rollbackOnFail is off)"
        return _done(
            state, observed, gate.verdict, message, Cond("Reevaluated", "False", "Fail", message)
        )
    message = f"{reason}; restoring the previous version"
    decision = _done(
        state, observed, gate.verdict, message, Cond("Reevaluated", "False", "Fail", message)
    )
    return ReevalDecision(
        decision.state,
        decision.condition,
        actions=(RollBack(failed),),
        events=decision.events,
    )


def _error(state: dict[str, Any], observed: ReevalObserved, reason: str) -> ReevalDecision:
    return _done(state, observed, "Error", reason, Cond("Reevaluated", "False", "Error", reason))


def _done(
    state: dict[str, Any], observed: ReevalObserved, verdict: str, reason: str, condition: Cond
) -> ReevalDecision:
    state.update(
        active=False,
        lastVerdict=verdict,
        lastReason=reason,
        lastFinishedAt=rfc3339(observed.now),
    )
    event = Event(
        "Normal" if verdict == "Pass" else "Warning", f"Reevaluation{verdict}", reason[:1000]
    )
    return ReevalDecision(state, condition, events=(event,))
