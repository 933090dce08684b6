"""The FineTuneJob state machine (pure): observed world in, desired status and
actions out. Level-triggered: the same observations always give the same
decision, and every action is safe to repeat (children have fixed names)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from tunegate_contract.base import parse_rfc3339, rfc3339
from tunegate_contract.run_documents import AuditReport, Manifest, Progress
from tunegate_operator.api.finetunejob import FineTuneJobSpec, Phase
from tunegate_operator.decisions.conditions import Cond
from tunegate_operator.decisions.preflight import PreflightResult, estimate_status
from tunegate_operator.decisions.queueing import (
    WAITING_FOR_WORKLOAD,
    QueueView,
    admitted_condition,
    deactivate,
    queue_state,
    reactivate,
)
from tunegate_operator.decisions.vocabulary import (
    POD_CREATION_FAILED,
    Event,
    JobView,
    pod_creation_problem,
)

TERMINAL: tuple[Phase, ...] = ("Succeeded", "Failed")
# The reason of a training Job failed by its only podFailurePolicy rule (a pod with the
# DisruptionTarget condition: preempted, evicted, drained; builders/jobs.py).
DISRUPTED_REASON = "PodFailurePolicy"


@dataclass(frozen=True)
class ManifestSummary:
    """What the status tells of a finished run's manifest."""

    uri: str
    sha256: str
    size_bytes: int
    trainable_parameters: int
    last_loss: float | None = None  # the latest step's, not the run's mean

    @classmethod
    def of(cls, manifest: Manifest) -> ManifestSummary:
        artifact = manifest.adapter
        return cls(
            artifact.uri,
            artifact.sha256,
            artifact.size_bytes,
            manifest.trainable_parameters,
            manifest.last_loss,
        )


@dataclass(frozen=True)
class FineTuneJobObserved:
    now: datetime
    generation: int
    status: Mapping[str, Any]
    preflight: PreflightResult | None = None
    audit_job: JobView | None = None
    audit_report: AuditReport | None = None
    train_jobs: Mapping[int, JobView] = field(default_factory=dict)
    manifest: ManifestSummary | None = None
    manifest_error: str | None = None
    progress: Progress | None = None
    # Kueue's Workload for the latest training Job (queued runs only).
    workload: QueueView | None = None
    kueue_installed: bool = True


@dataclass(frozen=True)
class CreateAuditJob:
    pass


@dataclass(frozen=True)
class CreateTrainingJob:
    attempt: int
    active_deadline_seconds: int | None
    suspend: bool


@dataclass(frozen=True)
class SetJobSuspended:
    name: str
    suspend: bool


@dataclass(frozen=True)
class SetWorkloadActive:
    """Kueue's switch for a queued Job: off stops its pods and frees the quota."""

    name: str
    active: bool


@dataclass(frozen=True)
class DeleteChildren:
    pass


Action = CreateAuditJob | CreateTrainingJob | SetJobSuspended | SetWorkloadActive | DeleteChildren


@dataclass(frozen=True)
class FineTuneJobDecision:
    phase: Phase
    conditions: tuple[Cond, ...]
    status: Mapping[str, Any]  # fields besides phase and conditions
    actions: tuple[Action, ...] = ()
    events: tuple[Event, ...] = ()


def _parse_time(value: object) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    return parse_rfc3339(value)


def retry_delay(attempt: int, *, base: float, cap: float) -> float:
    """Exponential backoff before attempt+1, after `attempt` failed."""
    return float(min(cap, base * 2 ** (attempt - 1)))


def progress_status(progress: Progress) -> dict[str, Any]:
    """status.progress: the trainer's progress.json in the status's words."""
    out: dict[str, Any] = {"step": progress.step}
    if progress.total_steps:
        out["totalSteps"] = progress.total_steps
        out["percent"] = progress.percent
    for value, target in (
        (progress.epoch, "epoch"),
        (progress.loss, "loss"),
        (progress.tokens_per_second, "tokensPerSecond"),
    ):
        if value is not None:
            out[target] = round(value, 4)
    if progress.eta_seconds is not None:
        out["etaSeconds"] = progress.eta_seconds
    if progress.updated_at:
        out["updatedAt"] = progress.updated_at
    return out


def _fail(
    reason: str, message: str, field_status: dict[str, Any], now: datetime
) -> FineTuneJobDecision:
    return FineTuneJobDecision(
        phase="Failed",
        conditions=(
            Cond("Failed", "True", reason, message),
            Cond("Complete", "False", reason, message),
            Cond("Training", "False", reason, ""),
        ),
        status={**field_status, "completionTime": rfc3339(now)},
        events=(Event("Warning", reason, message),),
    )


def needs_ticks(spec: Mapping[str, Any], status: Mapping[str, Any]) -> bool:
    """Whether a FineTuneJob needs the periodic reconcile: what pods write to S3 and
    deadlines raise no watch event. A finished run needs it only for its children's TTL
    clean-up; without one, a thousand finished runs cost no request at all."""
    if status.get("phase") not in TERMINAL:
        return True
    return (spec.get("runPolicy") or {}).get("ttlSecondsAfterFinished") is not None


def decide_finetunejob(
    spec: FineTuneJobSpec,
    observed: FineTuneJobObserved,
    *,
    retry_base: float = 10.0,
    retry_cap: float = 300.0,
) -> FineTuneJobDecision:
    phase: str | None = observed.status.get("phase")
    base_status: dict[str, Any] = {"gpus": spec.resources.nodes * spec.resources.gpus_per_node}
    if phase in TERMINAL:
        return _terminal(spec, observed, phase)
    if observed.manifest is not None:
        return _succeeded(spec, observed, observed.manifest, base_status)
    if observed.manifest_error:
        return _fail("ManifestInvalid", observed.manifest_error, base_status, observed.now)
    attempts = max(observed.train_jobs, default=0)
    latest = observed.train_jobs.get(attempts)
    ended = _deadline_passed(spec, observed, latest, attempts, base_status)
    if ended is not None:
        return ended
    if spec.run_policy.suspend:
        return _suspended(spec, observed, latest, attempts, base_status)
    # Before anything runs: references, placement and memory.
    if observed.audit_job is None and not observed.train_jobs and observed.preflight:
        stop = _waiting_or_failed(observed.preflight, observed, base_status)
        if stop is not None:
            return stop
    validated = Cond("Validated", "True", "Checked", "references, placement and GPU memory checked")
    audited = _audit_state(spec, observed)
    if isinstance(audited, FineTuneJobDecision):
        return _stopped_at_audit(audited, validated, phase, base_status)
    audit_cond, base_status["audit"] = audited
    attempt = _Attempt(attempts, latest, (validated, audit_cond), base_status)
    if latest is None:
        start = attempt.start(observed)
        return _start_attempt(
            spec, observed, 1, base_status=base_status, conditions=attempt.conditions, start=start
        )
    if latest.finished is None:
        return _running(spec, observed, attempt)
    return _after_attempt(spec, observed, attempt, retry_base=retry_base, retry_cap=retry_cap)


@dataclass(frozen=True)
class _Attempt:
    """The latest training attempt, and what every decision about it carries."""

    number: int
    job: JobView | None
    conditions: tuple[Cond, ...]
    base_status: dict[str, Any]

    def start(self, observed: FineTuneJobObserved) -> datetime | None:
        return _parse_time(observed.status.get("startTime"))


def _deadline_passed(
    spec: FineTuneJobSpec,
    observed: FineTuneJobObserved,
    latest: JobView | None,
    attempts: int,
    base_status: dict[str, Any],
) -> FineTuneJobDecision | None:
    deadline = spec.run_policy.active_deadline_seconds
    start = _parse_time(observed.status.get("startTime"))
    with_attempts = {**base_status, "attempts": attempts}
    if latest and latest.finished == "Failed" and latest.reason == "DeadlineExceeded":
        message = (
            f"spec.runPolicy.activeDeadlineSeconds ({deadline}s) passed during attempt {attempts}"
        )
        return _fail("DeadlineExceeded", message, with_attempts, observed.now)
    if deadline and start and observed.now - start >= timedelta(seconds=deadline):
        message = f"spec.runPolicy.activeDeadlineSeconds ({deadline}s) passed"
        return _fail("DeadlineExceeded", message, with_attempts, observed.now)
    return None


def _stopped_at_audit(
    audited: FineTuneJobDecision,
    validated: Cond,
    phase: str | None,
    base_status: dict[str, Any],
) -> FineTuneJobDecision:
    return FineTuneJobDecision(
        phase=audited.phase,
        conditions=(validated, *audited.conditions),
        status={**base_status, **audited.status},
        actions=audited.actions,
        # Warnings are sent once already (on their condition's transition).
        events=audited.events
        if phase != audited.phase
        or audited.phase == "Failed"
        or any(e.type == "Warning" for e in audited.events)
        else (),
    )


def _running(
    spec: FineTuneJobSpec, observed: FineTuneJobObserved, attempt: _Attempt
) -> FineTuneJobDecision:
    latest, attempts, conditions = attempt.job, attempt.number, attempt.conditions
    assert latest is not None
    actions: list[Action] = []
    queue = spec.resources.queue_name
    if latest.suspended and not queue:
        actions.append(SetJobSuspended(latest.name, False))
    if reactivate(observed.workload):
        assert observed.workload is not None
        actions.append(SetWorkloadActive(observed.workload.name, True))
    running = dict(attempt.base_status, attempts=attempts)
    if observed.progress:
        running["progress"] = progress_status(observed.progress)
    if queue and latest.suspended:
        state = queue_state(
            latest, queue, observed.workload, kueue_installed=observed.kueue_installed
        )
        return FineTuneJobDecision(
            phase="Queued",
            conditions=(
                *conditions,
                state.condition,
                Cond("Training", "False", "Queued", ""),
                Cond("Suspended", "False", "Running", ""),
            ),
            status=running,
            actions=tuple(actions),
            events=state.event(_condition_reason(observed.status, "Queued")),
        )
    if queue:
        conditions = (*conditions, admitted_condition(attempts, observed.workload))
    refused = pod_creation_problem(latest, "training")
    if refused:
        return FineTuneJobDecision(
            phase="Training",
            conditions=(*conditions, Cond("Training", "False", POD_CREATION_FAILED, refused)),
            status=running,
            actions=tuple(actions),
            events=(Event("Warning", POD_CREATION_FAILED, refused),)
            if _condition_reason(observed.status, "Training") != POD_CREATION_FAILED
            else (),
        )
    return FineTuneJobDecision(
        phase="Training",
        conditions=(
            *conditions,
            Cond("Training", "True", "Running", f"attempt {attempts} is running"),
            Cond("Suspended", "False", "Running", ""),
        ),
        status=running,
        actions=tuple(actions),
        events=_running_events(observed.status.get("phase"), attempts),
    )


def _after_attempt(
    spec: FineTuneJobSpec,
    observed: FineTuneJobObserved,
    attempt: _Attempt,
    *,
    retry_base: float,
    retry_cap: float,
) -> FineTuneJobDecision:
    """The latest attempt ended without a manifest: it failed, or it was disrupted."""
    latest, attempts, now = attempt.job, attempt.number, observed.now
    assert latest is not None
    base_status, conditions = attempt.base_status, attempt.conditions

    def next_attempt(*events: Event) -> FineTuneJobDecision:
        start = attempt.start(observed)
        return _start_attempt(spec, observed, attempts + 1, base_status=base_status,
                              conditions=conditions, start=start, events=events)  # fmt: skip

    why = latest.message or latest.reason or "the trainer exited without writing manifest.json"
    if latest.reason == DISRUPTED_REASON:
        # Preemption and eviction are the cluster's doing: they never use up the
        # backoff limit, and the next attempt needs no backoff delay.
        message = (
            f"attempt {attempts} was disrupted (preempted, evicted or drained): {why}; "
            f"attempt {attempts + 1} resumes from the latest checkpoint and does not count "
            "against spec.runPolicy.backoffLimit"
        )
        return next_attempt(Event("Warning", "AttemptDisrupted", message))
    failures = counted_failures(observed.train_jobs)
    if failures > spec.run_policy.backoff_limit:
        return _fail(
            "BackoffLimitExceeded",
            f"attempt {attempts} failed and spec.runPolicy.backoffLimit "
            f"({spec.run_policy.backoff_limit}) is used up: {why}",
            {**base_status, "attempts": attempts},
            now,
        )
    due = (latest.completion_time or now) + timedelta(
        seconds=retry_delay(failures, base=retry_base, cap=retry_cap)
    )
    # A failure first seen after its retry delay has passed is still announced once,
    # as the next attempt starts.
    announced = _condition_reason(observed.status, "Training") == "Retrying"
    if now >= due:
        message = (
            f"attempt {attempts} failed: {why}; attempt {attempts + 1} starts now "
            "from the latest checkpoint"
        )
        return next_attempt(*(() if announced else (Event("Warning", "AttemptFailed", message),)))
    message = (
        f"attempt {attempts} failed: {why}; attempt {attempts + 1} starts in "
        f"{(due - now).total_seconds():.0f}s from the latest checkpoint"
    )
    return FineTuneJobDecision(
        phase="Training",
        conditions=(*conditions, Cond("Training", "False", "Retrying", message)),
        status={**base_status, "attempts": attempts},
        events=() if announced else (Event("Warning", "AttemptFailed", message),),
    )


def counted_failures(train_jobs: Mapping[int, JobView]) -> int:
    """Failed attempts that count against the backoff limit: not the disrupted ones."""
    return sum(
        1
        for job in train_jobs.values()
        if job.finished == "Failed" and job.reason != DISRUPTED_REASON
    )


def _succeeded(
    spec: FineTuneJobSpec,
    observed: FineTuneJobObserved,
    m: ManifestSummary,
    base_status: dict[str, Any],
) -> FineTuneJobDecision:
    """The manifest is written last, so its presence is what makes a run complete."""
    progress = dict(observed.status.get("progress") or {})
    if progress.get("totalSteps"):
        progress["step"] = progress["totalSteps"]
        progress["percent"] = 100
    if m.last_loss is not None:
        progress["loss"] = round(m.last_loss, 4)
    progress.pop("etaSeconds", None)
    message = f"adapter written to {m.uri} ({m.size_bytes} bytes, sha256 {m.sha256[:12]})"
    return FineTuneJobDecision(
        phase="Succeeded",
        conditions=(
            Cond("Complete", "True", "ManifestWritten", message),
            Cond("Training", "False", "Completed", ""),
            Cond("Failed", "False", "Completed", ""),
            Cond("Suspended", "False", "Completed", ""),
        ),
        status={
            **base_status,
            # From the Jobs that exist, not an earlier write: an operator killed between
            # creating attempt 1 and recording it must not finish with no attempt.
            **({"attempts": max(observed.train_jobs)} if observed.train_jobs else {}),
            "adapter": {
                "uri": m.uri,
                "sha256": m.sha256,
                "sizeBytes": m.size_bytes,
                "trainableParameters": m.trainable_parameters,
            },
            "progress": progress or None,
            "completionTime": rfc3339(observed.now),
        },
        events=(Event("Normal", "Succeeded", message),),
    )


def _suspended(
    spec: FineTuneJobSpec,
    observed: FineTuneJobObserved,
    latest: JobView | None,
    attempts: int,
    base_status: dict[str, Any],
) -> FineTuneJobDecision:
    phase = observed.status.get("phase")
    actions: list[Action] = []
    running = latest is not None and latest.finished is None
    message = "spec.runPolicy.suspend is true; training pods are stopped after a checkpoint"
    if spec.resources.queue_name and observed.workload is not None:
        # Kueue would unsuspend an admitted Job; turning its Workload off makes Kueue
        # stop the pods itself and give the quota back.
        if running and deactivate(observed.workload):
            actions.append(SetWorkloadActive(observed.workload.name, False))
        message += "; its Kueue Workload is deactivated, which releases the quota"
    elif running and latest is not None and not latest.suspended:
        actions.append(SetJobSuspended(latest.name, True))
    return FineTuneJobDecision(
        phase="Suspended",
        conditions=(
            Cond("Suspended", "True", "SuspendedByUser", message),
            Cond("Training", "False", "Suspended", ""),
        ),
        status={**base_status, "attempts": attempts or None},
        actions=tuple(actions),
        events=(Event("Normal", "Suspended", message),) if phase != "Suspended" else (),
    )


def _waiting_or_failed(
    result: PreflightResult, observed: FineTuneJobObserved, base_status: dict[str, Any]
) -> FineTuneJobDecision | None:
    """None when nothing blocks; else Failed (final problem) or Pending (waiting)."""
    blocking = result.blocking
    estimate = estimate_status(result)
    if estimate:
        base_status["estimate"] = estimate
    if blocking is None:
        return None
    if not blocking.waiting:
        return _fail(blocking.reason, blocking.message, base_status, observed.now)
    previous = {c.get("type"): c for c in observed.status.get("conditions") or []}
    seen = previous.get("Validated", {}).get("message") == blocking.message
    return FineTuneJobDecision(
        phase="Pending",
        conditions=(Cond("Validated", "False", blocking.reason, blocking.message),),
        status=base_status,
        events=() if seen else (Event("Warning", blocking.reason, blocking.message),),
    )


def _running_events(phase: str | None, attempts: int) -> tuple[Event, ...]:
    if phase == "Suspended":
        return (Event("Normal", "Resumed", "training resumed"),)
    if phase == "Queued":
        return (Event("Normal", "Admitted", f"Kueue admitted attempt {attempts}; training"),)
    if phase != "Training":
        # The attempt exists but the status never said so (the operator stopped in between).
        return (Event("Normal", "TrainingScheduled", f"attempt {attempts} scheduled"),)
    return ()


def _condition_reason(status: Mapping[str, Any], kind: str) -> str | None:
    for cond in status.get("conditions") or []:
        if cond.get("type") == kind:
            return str(cond.get("reason"))
    return None


def _start_attempt(
    spec: FineTuneJobSpec,
    observed: FineTuneJobObserved,
    attempt: int,
    *,
    base_status: dict[str, Any],
    conditions: tuple[Cond, ...],
    start: datetime | None,
    events: tuple[Event, ...] = (),
) -> FineTuneJobDecision:
    now = observed.now
    deadline = spec.run_policy.active_deadline_seconds
    remaining = None
    if deadline:
        elapsed = (now - start).total_seconds() if start else 0
        remaining = max(1, int(deadline - elapsed))
    message = f"attempt {attempt} scheduled" + (
        " (resuming from the latest checkpoint)" if attempt > 1 else ""
    )
    queue = spec.resources.queue_name
    if queue:
        message = f"{message}, suspended until Kueue admits it through LocalQueue {queue}"
    return FineTuneJobDecision(
        phase="Queued" if queue else "Training",
        conditions=(
            *conditions,
            *(
                (
                    Cond("Queued", "True", WAITING_FOR_WORKLOAD, message),
                    Cond("Training", "False", "Queued", ""),
                )
                if queue
                else (Cond("Training", "True", "Scheduled", message),)
            ),
            Cond("Suspended", "False", "Running", ""),
        ),
        status={
            **base_status,
            "attempts": attempt,
            "startTime": rfc3339(start or now),
        },
        actions=(CreateTrainingJob(attempt, remaining, suspend=False),),
        events=(*events, Event("Normal", "TrainingScheduled", message)),
    )


def _audit_state(
    spec: FineTuneJobSpec, observed: FineTuneJobObserved
) -> FineTuneJobDecision | tuple[Cond, dict[str, Any]]:
    """Either a FineTuneJobDecision that stops here (auditing, failed), or the audit outcome."""
    if spec.audit.mode == "off":
        return Cond("Audited", "True", "Skipped", "spec.audit.mode is off"), {"verdict": "Skipped"}
    report = observed.audit_report
    if report is not None:
        findings = list(report.findings)
        if report.verdict == "Failed" and spec.audit.mode == "enforce":
            message = "data audit failed: " + ("; ".join(findings) or "see the report")
            recorded = {"audit": {"verdict": "Failed", "findings": findings}}
            return _audit_failed("AuditFailed", message, recorded, observed.now)
        verdict = "Warned" if report.verdict != "Passed" else "Passed"
        return (
            Cond("Audited", "True", verdict, "; ".join(findings)),
            {"verdict": verdict, "findings": findings},
        )
    job = observed.audit_job
    if job is not None and job.finished == "Failed":
        message = f"the audit job failed: {job.message or job.reason}"
        return _audit_failed("AuditError", message, {}, observed.now)
    if job is not None and job.finished == "Complete":
        message = "the audit job succeeded but wrote no report"
        return _audit_failed("AuditError", message, {}, observed.now)
    refused = pod_creation_problem(job, "audit")
    if refused:
        return FineTuneJobDecision(
            phase="Auditing",
            conditions=(Cond("Audited", "Unknown", POD_CREATION_FAILED, refused),),
            status={},
            events=(Event("Warning", POD_CREATION_FAILED, refused),)
            if _condition_reason(observed.status, "Audited") != POD_CREATION_FAILED
            else (),
        )
    actions: tuple[Action, ...] = () if job is not None else (CreateAuditJob(),)
    return FineTuneJobDecision(
        phase="Auditing",
        conditions=(Cond("Audited", "Unknown", "Auditing", "auditing the data on CPU"),),
        status={},
        actions=actions,
        events=(Event("Normal", "Auditing", "auditing the training data on CPU"),),
    )


def _audit_failed(
    reason: str, message: str, field_status: dict[str, Any], now: datetime
) -> FineTuneJobDecision:
    failed = _fail(reason, message, field_status, now)
    audited = Cond("Audited", "False", reason, message)
    return replace(failed, conditions=(audited, *failed.conditions))


def _terminal(
    spec: FineTuneJobSpec, observed: FineTuneJobObserved, phase: Phase
) -> FineTuneJobDecision:
    """Finished: only the TTL clean-up of children is left."""
    keep = tuple(
        Cond(str(c["type"]), c["status"], str(c.get("reason", "")), str(c.get("message", "")))
        for c in observed.status.get("conditions") or []
    )
    ttl = spec.run_policy.ttl_seconds_after_finished
    finished = _parse_time(observed.status.get("completionTime"))
    if ttl is None or finished is None:
        return FineTuneJobDecision(phase=phase, conditions=keep, status={})
    due = finished + timedelta(seconds=ttl)
    has_children = observed.audit_job is not None or bool(observed.train_jobs)
    if observed.now >= due:
        return FineTuneJobDecision(
            phase=phase,
            conditions=keep,
            status={},
            actions=(DeleteChildren(),) if has_children else (),
        )
    return FineTuneJobDecision(
        phase=phase,
        conditions=keep,
        status={},
    )
