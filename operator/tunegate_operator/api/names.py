"""Well-known names the operator writes on objects and reads back: labels that find a
run's Jobs and pods, annotations people and Kueue set. Defined once, here."""

from __future__ import annotations

from tunegate_operator.api.common import GROUP

FTJ_LABEL = f"{GROUP}/finetunejob"  # the FineTuneJob a Job or pod works for
COMPONENT_LABEL = f"{GROUP}/component"  # audit | train
ATTEMPT_LABEL = f"{GROUP}/attempt"  # the training attempt, 1-based
GATE_LABEL = f"{GROUP}/evalgate"  # the EvalGate an eval Job works for
GENERATION_LABEL = f"{GROUP}/generation"  # the gate generation it evaluates
MANAGED_LABELS = {
    "app.kubernetes.io/managed-by": "tunegate",
    "app.kubernetes.io/part-of": "tunegate",
}

APPROVE_ANNOTATION = f"{GROUP}/approve"  # a person approves a Manual promotion
LOCAL_LOG_DIR_ANNOTATION = f"{GROUP}/local-log-dir"  # the local pod runner's logs

KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
KUEUE_JOB_UID_LABEL = "kueue.x-k8s.io/job-uid"  # on the Workload Kueue makes for a Job
# On a Workload the operator deactivated for spec.runPolicy.suspend (and only that).
DEACTIVATED_FOR_SUSPEND_ANNOTATION = f"{GROUP}/deactivated-for-suspend"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
