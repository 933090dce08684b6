"""One reconciliation of a FineTuneJob: observe (I/O), decide_finetunejob (pure), apply (I/O)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tunegate_contract.base import DocumentError
from tunegate_contract.layout import RunLayout
from tunegate_contract.run_documents import AuditReport, Manifest, Progress
from tunegate_operator.api.finetunejob import FineTuneJobSpec
from tunegate_operator.builders import jobs
from tunegate_operator.builders.job_envelope import trainer_service_account
from tunegate_operator.builders.trainer_config import RunRef, credentials_secret
from tunegate_operator.decisions.finetunejob import (
    TERMINAL,
    CreateAuditJob,
    CreateTrainingJob,
    DeleteChildren,
    FineTuneJobDecision,
    FineTuneJobObserved,
    ManifestSummary,
    SetJobSuspended,
    SetWorkloadActive,
    decide_finetunejob,
)
from tunegate_operator.decisions.preflight import PreflightInputs, PreflightResult, preflight
from tunegate_operator.decisions.status_patch import desired_status, status_changed
from tunegate_operator.decisions.vocabulary import Event
from tunegate_operator.k8s_io import Kube
from tunegate_operator.kueue_io import WorkloadLookup, set_workload_active, workload_of_job
from tunegate_operator.s3_io import S3
from tunegate_operator.settings import Settings

log = logging.getLogger("tunegate")


@dataclass(frozen=True)
class Outcome:
    decision: FineTuneJobDecision
    previous_phase: str | None
    created: tuple[str, ...]


def _preflight(
    spec: FineTuneJobSpec, kube: Kube, s3: S3, namespace: str, settings: Settings
) -> PreflightResult:
    secret = credentials_secret(spec, settings)
    wanted = {"spec.dataset.train": spec.dataset.train}
    if spec.dataset.validation:
        wanted["spec.dataset.validation"] = spec.dataset.validation
    if spec.replay:
        wanted["spec.replay.dataset"] = spec.replay.dataset
    for index, uri in enumerate(spec.audit.contamination_sets):
        wanted[f"spec.audit.contaminationSets[{index}]"] = uri
    missing = {name: uri for name, uri in wanted.items() if not s3.exists(uri)}
    config_uri: str | None = None
    model_config: dict[str, Any] | None = None
    model_error: str | None = None
    if spec.model.uri.startswith("s3://"):
        config_uri = spec.model.uri.rstrip("/") + "/config.json"
        try:
            model_config = s3.read_json(config_uri)
        except DocumentError as exc:
            model_error = str(exc)
    return preflight(
        spec,
        PreflightInputs(
            secret_name=secret,
            secret_keys=kube.secret_keys(namespace, secret) if secret else None,
            token_secret_keys=(
                kube.secret_keys(namespace, spec.model.token_secret)
                if spec.model.token_secret
                else None
            ),
            missing_objects=missing,
            model_config_uri=config_uri,
            model_config=model_config,
            model_config_error=model_error,
            nodes=kube.nodes(),
        ),
    )


def _progress(s3: S3, layout: RunLayout) -> Progress | None:
    """Advisory: a malformed progress.json only leaves status.progress as it was."""
    try:
        return s3.read_document(layout.progress, Progress)
    except DocumentError as exc:
        log.warning("%s", exc)
        return None


def _recorded_audit(status: Mapping[str, Any]) -> AuditReport | None:
    audit = status.get("audit") or {}
    if audit.get("verdict") in ("Passed", "Warned", "Failed"):
        return AuditReport(verdict=audit["verdict"], findings=tuple(audit.get("findings") or ()))
    return None


def _queued(
    spec: FineTuneJobSpec, kube: Kube, namespace: str, train_jobs: Mapping[int, Any]
) -> WorkloadLookup:
    """Kueue's Workload for the latest attempt, read only for a queued, unfinished one."""
    latest = train_jobs[max(train_jobs)] if train_jobs else None
    if not spec.resources.queue_name or latest is None or latest.finished or not latest.uid:
        return WorkloadLookup(installed=True)
    return workload_of_job(kube, namespace, latest.uid)


def observe(
    body: Mapping[str, Any], spec: FineTuneJobSpec, *, kube: Kube, settings: Settings, now: datetime
) -> FineTuneJobObserved:
    meta, status = body["metadata"], body.get("status") or {}
    namespace, name = meta["namespace"], meta["name"]
    audit_job, train_jobs = kube.children(namespace, name)
    if status.get("phase") in TERMINAL:
        return FineTuneJobObserved(
            now=now,
            generation=meta.get("generation", 1),
            status=status,
            audit_job=audit_job,
            train_jobs=train_jobs,
        )
    layout = RunLayout.under(spec.output.uri)
    s3 = S3(*settings.s3_location(spec.storage))
    manifest: ManifestSummary | None = None
    manifest_error: str | None = None
    progress: Progress | None = None
    if train_jobs:
        try:
            written = s3.read_document(layout.manifest, Manifest)
            manifest = ManifestSummary.of(written) if written else None
        except DocumentError as exc:
            manifest_error = str(exc)
        progress = _progress(s3, layout)
    audit_report = _recorded_audit(status)
    if audit_report is None and audit_job is not None:
        try:
            audit_report = s3.read_document(layout.audit_report, AuditReport)
        except DocumentError as exc:
            audit_report = AuditReport(verdict="Failed", findings=(str(exc),))
    checks = None
    if audit_job is None and not train_jobs and not spec.run_policy.suspend:
        checks = _preflight(spec, kube, s3, namespace, settings)
    queue = _queued(spec, kube, namespace, train_jobs)
    return FineTuneJobObserved(
        now=now,
        generation=meta.get("generation", 1),
        status=status,
        preflight=checks,
        audit_job=audit_job,
        audit_report=audit_report,
        train_jobs=train_jobs,
        manifest=manifest,
        manifest_error=manifest_error,
        progress=progress,
        workload=queue.workload,
        kueue_installed=queue.installed,
    )


def apply_actions(
    decision: FineTuneJobDecision,
    spec: FineTuneJobSpec,
    run: RunRef,
    *,
    kube: Kube,
    settings: Settings,
) -> tuple[str, ...]:
    created: list[str] = []
    identity = trainer_service_account(run.namespace, settings)
    for action in decision.actions:
        if isinstance(action, CreateAuditJob):
            manifest = jobs.audit_job(spec, run=run, settings=settings)
            if kube.create_workload(manifest, identity):
                created.append(manifest["metadata"]["name"])
        elif isinstance(action, CreateTrainingJob):
            if spec.resources.nodes > 1:
                kube.create(jobs.headless_service(spec, run=run, settings=settings))
            manifest = jobs.training_job(
                spec,
                run=run,
                attempt=action.attempt,
                settings=settings,
                active_deadline_seconds=action.active_deadline_seconds,
                suspend=action.suspend,
                # Sizes the pod's cache; read only when an attempt is created.
                model_bytes=S3(*settings.s3_location(spec.storage)).model_size(spec.model.uri),
            )
            if kube.create_workload(manifest, identity):
                created.append(manifest["metadata"]["name"])
        elif isinstance(action, SetJobSuspended):
            kube.set_job_suspended(run.namespace, action.name, suspend=action.suspend)
        elif isinstance(action, SetWorkloadActive):
            set_workload_active(kube, run.namespace, action.name, active=action.active)
        elif isinstance(action, DeleteChildren):
            kube.delete_children(run.namespace, run.name)
    return tuple(created)


def reconcile_finetunejob(
    body: Mapping[str, Any], *, kube: Kube, settings: Settings, emit: Callable[[Event], None]
) -> Outcome:
    """Events go out before the status patch: a crash in between repeats an event on
    restart rather than losing it."""
    meta, status = body["metadata"], body.get("status") or {}
    spec = FineTuneJobSpec.model_validate(body["spec"])
    run = RunRef(meta["namespace"], meta["name"], meta["uid"])
    now = datetime.now(UTC)
    observed = observe(body, spec, kube=kube, settings=settings, now=now)
    decision = decide_finetunejob(
        spec, observed, retry_base=settings.retry_base_seconds, retry_cap=settings.retry_max_seconds
    )
    created = apply_actions(decision, spec, run, kube=kube, settings=settings)
    for event in decision.events:
        emit(event)
    new_status = desired_status(decision, status, now=now, generation=observed.generation)
    if status.get("completionTime"):
        new_status.pop("completionTime", None)
    if status_changed(status, new_status):
        kube.patch_ftj_status(run.namespace, run.name, new_status)
    return Outcome(decision, status.get("phase"), created)
