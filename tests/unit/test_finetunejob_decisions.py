"""The FineTuneJob state machine as tables: observations in, phase/actions/conditions out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tunegate_contract.run_documents import AuditReport, Progress
from tunegate_operator.api.finetunejob import FineTuneJobSpec
from tunegate_operator.decisions.conditions import Cond, merge_conditions
from tunegate_operator.decisions.finetunejob import (
    CreateAuditJob,
    CreateTrainingJob,
    DeleteChildren,
    FineTuneJobObserved,
    ManifestSummary,
    SetJobSuspended,
    SetWorkloadActive,
    decide_finetunejob,
    needs_ticks,
    retry_delay,
)
from tunegate_operator.decisions.preflight import PreflightResult, Problem
from tunegate_operator.decisions.queueing import QueueView
from tunegate_operator.decisions.vocabulary import JobView

NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)
OK = PreflightResult(problems=(), plan=None, pool="p")
PASSED = AuditReport(verdict="Passed")
FAILED_PII = AuditReport(verdict="Failed", findings=("pii",))
ADMITTED = QueueView(name="job-run-train-1-abcde", cluster_queue="gpus")


def spec(**overrides: Any) -> FineTuneJobSpec:
    body: dict[str, Any] = {
        "model": {"uri": "s3://models/base"},
        "dataset": {"train": "s3://data/train.jsonl"},
        "output": {"uri": "s3://out/run"},
        "runPolicy": {"backoffLimit": 2},
    }
    for key, value in overrides.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return FineTuneJobSpec.model_validate(body)


def observed(**fields: Any) -> FineTuneJobObserved:
    defaults: dict[str, Any] = {"now": NOW, "generation": 1, "status": {}}
    return FineTuneJobObserved(**(defaults | fields))


def running(name: str = "run-train-1", **fields: Any) -> JobView:
    return JobView(name=name, active=1, **fields)


def failed(
    name: str, *, reason: str = "BackoffLimitExceeded", message: str = "exit 3", ago: float = 60
) -> JobView:
    return JobView(
        name=name,
        failed=1,
        finished="Failed",
        reason=reason,
        message=message,
        completion_time=NOW - timedelta(seconds=ago),
    )


CASES: list[tuple[str, FineTuneJobSpec, FineTuneJobObserved, str, list[Any]]] = [
    ("new run is audited first", spec(), observed(preflight=OK), "Auditing", [CreateAuditJob()]),
    (
        "audit running: nothing new",
        spec(),
        observed(audit_job=running("run-audit")),
        "Auditing",
        [],
    ),
    (
        "audit off goes straight to training",
        spec(audit={"mode": "off"}),
        observed(preflight=OK),
        "Training",
        [CreateTrainingJob(1, None, suspend=False)],
    ),
    (
        "passed audit schedules attempt 1",
        spec(),
        observed(audit_job=running("run-audit"), audit_report=PASSED),
        "Training",
        [CreateTrainingJob(1, None, suspend=False)],
    ),
    (
        "failed audit in warn mode still trains",
        spec(audit={"mode": "warn"}),
        observed(
            audit_job=running("run-audit"),
            audit_report=AuditReport(verdict="Failed", findings=("pii",)),
        ),
        "Training",
        [CreateTrainingJob(1, None, suspend=False)],
    ),
    (
        "failed audit in enforce mode fails",
        spec(),
        observed(
            audit_job=running("run-audit"),
            audit_report=AuditReport(verdict="Failed", findings=("pii",)),
        ),
        "Failed",
        [],
    ),
    (
        "audit job crashed without report",
        spec(),
        observed(audit_job=failed("run-audit")),
        "Failed",
        [],
    ),
    (
        "attempt running",
        spec(),
        observed(audit_report=PASSED, train_jobs={1: running()}),
        "Training",
        [],
    ),
    (
        "failed attempt waits for backoff",
        spec(),
        observed(audit_report=PASSED, train_jobs={1: failed("run-train-1", ago=1)}),
        "Training",
        [],
    ),
    (
        "failed attempt retried after backoff",
        spec(),
        observed(audit_report=PASSED, train_jobs={1: failed("run-train-1", ago=60)}),
        "Training",
        [CreateTrainingJob(2, None, suspend=False)],
    ),
    (
        "backoff limit used up",
        spec(),
        observed(
            audit_report=PASSED,
            train_jobs={
                1: failed("run-train-1"),
                2: failed("run-train-2"),
                3: failed("run-train-3"),
            },
        ),
        "Failed",
        [],
    ),
    (
        "job deadline exceeded",
        spec(runPolicy={"activeDeadlineSeconds": 60}),
        observed(
            audit_report=PASSED, train_jobs={1: failed("run-train-1", reason="DeadlineExceeded")}
        ),
        "Failed",
        [],
    ),
    (
        "deadline passed across attempts",
        spec(runPolicy={"activeDeadlineSeconds": 60}),
        observed(
            audit_report=PASSED,
            train_jobs={1: running()},
            status={"startTime": "2026-11-29T11:58:00Z"},
        ),
        "Failed",
        [],
    ),
    (
        "retry gets the remaining deadline",
        spec(runPolicy={"activeDeadlineSeconds": 600}),
        observed(
            audit_report=PASSED,
            train_jobs={1: failed("run-train-1")},
            status={"startTime": "2026-11-29T11:55:00Z", "phase": "Training"},
        ),
        "Training",
        [CreateTrainingJob(2, 300, suspend=False)],
    ),
    (
        "manifest means success",
        spec(),
        observed(
            audit_report=PASSED,
            train_jobs={1: running()},
            manifest=ManifestSummary("s3://out/run/adapter", "ab" * 32, 10, 4194304, 0.5),
        ),
        "Succeeded",
        [],
    ),
    (
        "suspend stops the running attempt",
        spec(runPolicy={"suspend": True}),
        observed(audit_report=PASSED, train_jobs={1: running()}),
        "Suspended",
        [SetJobSuspended("run-train-1", True)],
    ),
    (
        "suspended before start schedules nothing",
        spec(runPolicy={"suspend": True}),
        observed(preflight=OK),
        "Suspended",
        [],
    ),
    (
        "resume unsuspends the attempt",
        spec(),
        observed(
            audit_report=PASSED,
            train_jobs={1: running(suspended=True)},
            status={"phase": "Suspended"},
        ),
        "Training",
        [SetJobSuspended("run-train-1", False)],
    ),
    (
        "queued job is left to Kueue",
        spec(resources={"queueName": "q"}),
        observed(audit_report=PASSED, train_jobs={1: running(suspended=True)}),
        "Queued",
        [],
    ),
    (
        "a queued run starts its attempt queued",
        spec(resources={"queueName": "q"}),
        observed(audit_report=PASSED, preflight=OK),
        "Queued",
        [CreateTrainingJob(1, None, suspend=False)],
    ),
    (
        "an admitted queued run trains and touches nothing",
        spec(resources={"queueName": "q"}),
        observed(audit_report=PASSED, train_jobs={1: running()}, workload=ADMITTED),
        "Training",
        [],
    ),
    (
        "suspending a queued run turns its Workload off, not the Job",
        spec(resources={"queueName": "q"}, runPolicy={"suspend": True}),
        observed(audit_report=PASSED, train_jobs={1: running()}, workload=ADMITTED),
        "Suspended",
        [SetWorkloadActive("job-run-train-1-abcde", False)],
    ),
    (
        "resuming a queued run turns its Workload back on",
        spec(resources={"queueName": "q"}),
        observed(
            audit_report=PASSED,
            train_jobs={1: running(suspended=True)},
            workload=replace(ADMITTED, active=False, deactivated_for_suspend=True),
            status={"phase": "Suspended"},
        ),
        "Queued",
        [SetWorkloadActive("job-run-train-1-abcde", True)],
    ),
    (
        "a Workload someone else turned off stays off",
        spec(resources={"queueName": "q"}),
        observed(
            audit_report=PASSED,
            train_jobs={1: running(suspended=True)},
            workload=replace(ADMITTED, active=False),
        ),
        "Queued",
        [],
    ),
    (
        "ttl due deletes children",
        spec(runPolicy={"ttlSecondsAfterFinished": 10}),
        observed(
            status={"phase": "Succeeded", "completionTime": "2026-11-29T11:59:00Z"},
            train_jobs={1: running()},
        ),
        "Succeeded",
        [DeleteChildren()],
    ),
    (
        "ttl not due yet",
        spec(runPolicy={"ttlSecondsAfterFinished": 600}),
        observed(
            status={"phase": "Failed", "completionTime": "2026-11-29T11:59:00Z"},
            train_jobs={1: running()},
        ),
        "Failed",
        [],
    ),
    (
        "waiting problem keeps it pending",
        spec(),
        observed(
            preflight=PreflightResult(
                (
                    Problem(
                        "spec.storage.credentialsSecret", "SecretNotFound", "missing", waiting=True
                    ),
                ),
                None,
                "p",
            )
        ),
        "Pending",
        [],
    ),
    (
        "final problem fails it",
        spec(),
        observed(
            preflight=PreflightResult(
                (
                    Problem(
                        "spec.resources.gpusPerNode", "InsufficientGPUs", "too many", waiting=False
                    ),
                ),
                None,
                "p",
            )
        ),
        "Failed",
        [],
    ),
]


@pytest.mark.parametrize(
    ("case", "the_spec", "obs", "phase", "actions"), CASES, ids=[c[0] for c in CASES]
)
def test_decision_table(
    case: str, the_spec: FineTuneJobSpec, obs: FineTuneJobObserved, phase: str, actions: list[Any]
) -> None:
    decision = decide_finetunejob(the_spec, obs, retry_base=10, retry_cap=300)
    assert decision.phase == phase
    assert list(decision.actions) == actions


def retries_used_up(cause: str) -> FineTuneJobObserved:
    """Three failed attempts with the default backoffLimit (2): the run is over."""
    return observed(
        audit_report=PASSED,
        train_jobs={
            1: failed("run-train-1"),
            2: failed("run-train-2"),
            3: failed("run-train-3", message=cause),
        },
    )


def test_failures_name_their_reason_and_cause() -> None:
    decision = decide_finetunejob(spec(), retries_used_up("pod x exited with code 3: OOM"))
    cond = next(c for c in decision.conditions if c.type == "Failed")
    assert cond.reason == "BackoffLimitExceeded"
    assert "spec.runPolicy.backoffLimit (2)" in cond.message and "OOM" in cond.message
    assert decision.events[0].type == "Warning"


def test_retry_message_says_when_and_from_where() -> None:
    decision = decide_finetunejob(
        spec(),
        observed(audit_report=PASSED, train_jobs={1: failed("run-train-1", ago=5)}),
        retry_base=10,
        retry_cap=300,
    )
    cond = next(c for c in decision.conditions if c.type == "Training")
    assert cond.reason == "Retrying" and "starts in 5s from the latest checkpoint" in cond.message


@pytest.mark.parametrize(
    ("training_reason", "announced_now"), [(None, True), ("Running", True), ("Retrying", False)]
)
def test_a_failure_seen_after_its_retry_delay_is_announced_once_as_the_next_attempt_starts(
    training_reason: str | None, announced_now: bool
) -> None:
    conditions = (
        [] if training_reason is None else [{"type": "Training", "reason": training_reason}]
    )
    decision = decide_finetunejob(
        spec(),
        observed(
            audit_report=PASSED,
            train_jobs={1: failed("run-train-1", message="CUDA error", ago=30)},
            status={"phase": "Training", "conditions": conditions},
        ),
        retry_base=10,
        retry_cap=300,
    )
    assert list(decision.actions) == [CreateTrainingJob(2, None, suspend=False)]
    failures = [e for e in decision.events if e.reason == "AttemptFailed"]
    if announced_now:
        assert len(failures) == 1 and "CUDA error" in failures[0].message
        assert "attempt 2 starts now" in failures[0].message
    else:
        assert failures == []


def test_backoff_grows_and_is_capped() -> None:
    assert [retry_delay(n, base=10, cap=60) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


def test_progress_is_mapped_with_percent() -> None:
    decision = decide_finetunejob(
        spec(),
        observed(
            audit_report=PASSED,
            train_jobs={1: running()},
            progress=Progress(
                step=50,
                total_steps=200,
                loss=1.23456,
                tokens_per_second=1000.0,
                eta_seconds=90,
                epoch=0.5,
            ),
        ),
    )
    assert decision.status["progress"] == {
        "step": 50,
        "totalSteps": 200,
        "percent": 25,
        "loss": 1.2346,
        "tokensPerSecond": 1000.0,
        "etaSeconds": 90,
        "epoch": 0.5,
    }


def test_transition_events_are_not_repeated_while_the_phase_holds() -> None:
    first = decide_finetunejob(
        spec(),
        observed(audit_report=PASSED, train_jobs={1: running()}, status={"phase": "Suspended"}),
    )
    again = decide_finetunejob(
        spec(),
        observed(audit_report=PASSED, train_jobs={1: running()}, status={"phase": "Training"}),
    )
    assert [e.reason for e in first.events] == ["Resumed"]
    assert again.events == ()


@given(
    st.integers(min_value=1, max_value=6),
    st.integers(min_value=0, max_value=5),
    st.booleans(),
    st.booleans(),
)
def test_decisions_are_deterministic_and_never_create_two_attempts(
    attempts: int, backoff_limit: int, latest_failed: bool, suspended: bool
) -> None:
    jobs = {n: failed(f"run-train-{n}", ago=1000) for n in range(1, attempts)}
    jobs[attempts] = (
        failed(f"run-train-{attempts}", ago=1000)
        if latest_failed
        else running(f"run-train-{attempts}")
    )
    the_spec = spec(runPolicy={"backoffLimit": backoff_limit, "suspend": suspended})
    obs = observed(audit_report=PASSED, train_jobs=jobs)
    first, second = decide_finetunejob(the_spec, obs), decide_finetunejob(the_spec, replace(obs))
    assert first == second
    creates = [a for a in first.actions if isinstance(a, CreateTrainingJob)]
    assert len(creates) <= 1
    if creates:
        assert creates[0].attempt == attempts + 1 and attempts <= backoff_limit
        assert not suspended


def test_merge_keeps_transition_time_when_status_is_unchanged() -> None:
    earlier = NOW - timedelta(hours=1)
    existing = merge_conditions(
        [], [Cond("Training", "True", "Running", "a")], now=earlier, generation=1
    )
    same = merge_conditions(
        existing, [Cond("Training", "True", "Running", "b")], now=NOW, generation=2
    )
    flipped = merge_conditions(
        existing, [Cond("Training", "False", "Done", "")], now=NOW, generation=2
    )
    assert same[0]["lastTransitionTime"] == "2026-11-29T11:00:00Z"
    assert same[0]["message"] == "b" and same[0]["observedGeneration"] == 2
    assert flipped[0]["lastTransitionTime"] == "2026-11-29T12:00:00Z"


@pytest.mark.parametrize(
    ("phase", "run_policy", "ticks"),
    [
        (None, {}, True),
        ("Training", {}, True),
        ("Auditing", {"ttlSecondsAfterFinished": 60}, True),
        ("Succeeded", {}, False),
        ("Failed", {"backoffLimit": 2}, False),
        ("Succeeded", {"ttlSecondsAfterFinished": 0}, True),
        ("Failed", {"ttlSecondsAfterFinished": 3600}, True),
    ],
)
def test_only_a_run_in_flight_or_awaiting_its_ttl_is_reconciled_on_a_timer(
    phase: str | None, run_policy: dict[str, int], ticks: bool
) -> None:
    status = {"phase": phase} if phase else {}
    assert needs_ticks({"runPolicy": run_policy}, status) is ticks


def test_success_records_the_attempt_that_wrote_it_even_if_it_was_never_recorded() -> None:
    # The operator was killed after creating attempt 2's Job, before its status write.
    decision = decide_finetunejob(
        spec(),
        observed(
            audit_report=PASSED,
            status={"phase": "Training", "attempts": 1},
            train_jobs={1: failed("run-train-1"), 2: running("run-train-2")},
            manifest=ManifestSummary("s3://out/run/adapter", "ab" * 32, 10, 4194304, 0.5),
        ),
    )
    assert decision.phase == "Succeeded"
    assert decision.status["attempts"] == 2
