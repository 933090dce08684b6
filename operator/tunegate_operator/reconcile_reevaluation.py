"""Scheduled re-evaluation of a promoted adapter: observe, decide (pure), apply."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from tunegate_operator.api.evalgate import EvalGateSpec, ReevaluateSpec
from tunegate_operator.builders.eval_job import (
    Candidate,
    GateRef,
    eval_job,
    eval_job_name,
    results_uri,
)
from tunegate_operator.builders.jobs import trainer_service_account
from tunegate_operator.decisions.conditions import Cond
from tunegate_operator.decisions.finetunejob import Event
from tunegate_operator.decisions.reevaluation import (
    ReevalObserved,
    RollBack,
    StartRound,
    decide_reevaluation,
    parse_stamp,
)
from tunegate_operator.k8s_io import Kube
from tunegate_operator.promotion import Promoted, PromotionError, current, roll_back, version_uri
from tunegate_operator.s3_io import S3
from tunegate_operator.settings import Settings


@dataclass(frozen=True)
class ReevalOutcome:
    state: dict[str, Any]
    condition: Cond | None
    restored: Promoted | None  # what the pointer serves after a rollback


def served_candidate(
    candidate: Candidate, promotion_uri: str, record: Mapping[str, Any], sha256: str | None
) -> Candidate:
    """The served version (its own files only, never the history), judged against the
    same base; results stay beside the original candidate's."""
    entry = record.get("current") or {}
    if sha256 is None or entry.get("sha256") == sha256:
        # A v0.1 record (not yet migrated) served the files at the root.
        uri = entry.get("uri") or promotion_uri.rstrip("/")
    else:
        uri = version_uri(promotion_uri, sha256)
    return replace(
        candidate,
        adapter_uri=uri,
        sha256=sha256,
        source=f"served {promotion_uri}",
        results_root=candidate.evals_root(),
    )


def reevaluate(
    spec: EvalGateSpec,
    reevaluate_spec: ReevaluateSpec,
    *,
    status: Mapping[str, Any],
    gate: GateRef,
    candidate: Candidate,
    kube: Kube,
    s3: S3,
    settings: Settings,
    now: datetime,
    emit: Callable[[Event], None],
) -> ReevalOutcome:
    assert spec.promotion is not None
    state = dict(status.get("reevaluation") or {})
    record = current(s3, spec.promotion.uri) or {}
    served_sha = (record.get("current") or {}).get("sha256")
    served = served_candidate(
        candidate, spec.promotion.uri, record, state.get("sha256") or served_sha
    )
    round_gate = replace(gate, round=int(state.get("round", 0)))
    job = results = None
    if state.get("active"):
        job = kube.job_view(gate.namespace, eval_job_name(round_gate))
        results = s3.read_json(results_uri(served, round_gate))
    promoted_at = (status.get("promoted") or {}).get("at")
    decision = decide_reevaluation(
        spec,
        reevaluate_spec,
        ReevalObserved(
            now=now,
            state=state,
            promoted_at=parse_stamp(promoted_at) if promoted_at else now,
            served_sha256=served_sha,
            job=job,
            results=results,
        ),
    )
    restored = None
    condition = decision.condition
    for action in decision.actions:
        if isinstance(action, StartRound):
            round_candidate = served_candidate(
                candidate, spec.promotion.uri, record, decision.state.get("sha256")
            )
            kube.create_workload(
                eval_job(
                    spec,
                    gate=replace(gate, round=action.round),
                    candidate=round_candidate,
                    settings=settings,
                    model_bytes=s3.model_size(round_candidate.base_model_uri),
                ),
                trainer_service_account(gate.namespace, settings),
            )
        elif isinstance(action, RollBack):
            try:
                done = roll_back(
                    s3,
                    promotion_uri=spec.promotion.uri,
                    failed_sha256=action.failed_sha256,
                    gate=f"{gate.namespace}/{gate.name}",
                )
            except PromotionError as exc:
                message = f"rollback failed: {exc}"
                emit(Event("Warning", "RollbackFailed", message))
                condition = Cond("Reevaluated", "False", "RollbackFailed", message)
                continue
            restored = done
            emit(
                Event(
                    "Warning",
                    "RolledBack",
                    f"{done.uri} serves {done.sha256[:12]} again "
                    f"(replaced {action.failed_sha256[:12]})",
                )
            )
    for event in decision.events:
        emit(event)
    return ReevalOutcome(decision.state, condition, restored)
