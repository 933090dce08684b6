"""The I/O of a promoted gate's scheduled re-evaluation: reading the active round's
Job and results, and starting a round (decisions.reevaluation decides when)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from tunegate_contract.eval_results import EvalResults
from tunegate_contract.promotion_record import PromotionRecord
from tunegate_operator.api.evalgate import EvalGateSpec
from tunegate_operator.builders.eval_job import (
    Candidate,
    GateRef,
    eval_job,
    eval_job_name,
    results_uri,
)
from tunegate_operator.builders.job_envelope import trainer_service_account
from tunegate_operator.decisions.verdict import ResultsRead
from tunegate_operator.decisions.vocabulary import JobView
from tunegate_operator.k8s_io import Kube
from tunegate_operator.promotion import version_uri
from tunegate_operator.s3_io import S3
from tunegate_operator.settings import Settings


def served_candidate(
    candidate: Candidate, promotion_uri: str, record: PromotionRecord, sha256: str | None
) -> Candidate:
    """The served version (its own files only, never the history), judged against the
    same base; results stay beside the original candidate's."""
    entry = record.current
    if sha256 is None or (entry is not None and entry.sha256 == sha256):
        # A v0.1 record (not yet migrated) served the files at the root.
        uri = (entry.uri if entry else None) or promotion_uri.rstrip("/")
    else:
        uri = version_uri(promotion_uri, sha256)
    return replace(
        candidate,
        adapter_uri=uri,
        sha256=sha256,
        source=f"served {promotion_uri}",
        results_root=candidate.evals_root(),
    )


def observe_round(
    status: Mapping[str, Any],
    *,
    gate: GateRef,
    candidate: Candidate,
    promotion_uri: str,
    pointer: PromotionRecord,
    kube: Kube,
    s3: S3,
) -> tuple[JobView | None, ResultsRead | None]:
    """The active round's Job and results.json (nothing while no round runs)."""
    state = status.get("reevaluation") or {}
    if not state.get("active"):
        return None, None
    round_gate = replace(gate, round=int(state.get("round", 0)))
    served = served_candidate(candidate, promotion_uri, pointer, state.get("sha256"))
    job = kube.job_view(gate.namespace, eval_job_name(round_gate))
    return job, s3.read_document_or_error(results_uri(served, round_gate), EvalResults)


def start_round(
    spec: EvalGateSpec,
    number: int,
    state: Mapping[str, Any],
    *,
    gate: GateRef,
    candidate: Candidate,
    pointer: PromotionRecord,
    kube: Kube,
    s3: S3,
    settings: Settings,
) -> None:
    """The round's eval Job, on the version the round judges (`state.sha256`)."""
    assert spec.promotion is not None
    judged = served_candidate(candidate, spec.promotion.uri, pointer, state.get("sha256"))
    kube.create_workload(
        eval_job(
            spec,
            gate=replace(gate, round=number),
            candidate=judged,
            settings=settings,
            model_bytes=s3.model_size(judged.base_model_uri),
        ),
        trainer_service_account(gate.namespace, settings),
    )
