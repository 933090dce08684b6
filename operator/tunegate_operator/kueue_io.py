"""Reads and writes of Kueue's Workloads (kueue.x-k8s.io/v1beta2), for queued runs."""

from __future__ import annotations

from dataclasses import dataclass

from kubernetes.client import ApiException

from tunegate_operator.api.names import DEACTIVATED_FOR_SUSPEND_ANNOTATION, KUEUE_JOB_UID_LABEL
from tunegate_operator.decisions.queueing import QueueView, workload_view
from tunegate_operator.k8s_io import Kube

KUEUE_GROUP, KUEUE_VERSION, WORKLOADS = "kueue.x-k8s.io", "v1beta2", "workloads"


@dataclass(frozen=True)
class WorkloadLookup:
    installed: bool
    workload: QueueView | None = None


def workload_of_job(kube: Kube, namespace: str, job_uid: str) -> WorkloadLookup:
    """Kueue's Workload for one Job, found by the job-uid label Kueue puts on it."""
    try:
        found = kube.list_items(
            kube.custom.list_namespaced_custom_object, KUEUE_GROUP, KUEUE_VERSION, namespace,
            WORKLOADS, label_selector=f"{KUEUE_JOB_UID_LABEL}={job_uid}",
        )  # fmt: skip
    except ApiException as exc:
        if exc.status == 404:  # no such API: Kueue is not installed
            return WorkloadLookup(installed=False)
        raise
    live = [w for w in found if not w["metadata"].get("deletionTimestamp")]
    return WorkloadLookup(installed=True, workload=workload_view(live[0]) if live else None)


def set_workload_active(kube: Kube, namespace: str, name: str, *, active: bool) -> None:
    """Marks a Workload the operator turns off, so that only those are turned back on."""
    annotation = "true" if not active else None
    kube.custom.patch_namespaced_custom_object(
        KUEUE_GROUP, KUEUE_VERSION, namespace, WORKLOADS, name,
        {
            "metadata": {"annotations": {DEACTIVATED_FOR_SUSPEND_ANNOTATION: annotation}},
            "spec": {"active": active},
        },
        _content_type="application/merge-patch+json",
    )  # fmt: skip
