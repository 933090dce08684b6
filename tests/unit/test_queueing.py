"""A queued attempt in the FineTuneJob's words: Kueue's Workload read, the Queued
condition, and one event per change of reason."""

from __future__ import annotations

from typing import Any

from tunegate_operator.api.names import DEACTIVATED_FOR_SUSPEND_ANNOTATION
from tunegate_operator.decisions.queueing import (
    KUEUE_NOT_INSTALLED,
    PREEMPTED,
    WAITING_FOR_QUOTA,
    WAITING_FOR_WORKLOAD,
    QueueView,
    admitted_condition,
    queue_state,
    reactivate,
    workload_view,
)
from tunegate_operator.decisions.vocabulary import JobView

JOB = JobView(name="run-train-1", suspended=True)
INSUFFICIENT = (
    "couldn't assign flavors to pod set main: insufficient unused quota for "
    "nvidia.com/gpu in flavor a100, 8 more needed"
)


def workload(**status: Any) -> dict[str, Any]:
    return {
        "apiVersion": "kueue.x-k8s.io/v1beta2",
        "kind": "Workload",
        "metadata": {"name": "job-run-train-1-3f2a1", "namespace": "ml"},
        "spec": {"queueName": "gpu-batch", "priority": 100},
        "status": status,
    }


def cond(kind: str, status: str, reason: str, message: str = "") -> dict[str, str]:
    return {"type": kind, "status": status, "reason": reason, "message": message}


def test_a_pending_workload_quotes_why_it_has_no_quota() -> None:
    view = workload_view(
        workload(conditions=[cond("QuotaReserved", "False", "Pending", INSUFFICIENT)])
    )
    assert view == QueueView(name="job-run-train-1-3f2a1", pending_message=INSUFFICIENT)
    state = queue_state(JOB, "gpu-batch", view, kueue_installed=True)
    assert state.reason == WAITING_FOR_QUOTA
    assert "LocalQueue gpu-batch" in state.message and INSUFFICIENT in state.message


def test_an_admitted_workload_names_its_cluster_queue() -> None:
    view = workload_view(
        workload(
            admission={"clusterQueue": "gpus", "podSetAssignments": []},
            conditions=[
                cond(
                    "QuotaReserved", "True", "QuotaReserved", "Quota reserved in ClusterQueue gpus"
                ),
                cond("Admitted", "True", "Admitted", "The workload is admitted"),
            ],
        )
    )
    assert view.cluster_queue == "gpus" and view.pending_message == ""
    assert "ClusterQueue gpus" in admitted_condition(2, view).message


def test_a_preempted_workload_says_it_resumes_from_its_checkpoint_and_warns_once() -> None:
    preempted = (
        "Preempted to accommodate a workload (UID: 1) due to prioritization in the ClusterQueue"
    )
    view = workload_view(
        workload(
            conditions=[
                cond("QuotaReserved", "False", "Pending", preempted),
                cond("Evicted", "True", "Preempted", preempted),
                cond("Requeued", "True", "Preempted", preempted),
            ]
        )
    )
    state = queue_state(JOB, "gpu-batch", view, kueue_installed=True)
    assert state.reason == PREEMPTED
    assert "latest checkpoint" in state.message and preempted in state.message
    (event,) = state.event(WAITING_FOR_QUOTA)
    assert event.type == "Warning" and event.reason == PREEMPTED
    assert state.event(PREEMPTED) == ()


def test_an_eviction_that_ended_is_not_a_preemption() -> None:
    view = workload_view(
        workload(conditions=[cond("Evicted", "False", "QuotaReserved", "readmitted")])
    )
    assert view.evicted_reason == ""
    assert queue_state(JOB, "q", view, kueue_installed=True).reason == WAITING_FOR_QUOTA


def test_only_a_workload_the_operator_turned_off_is_turned_back_on() -> None:
    body = workload()
    body["spec"]["active"] = False
    assert not reactivate(workload_view(body))
    body["metadata"]["annotations"] = {DEACTIVATED_FOR_SUSPEND_ANNOTATION: "true"}
    assert reactivate(workload_view(body))
    body["spec"]["active"] = True
    assert not reactivate(workload_view(body))


def test_no_workload_yet_and_no_kueue_at_all_are_told_apart() -> None:
    waiting = queue_state(JOB, "q", None, kueue_installed=True)
    assert waiting.reason == WAITING_FOR_WORKLOAD and "run-train-1" in waiting.message
    missing = queue_state(JOB, "q", None, kueue_installed=False)
    assert missing.reason == KUEUE_NOT_INSTALLED
    assert "spec.resources.queueName" in missing.message
    assert missing.event(None)[0].type == "Warning"
