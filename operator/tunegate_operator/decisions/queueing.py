"""A queued training attempt as Kueue sees it, in the FineTuneJob's words (pure).

With `spec.resources.queueName` the Job is created suspended and Kueue owns its
`suspend` field: Kueue unsuspends it on admission and suspends it again on preemption.
So the operator never flips it; it pauses a queued run by deactivating the Workload,
which makes Kueue stop the pods and release the quota.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tunegate_operator.api.names import DEACTIVATED_FOR_SUSPEND_ANNOTATION
from tunegate_operator.decisions.conditions import Cond
from tunegate_operator.decisions.vocabulary import Event, JobView

# Reasons of the Queued condition.
WAITING_FOR_WORKLOAD = "WaitingForWorkload"
KUEUE_NOT_INSTALLED = "KueueNotInstalled"
WAITING_FOR_QUOTA = "WaitingForQuota"
PREEMPTED = "Preempted"
ADMITTED = "Admitted"
# Kueue's reason on the Workload's Evicted condition when a higher priority took the quota.
KUEUE_PREEMPTED = "Preempted"


@dataclass(frozen=True)
class QueueView:
    """Kueue's Workload for the latest training Job (None in the observation: not
    created yet)."""

    name: str
    active: bool = True
    cluster_queue: str = ""
    # QuotaReserved=False: why Kueue has not admitted it (insufficient quota, no queue).
    pending_message: str = ""
    # Evicted=True: why it lost its admission (Preempted, Deactivated, ...).
    evicted_reason: str = ""
    evicted_message: str = ""
    # The operator deactivated it for spec.runPolicy.suspend (an annotation it sets),
    # as opposed to Kueue or a person deactivating it.
    deactivated_for_suspend: bool = False


def workload_view(workload: Mapping[str, Any]) -> QueueView:
    """The parts of a kueue.x-k8s.io/v1beta2 Workload the decisions read."""
    meta, spec = workload["metadata"], workload.get("spec") or {}
    status = workload.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or []}

    def holds(kind: str) -> Mapping[str, Any] | None:
        cond = conditions.get(kind)
        return cond if cond is not None and cond.get("status") == "True" else None

    reserved = conditions.get("QuotaReserved") or {}
    evicted = holds("Evicted") or {}
    annotations = meta.get("annotations") or {}
    return QueueView(
        name=meta["name"],
        active=spec.get("active", True) is not False,
        cluster_queue=str((status.get("admission") or {}).get("clusterQueue") or ""),
        pending_message=str(reserved.get("message") or "")
        if reserved.get("status") == "False"
        else "",
        evicted_reason=str(evicted.get("reason") or ""),
        evicted_message=str(evicted.get("message") or ""),
        deactivated_for_suspend=annotations.get(DEACTIVATED_FOR_SUSPEND_ANNOTATION) == "true",
    )


@dataclass(frozen=True)
class QueueState:
    """What the status says of a queued attempt while its Job is suspended."""

    reason: str
    message: str

    @property
    def condition(self) -> Cond:
        return Cond("Queued", "True", self.reason, self.message)

    def event(self, previous_reason: str | None) -> tuple[Event, ...]:
        """One event per change of reason: a preemption is a warning."""
        if previous_reason == self.reason:
            return ()
        if self.reason in (PREEMPTED, KUEUE_NOT_INSTALLED):
            return (Event("Warning", self.reason, self.message),)
        return (Event("Normal", self.reason, self.message),)


def queue_state(
    job: JobView, queue_name: str, workload: QueueView | None, *, kueue_installed: bool
) -> QueueState:
    """Why a queued attempt's Job is still suspended, quoting Kueue where it said why."""
    where = f"LocalQueue {queue_name}"
    if not kueue_installed:
        return QueueState(
            KUEUE_NOT_INSTALLED,
            f"spec.resources.queueName is {queue_name} but the cluster serves no "
            f"workloads.kueue.x-k8s.io: nothing will admit Job {job.name}; install Kueue "
            "or remove queueName",
        )
    if workload is None:
        return QueueState(
            WAITING_FOR_WORKLOAD, f"waiting for Kueue to create a Workload for Job {job.name}"
        )
    if workload.evicted_reason == KUEUE_PREEMPTED:
        return QueueState(
            PREEMPTED,
            f"preempted by Kueue ({workload.evicted_message or 'a higher priority workload'}); "
            f"the attempt waits in {where} and resumes from its latest checkpoint once "
            "readmitted",
        )
    why = workload.pending_message or "no quota reserved yet"
    return QueueState(WAITING_FOR_QUOTA, f"waiting in {where} for quota: {why}")


def admitted_condition(attempt: int, workload: QueueView | None) -> Cond:
    where = (
        f" by ClusterQueue {workload.cluster_queue}" if workload and workload.cluster_queue else ""
    )
    return Cond("Queued", "False", ADMITTED, f"attempt {attempt} was admitted{where}")


def reactivate(workload: QueueView | None) -> bool:
    """The run is no longer suspended but its Workload is still off because the
    operator turned it off; a Workload someone else deactivated stays off."""
    return workload is not None and not workload.active and workload.deactivated_for_suspend


def deactivate(workload: QueueView | None) -> bool:
    return workload is not None and workload.active
