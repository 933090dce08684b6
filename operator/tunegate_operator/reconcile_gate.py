"""One reconciliation of an EvalGate: observe (I/O), decide (pure), apply (I/O)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from tunegate_operator import report
from tunegate_operator.api.evalgate import EvalGateSpec, PromotionSpec
from tunegate_operator.api.finetunejob import FineTuneJobSpec
from tunegate_operator.builders.eval_job import (
    Candidate,
    GateRef,
    eval_job,
    eval_job_name,
    results_uri,
)
from tunegate_operator.builders.jobs import trainer_service_account
from tunegate_operator.decisions.conditions import Cond, merge_conditions
from tunegate_operator.decisions.evalgate import (
    CandidateProblem,
    CreateEvalJob,
    Decision,
    Observed,
    Promote,
    decide,
    describe,
)
from tunegate_operator.decisions.finetunejob import Event
from tunegate_operator.decisions.handoff import handoff_due
from tunegate_operator.k8s_io import Kube
from tunegate_operator.promotion import (
    Promoted,
    PromotionError,
    WriteConflictError,
    current,
    promote,
    promoted_of,
)
from tunegate_operator.reconcile import status_changed
from tunegate_operator.reconcile_reevaluation import reevaluate
from tunegate_operator.s3_io import S3
from tunegate_operator.serving_handoff import hand_off
from tunegate_operator.settings import Settings

log = logging.getLogger("tunegate")


@dataclass(frozen=True)
class GateOutcome:
    decision: Decision
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
) -> tuple[Observed, dict[str, Any] | None]:
    """The decision's inputs, and the promotion pointer as read (None without one)."""
    meta = body["metadata"]
    candidate = resolve_candidate(spec, gate.namespace, kube)
    results = job = pointer = None
    promoted_sha = superseded_by = None
    if isinstance(candidate, Candidate):
        job = kube.job_view(gate.namespace, eval_job_name(gate))
        results = s3.read_json(results_uri(candidate, gate))
        if spec.promotion is not None:
            pointer = current(s3, spec.promotion.uri) or {}
            entry = pointer.get("current") or {}
            if entry.get("source") == candidate.adapter_uri:
                promoted_sha = entry.get("sha256")
            elif any(
                e.get("source") == candidate.adapter_uri
                for e in [*(pointer.get("previous") or []), *(pointer.get("rolledBack") or [])]
            ):
                # Promoted once and replaced since: another gate owns the URI now.
                superseded_by = str(entry.get("source") or "another version")
    observed = Observed(
        now=now,
        generation=gate.generation,
        status=body.get("status") or {},
        annotations=meta.get("annotations") or {},
        candidate=candidate,
        eval_job=job,
        results=results,
        promoted_sha256=promoted_sha,
        superseded_by=superseded_by,
    )
    return observed, pointer


def _manifest_files(s3: S3, candidate: Candidate) -> tuple[dict[str, str], str | None]:
    """Per-file digests from the FineTuneJob's manifest, next to its adapter."""
    manifest_uri = candidate.adapter_uri.rstrip("/").rsplit("/", 1)[0] + "/manifest.json"
    manifest = s3.read_json(manifest_uri) or {}
    adapter = manifest.get("adapter") or {}
    return dict(adapter.get("files") or {}), adapter.get("sha256") or candidate.sha256


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
        s3.write_bytes(f"{folder}/{file}", body, content_type="image/png")
    if has_loss:
        s3.copy(loss_curve, f"{folder}/loss.png")
    s3.write_bytes(index_uri, page.encode(), content_type="text/html; charset=utf-8")


def _promotion_failed(decision: Decision, message: str) -> Decision:
    kept = tuple(c for c in decision.conditions if c.type != "Promoted")
    return Decision(
        "Failed", (*kept, Cond("Promoted", "False", "PromotionFailed", message)), decision.status
    )


def _promotion_refused(status: Mapping[str, Any], generation: int) -> bool:
    return (
        status.get("phase") == "Failed"
        and status.get("observedGeneration") == generation
        and any(
            c.get("type") == "Promoted" and c.get("reason") == "PromotionFailed"
            for c in status.get("conditions") or []
        )
    )


def _rolled_back(status: Mapping[str, Any], generation: int) -> bool:
    """A re-evaluation restored the previous version: this generation's candidate is
    not promoted again until the spec changes."""
    return status.get("phase") == "RolledBack" and status.get("observedGeneration") == generation


def _conditions_of(status: Mapping[str, Any]) -> tuple[Cond, ...]:
    return tuple(
        Cond(str(c["type"]), c["status"], str(c.get("reason", "")), str(c.get("message", "")))
        for c in status.get("conditions") or []
    )


def _promote(
    decision: Decision,
    observed: Observed,
    spec: EvalGateSpec,
    candidate: Candidate,
    *,
    s3: S3,
    gate: GateRef,
    emit: Callable[[Event], None],
) -> tuple[Decision, Promoted | None]:
    """The decision on the world after the promotion, and the version now served (None
    when not promoted: refused, or another gate moved the pointer meanwhile, which is
    decided again on the next pass)."""
    assert spec.promotion is not None
    files, digest = _manifest_files(s3, candidate)
    try:
        served = promote(
            s3,
            adapter_uri=candidate.adapter_uri,
            promotion_uri=spec.promotion.uri,
            expected_files=files,
            expected_sha256=digest,
            gate=f"{gate.namespace}/{gate.name}",
        )
    except PromotionError as exc:
        emit(Event("Warning", "PromotionFailed", str(exc)))
        return _promotion_failed(decision, str(exc)), None
    except WriteConflictError:
        log.info("evalgate %s/%s: promotion.json changed meanwhile", gate.namespace, gate.name)
        return decision, None
    # The same rules, on the new world, then report Promoted.
    return decide(spec, replace(observed, promoted_sha256=served.sha256)), served


def _hand_off_if_due(
    decision: Decision,
    promotion: PromotionSpec,
    served: Promoted,
    *,
    status: Mapping[str, Any],
    kube: Kube,
    gate: GateRef,
    now: datetime,
    emit: Callable[[Event], None],
    extra: dict[str, Any],
) -> Decision:
    """Tell serving about the served version once this gate put it there."""
    due = handoff_due(
        decision.phase,
        (status.get("promoted") or {}).get("sha256"),
        served.sha256,
        (status.get("handoff") or {}).get("sha256"),
    )
    if not due or not (promotion.config_map or promotion.handoff):
        return decision
    told = hand_off(
        kube,
        namespace=gate.namespace,
        gate_name=gate.name,
        promotion=promotion,
        served=served,
        now=now,
    )
    if told.status is not None:
        extra["handoff"] = told.status
    before = next((c for c in _conditions_of(status) if c.type == "HandedOff"), None)
    if before != told.condition:  # a failure retried every pass is reported once
        emit(told.event)
    kept = tuple(c for c in decision.conditions if c.type != "HandedOff")
    return replace(decision, conditions=(*kept, told.condition))


def reconcile_gate(
    body: Mapping[str, Any], *, kube: Kube, settings: Settings, emit: Callable[[Event], None]
) -> GateOutcome:
    meta, status = body["metadata"], body.get("status") or {}
    spec = EvalGateSpec.model_validate(body["spec"])
    gate = GateRef(meta["namespace"], meta["name"], meta["uid"], int(meta.get("generation", 1)))
    s3 = S3(*settings.s3_location(spec.storage))
    now = datetime.now(UTC)
    observed, pointer = observe(body, spec, kube=kube, s3=s3, gate=gate, now=now)
    decision = decide(spec, observed)
    served = promoted_of(pointer) if pointer else None
    if _promotion_refused(status, gate.generation) and decision.actions:
        # Not retried every few seconds: the spec must change (new generation) first.
        decision = Decision("Failed", _conditions_of(status), decision.status)
    if _rolled_back(status, gate.generation):
        decision = Decision("RolledBack", _conditions_of(status), decision.status)
    extra: dict[str, Any] = {}
    for action in decision.actions:
        if isinstance(action, CreateEvalJob) and isinstance(observed.candidate, Candidate):
            kube.create_workload(
                eval_job(
                    spec,
                    gate=gate,
                    candidate=observed.candidate,
                    settings=settings,
                    model_bytes=s3.model_size(observed.candidate.base_model_uri),
                ),
                trainer_service_account(gate.namespace, settings),
            )
        elif isinstance(action, Promote) and spec.promotion is not None:
            decision, promoted_now = _promote(
                decision, observed, spec, action.candidate, s3=s3, gate=gate, emit=emit
            )
            served = promoted_now or served
    # The status mirrors the pointer (also after a crash between the two writes).
    if decision.phase == "Promoted" and served and status.get("promoted") != served.status():
        extra["promoted"] = served.status()
    if "results" in decision.status and isinstance(observed.candidate, Candidate):
        report = results_uri(observed.candidate, gate).rsplit("/", 1)[0] + "/report/index.html"
        if status.get("report") != report:
            publish_report(
                s3,
                report,
                spec=spec,
                gate=gate,
                candidate=observed.candidate,
                decision_status=decision.status,
            )
            extra["report"] = report
    if (
        spec.reevaluate is not None
        and spec.promotion is not None
        and decision.phase == "Promoted"
        and isinstance(observed.candidate, Candidate)
    ):
        outcome = reevaluate(
            spec,
            spec.reevaluate,
            status={**status, **extra},
            gate=gate,
            candidate=observed.candidate,
            kube=kube,
            s3=s3,
            settings=settings,
            now=now,
            emit=emit,
        )
        extra["reevaluation"] = outcome.state
        # Between transitions the decision has no Reevaluated condition: keep the last one.
        reeval_conditions = (
            (outcome.condition,)
            if outcome.condition
            else tuple(c for c in _conditions_of(status) if c.type == "Reevaluated")
        )
        if outcome.restored is not None:
            served = outcome.restored
            extra["promoted"] = served.status()
            decision = Decision(
                "RolledBack",
                (
                    *(c for c in decision.conditions if c.type != "Promoted"),
                    Cond("Promoted", "False", "RolledBack", str(outcome.state.get("lastReason"))),
                    *reeval_conditions,
                ),
                decision.status,
            )
        else:
            decision = replace(decision, conditions=(*decision.conditions, *reeval_conditions))
    elif _rolled_back(status, gate.generation) and status.get("reevaluation"):
        extra["reevaluation"] = status["reevaluation"]
    if spec.promotion is not None and served is not None:
        decision = _hand_off_if_due(
            decision,
            spec.promotion,
            served,
            status={**status, **extra},
            kube=kube,
            gate=gate,
            now=now,
            emit=emit,
            extra=extra,
        )
    for event in decision.events:
        emit(event)
    if "results" in decision.status and status.get("phase") != decision.phase:
        emit(Event("Normal", "Results", describe(decision.status["results"])[:1000]))
    conditions = merge_conditions(
        status.get("conditions") or [], decision.conditions, now=now, generation=gate.generation
    )
    new_status = {
        **decision.status,
        **extra,
        "phase": decision.phase,
        "observedGeneration": gate.generation,
        "conditions": conditions,
    }
    if status_changed(status, new_status):
        log.debug("evalgate %s/%s: status -> %s", gate.namespace, gate.name, decision.phase)
        kube.patch_status("evalgates", gate.namespace, gate.name, new_status)
    return GateOutcome(decision, status.get("phase"))
