"""One reconciliation of an EvalGate: observe (I/O), decide (pure), apply (I/O)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tunegate_contract.eval_results import EvalResults
from tunegate_contract.layout import RunLayout
from tunegate_contract.promotion_record import PromotionRecord
from tunegate_contract.run_documents import Manifest
from tunegate_operator import report
from tunegate_operator.api.evalgate import EvalGateSpec
from tunegate_operator.api.finetunejob import FineTuneJobSpec
from tunegate_operator.builders.eval_job import (
    Candidate,
    GateRef,
    eval_job,
    eval_job_name,
    eval_layout,
    results_uri,
)
from tunegate_operator.builders.job_envelope import trainer_service_account
from tunegate_operator.decisions.evalgate import (
    GateObserved,
    decide_evalgate,
    handed_off,
    promotion_failed,
    rollback_failed,
)
from tunegate_operator.decisions.evalgate_actions import (
    CreateEvalJob,
    EvalGateDecision,
    HandOff,
    Promote,
    PublishReport,
    RollBack,
    StartRound,
)
from tunegate_operator.decisions.promotion_record import (
    NO_POINTER,
    replaced_by,
    served_sha256_of,
)
from tunegate_operator.decisions.status_patch import desired_status, status_changed
from tunegate_operator.decisions.verdict import CandidateProblem, VerdictObserved, verdict_recorded
from tunegate_operator.decisions.vocabulary import Event
from tunegate_operator.k8s_io import Kube
from tunegate_operator.promotion import (
    PromotionError,
    WriteConflictError,
    current,
    promote,
    roll_back,
)
from tunegate_operator.reevaluation_io import observe_round, start_round
from tunegate_operator.s3_io import S3
from tunegate_operator.serving_handoff import hand_off
from tunegate_operator.settings import Settings

log = logging.getLogger("tunegate")


@dataclass(frozen=True)
class GateOutcome:
    decision: EvalGateDecision
    previous_phase: str | None


def resolve_candidate(
    spec: EvalGateSpec, namespace: str, kube: Kube
) -> Candidate | CandidateProblem:
    if spec.candidate.adapter_uri:
        model = spec.candidate.base_model
        return Candidate(
            spec.candidate.adapter_uri,
            model.uri if model else "",
            None,
            spec.candidate.adapter_uri,
            base_model_revision=model.revision if model else None,
            base_model_token_secret=model.token_secret if model else None,
        )
    assert spec.candidate.fine_tune_job_ref is not None
    name = spec.candidate.fine_tune_job_ref.name
    ftj = kube.read_ftj(namespace, name)
    if ftj is None:
        return CandidateProblem(
            True,
            "FineTuneJobNotFound",
            f"spec.candidate.fineTuneJobRef.name: FineTuneJob {name!r} does "
            "not exist in this namespace; waiting for it",
        )
    phase = (ftj.get("status") or {}).get("phase")
    if phase == "Failed":
        return CandidateProblem(
            False, "CandidateFailed", f"FineTuneJob {name!r} failed; there is nothing to evaluate"
        )
    adapter = (ftj.get("status") or {}).get("adapter") or {}
    if phase != "Succeeded" or not adapter.get("uri"):
        return CandidateProblem(
            True, "CandidateNotReady", f"waiting for FineTuneJob {name!r} to succeed (now {phase})"
        )
    ftj_spec = FineTuneJobSpec.model_validate(ftj["spec"])
    return Candidate(
        adapter["uri"],
        ftj_spec.model.uri,
        adapter.get("sha256"),
        f"FineTuneJob {name}",
        base_model_revision=ftj_spec.model.revision,
        base_model_token_secret=ftj_spec.model.token_secret,
    )


def observe(
    body: Mapping[str, Any], spec: EvalGateSpec, *, kube: Kube, s3: S3, gate: GateRef, now: datetime
) -> GateObserved:
    meta, status = body["metadata"], body.get("status") or {}
    candidate = resolve_candidate(spec, gate.namespace, kube)
    annotations = meta.get("annotations") or {}
    if not isinstance(candidate, Candidate):
        return GateObserved(VerdictObserved(now, gate.generation, status, annotations, candidate))
    # A settled gate keeps its verdict: no results read, no bootstrap; nor the pointer
    # when the verdict promotes nothing.
    recorded = verdict_recorded(status, gate.generation, candidate)
    verdict = (status.get("decision") or {}).get("verdict")
    pointer: PromotionRecord | None = None
    if spec.promotion is not None and (not recorded or verdict == "Pass"):
        pointer = current(s3, spec.promotion.uri) or NO_POINTER
    facts = VerdictObserved(
        now,
        gate.generation,
        status,
        annotations,
        candidate,
        eval_job=None if recorded else kube.job_view(gate.namespace, eval_job_name(gate)),
        results=(
            None
            if recorded
            else s3.read_document_or_error(results_uri(candidate, gate), EvalResults)
        ),
        promoted_sha256=served_sha256_of(pointer or NO_POINTER, candidate.adapter_uri),
        superseded_by=replaced_by(pointer or NO_POINTER, candidate.adapter_uri),
        recorded=recorded,
    )
    round_job = round_results = None
    if spec.promotion is not None and pointer is not None:
        round_job, round_results = observe_round(
            status,
            gate=gate,
            candidate=candidate,
            promotion_uri=spec.promotion.uri,
            pointer=pointer,
            kube=kube,
            s3=s3,
        )
    return GateObserved(
        facts,
        pointer,
        round_job,
        round_results,
        report_uri=eval_layout(candidate, gate).report,
        adapter_uri=candidate.adapter_uri,
    )


def _manifest_files(s3: S3, candidate: Candidate) -> tuple[dict[str, str], str | None]:
    """Per-file digests from the FineTuneJob's manifest, next to its adapter."""
    manifest = s3.read_document(RunLayout.of_adapter(candidate.adapter_uri).manifest, Manifest)
    if manifest is None:  # spec.candidate.adapterUri: no run, no manifest
        return {}, candidate.sha256
    return dict(manifest.adapter.files), manifest.adapter.sha256


def publish_report(
    s3: S3,
    index_uri: str,
    *,
    spec: EvalGateSpec,
    gate: GateRef,
    candidate: Candidate,
    decision_status: Mapping[str, Any],
) -> None:
    """The HTML page and its plots, next to the results (idempotent: same names)."""
    folder = index_uri.rsplit("/", 1)[0]
    loss_curve = candidate.adapter_uri.rstrip("/").rsplit("/", 1)[0] + "/loss.png"
    has_loss = s3.exists(loss_curve)
    page, images = report.render(
        name=f"{gate.namespace}/{gate.name}",
        rows=decision_status["results"],
        decision=decision_status["decision"],
        candidate=candidate.source,
        base=candidate.base_model_uri,
        confidence=spec.confidence,
        loss_curve=loss_curve if has_loss else None,
    )
    for file, body in images.items():
        s3.write_bytes(f"{folder}/{file}", body, content_type="image/svg+xml")
    if has_loss:
        s3.copy(loss_curve, f"{folder}/loss.png")
    s3.write_bytes(index_uri, page.encode(), content_type="text/html; charset=utf-8")


def apply_actions(
    decision: EvalGateDecision,
    spec: EvalGateSpec,
    observed: GateObserved,
    *,
    gate: GateRef,
    kube: Kube,
    s3: S3,
    settings: Settings,
    now: datetime,
) -> EvalGateDecision:
    """Run the decision's actions; returns it with the outcomes nothing else records
    folded in (a refused promotion or rollback, the hand-off)."""
    candidate = observed.verdict.candidate
    if not isinstance(candidate, Candidate):
        return decision
    for action in decision.actions:
        if isinstance(action, CreateEvalJob):
            job = eval_job(
                spec,
                gate=gate,
                candidate=candidate,
                settings=settings,
                model_bytes=s3.model_size(candidate.base_model_uri),
            )
            kube.create_workload(job, trainer_service_account(gate.namespace, settings))
        elif isinstance(action, Promote | RollBack):
            decision = _move_pointer(decision, action, spec, s3=s3, gate=gate)
        elif isinstance(action, StartRound):
            start_round(
                spec,
                action.round,
                decision.status.get("reevaluation") or {},
                gate=gate,
                candidate=candidate,
                pointer=observed.pointer or NO_POINTER,
                kube=kube,
                s3=s3,
                settings=settings,
            )
        elif isinstance(action, HandOff) and spec.promotion is not None:
            told = hand_off(
                kube, namespace=gate.namespace, gate_name=gate.name,
                promotion=spec.promotion, served=action.served, now=now,
            )  # fmt: skip
            decision = handed_off(
                decision, observed.verdict.status,
                record=told.status, condition=told.condition, event=told.event,
            )  # fmt: skip
        elif isinstance(action, PublishReport):
            publish_report(
                s3, action.uri, spec=spec, gate=gate, candidate=candidate,
                decision_status=decision.status,
            )  # fmt: skip
    return decision


def _move_pointer(
    decision: EvalGateDecision,
    action: Promote | RollBack,
    spec: EvalGateSpec,
    *,
    s3: S3,
    gate: GateRef,
) -> EvalGateDecision:
    """Promote or roll back; the next pass sees the pointer where this left it."""
    assert spec.promotion is not None
    by = f"{gate.namespace}/{gate.name}"
    try:
        if isinstance(action, Promote):
            files, digest = _manifest_files(s3, action.candidate)
            promote(
                s3,
                adapter_uri=action.candidate.adapter_uri,
                promotion_uri=spec.promotion.uri,
                expected_files=files,
                expected_sha256=digest,
                gate=by,
            )
        else:
            roll_back(
                s3, promotion_uri=spec.promotion.uri, failed_sha256=action.failed_sha256, gate=by
            )
    except PromotionError as exc:
        if isinstance(action, Promote):
            return promotion_failed(decision, str(exc))
        return rollback_failed(decision, str(exc))
    except WriteConflictError:
        log.info("evalgate %s: promotion.json changed meanwhile; decided again", by)
    return decision


def reconcile_evalgate(
    body: Mapping[str, Any], *, kube: Kube, settings: Settings, emit: Callable[[Event], None]
) -> GateOutcome:
    """Events go out before the status patch, as for a FineTuneJob."""
    meta, status = body["metadata"], body.get("status") or {}
    spec = EvalGateSpec.model_validate(body["spec"])
    gate = GateRef(meta["namespace"], meta["name"], meta["uid"], int(meta.get("generation", 1)))
    s3 = S3(*settings.s3_location(spec.storage))
    now = datetime.now(UTC)
    observed = observe(body, spec, kube=kube, s3=s3, gate=gate, now=now)
    decision = decide_evalgate(spec, observed)
    decision = apply_actions(
        decision, spec, observed, gate=gate, kube=kube, s3=s3, settings=settings, now=now
    )
    for event in decision.events:
        emit(event)
    new_status = desired_status(decision, status, now=now, generation=gate.generation)
    if status_changed(status, new_status):
        log.debug("evalgate %s/%s: status -> %s", gate.namespace, gate.name, decision.phase)
        kube.patch_status("evalgates", gate.namespace, gate.name, new_status)
    return GateOutcome(decision, status.get("phase"))
