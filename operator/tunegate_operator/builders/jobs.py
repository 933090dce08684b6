"""Manifests of a FineTuneJob's children: audit Job, training Job(s), headless Service.

Pure functions of the spec, the run's identity and the operator settings.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from tunegate_operator.api.common import API_VERSION, GPU_RESOURCE
from tunegate_operator.api.finetunejob import FineTuneJobSpec
from tunegate_operator.builders.pod_template import apply_pod_template, merge_templates
from tunegate_operator.builders.pod_volumes import (
    CACHE_DIR,
    CACHE_ENV,
    PodVolumes,
    cache_size_needed,
    pod_volumes,
    shared_memory_size,
)
from tunegate_operator.builders.quantities import mebibytes, quantity_value
from tunegate_operator.builders.trainer_config import (
    RunRef,
    credentials_secret,
    trainer_config,
)
from tunegate_operator.settings import Settings

FTJ_LABEL = "tunegate.dev/finetunejob"
COMPONENT_LABEL = "tunegate.dev/component"
ATTEMPT_LABEL = "tunegate.dev/attempt"
KUEUE_QUEUE_LABEL = "kueue.x-k8s.io/queue-name"
COMPLETION_INDEX_ANNOTATION = "batch.kubernetes.io/job-completion-index"
CONFIG_ENV = "TUNEGATE_TRAINER_CONFIG"
CHECKPOINT_GRACE_SECONDS = 120
# torchrun forwards SIGTERM to its workers, then SIGKILLs them after this long (its own
# default is 30 s): most of the grace period, leaving torchrun time to exit itself.
TORCHRUN_SHUTDOWN_SECONDS = CHECKPOINT_GRACE_SECONDS - 10
# Per process, when spec.resources leaves cpu/memory empty: a request the scheduler
# can count on, not a limit.
DEFAULT_CPU_PER_PROCESS = 1
DEFAULT_MEMORY_PER_PROCESS = "4Gi"
# The only FailJob rule of a training Job: a Job failed with reason PodFailurePolicy was
# disrupted (preempted, evicted, drained), and the operator does not count that attempt.
DISRUPTION_POLICY = {
    "rules": [{"action": "FailJob", "onPodConditions": [{"type": "DisruptionTarget"}]}]
}
GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
# The trainer image's user (trainer-image/Dockerfile); an image given in spec.image
# runs as this uid too.
TRAINER_UID = 10001


def pod_security_context() -> dict[str, Any]:
    """Non-root, as restricted Pod Security asks; fsGroup makes volumes writable."""
    return {
        "runAsNonRoot": True,
        "runAsUser": TRAINER_UID,
        "runAsGroup": TRAINER_UID,
        "fsGroup": TRAINER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def trainer_service_account(namespace: str, settings: Settings) -> dict[str, Any] | None:
    """The identity of audit, training and eval pods, when the operator manages it: no
    API token, and the annotations that grant cloud storage (IRSA, Workload Identity)."""
    if not (settings.create_service_account and settings.service_account):
        return None
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": settings.service_account,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "tunegate"},
            "annotations": dict(settings.service_account_annotations),
        },
        "automountServiceAccountToken": False,
    }


@dataclass(frozen=True)
class Names:
    ftj: str

    @property
    def audit_job(self) -> str:
        return f"{self.ftj}-audit"

    def train_job(self, attempt: int) -> str:
        return f"{self.ftj}-train-{attempt}"

    @property
    def service(self) -> str:
        return f"{self.ftj}-train"


def owner_reference(run: RunRef) -> dict[str, Any]:
    return {
        "apiVersion": API_VERSION,
        "kind": "FineTuneJob",
        "name": run.name,
        "uid": run.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def _labels(run: RunRef, component: str, attempt: int | None = None) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/managed-by": "tunegate",
        "app.kubernetes.io/part-of": "tunegate",
        FTJ_LABEL: run.name,
        COMPONENT_LABEL: component,
    }
    if attempt is not None:
        labels[ATTEMPT_LABEL] = str(attempt)
    return labels


def credential_env(secret: str | None) -> list[dict[str, Any]]:
    """S3 credentials only by reference: the value never enters a manifest."""
    if not secret:
        return []
    return [
        {"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
        for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
    ]


def threads_env(cpu_per_process: float) -> dict[str, str]:
    """torch sizes its thread pools from the node's cores, not the pod's share: on a
    shared node that oversubscribes every core."""
    return {"name": "OMP_NUM_THREADS", "value": str(max(1, int(cpu_per_process)))}


def with_volumes(container: dict[str, Any], pod_spec: dict[str, Any], volumes: PodVolumes) -> None:
    """Mount /dev/shm and the cache, and request the cache's ephemeral storage."""
    container["volumeMounts"] = volumes.mounts
    container["env"].append({"name": CACHE_ENV, "value": CACHE_DIR})
    pod_spec["volumes"] = volumes.volumes
    if volumes.ephemeral_storage:
        requests = container["resources"].setdefault("requests", {})
        requests["ephemeral-storage"] = volumes.ephemeral_storage


def hub_token_env(secret: str | None) -> list[dict[str, Any]]:
    """HF_TOKEN for private or gated hf:// models, by Secret reference only."""
    if not secret:
        return []
    ref = {"name": secret, "key": "HF_TOKEN"}
    return [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": ref}}]


def _config_env(
    spec: FineTuneJobSpec, run: RunRef, attempt: int, settings: Settings
) -> dict[str, str]:
    document = trainer_config(spec, run=run, attempt=attempt, settings=settings)
    return {"name": CONFIG_ENV, "value": json.dumps(document, sort_keys=True)}


def _job(
    *,
    name: str,
    run: RunRef,
    labels: dict[str, str],
    pod_spec: dict[str, Any],
    job_spec: dict[str, Any],
    pod_annotations: dict[str, str],
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": run.namespace,
            "labels": labels,
            "ownerReferences": [owner_reference(run)],
        },
        "spec": {
            **job_spec,
            "template": {
                "metadata": {"labels": labels, "annotations": dict(pod_annotations)},
                "spec": pod_spec,
            },
        },
    }


def audit_job(spec: FineTuneJobSpec, *, run: RunRef, settings: Settings) -> dict[str, Any]:
    """CPU only: no GPU_RESOURCE is held while the data is audited."""
    labels = _labels(run, "audit")
    container = {
        "name": "audit",
        # The audit is the operator's own check: its slim image, even for a custom
        # spec.image (which only has to train).
        "image": settings.audit_image or spec.image or settings.trainer_image,
        "command": [settings.trainer_python, "-m", "tunegate_trainer", "audit"],
        "env": [
            _config_env(spec, run, 1, settings),
            *credential_env(credentials_secret(spec, settings)),
        ],
        "resources": settings.audit_resources,
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Training, audit and eval pods never call the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "nodeSelector": dict(settings.audit_placement.node_selector),
        "tolerations": list(settings.audit_placement.tolerations),
    }
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    template = merge_templates(settings.pod_template, spec.pod_template)
    apply_pod_template(pod_spec, template, extra_resources=False)
    return _job(
        name=Names(run.name).audit_job,
        run=run,
        labels=labels,
        pod_spec=pod_spec,
        job_spec={"backoffLimit": 2},
        pod_annotations=settings.pod_annotations,
    )


def _rendezvous_env(
    spec: FineTuneJobSpec, run: RunRef, attempt: int, settings: Settings
) -> list[dict[str, Any]]:
    names = Names(run.name)
    nodes = spec.resources.nodes
    if nodes * max(spec.resources.gpus_per_node, 1) == 1:
        return []  # one process: no rendezvous, no port that co-located pods could share
    master = f"{names.train_job(attempt)}-0.{names.service}.{run.namespace}.svc"
    index_path = f"metadata.annotations['{COMPLETION_INDEX_ANNOTATION}']"
    node_rank: dict[str, Any] = (
        {"name": "NODE_RANK", "valueFrom": {"fieldRef": {"fieldPath": index_path}}}
        if nodes > 1
        else {"name": "NODE_RANK", "value": "0"}
    )
    return [
        {"name": "MASTER_ADDR", "value": master if nodes > 1 else "127.0.0.1"},
        {"name": "MASTER_PORT", "value": str(settings.master_port)},
        {"name": "NNODES", "value": str(nodes)},
        {"name": "NPROC_PER_NODE", "value": str(max(spec.resources.gpus_per_node, 1))},
        {"name": "WORLD_SIZE", "value": str(nodes * max(spec.resources.gpus_per_node, 1))},
        node_rank,
    ]


def _train_command(spec: FineTuneJobSpec, settings: Settings) -> list[str]:
    processes = spec.resources.nodes * max(spec.resources.gpus_per_node, 1)
    if processes == 1:
        return [settings.trainer_python, "-m", "tunegate_trainer", "train"]
    return [
        settings.trainer_python,
        "-m",
        "torch.distributed.run",
        "--nnodes=$(NNODES)",
        "--nproc-per-node=$(NPROC_PER_NODE)",
        "--node-rank=$(NODE_RANK)",
        "--master-addr=$(MASTER_ADDR)",
        "--master-port=$(MASTER_PORT)",
        f"--shutdown-timeout={TORCHRUN_SHUTDOWN_SECONDS}",
        "-m",
        "tunegate_trainer",
        "train",
    ]


def _training_resources(spec: FineTuneJobSpec) -> dict[str, Any]:
    processes = max(spec.resources.gpus_per_node, 1)
    gpus = spec.resources.gpus_per_node
    limits: dict[str, str] = {GPU_RESOURCE: str(gpus)} if gpus else {}
    if spec.resources.memory:
        # Request = limit: the scheduler reserves what the pod may use, and going over
        # is an OOM kill the operator reports, never a surprise for the node.
        limits["memory"] = spec.resources.memory
    requests = {
        "cpu": spec.resources.cpu or str(DEFAULT_CPU_PER_PROCESS * processes),
        "memory": spec.resources.memory
        or mebibytes(quantity_value(DEFAULT_MEMORY_PER_PROCESS) * processes),
    }
    return {"limits": limits, "requests": requests} if limits else {"requests": requests}


def training_job(
    spec: FineTuneJobSpec,
    *,
    run: RunRef,
    attempt: int,
    settings: Settings,
    active_deadline_seconds: int | None,
    suspend: bool,
    model_bytes: int | None = None,
) -> dict[str, Any]:
    """One attempt. Any pod failure fails the attempt (backoffLimit 0), so the operator
    restarts the whole group and every rank resumes from the same checkpoint.
    model_bytes (the base model's size, when known) sizes the cache."""
    names = Names(run.name)
    labels = _labels(run, "train", attempt)
    resources = _training_resources(spec)
    processes = max(spec.resources.gpus_per_node, 1)
    env = [
        _config_env(spec, run, attempt, settings),
        *_rendezvous_env(spec, run, attempt, settings),
        *credential_env(credentials_secret(spec, settings)),
        *hub_token_env(spec.model.token_secret),
        threads_env(quantity_value(resources["requests"]["cpu"]) / processes),
    ]
    container = {
        "name": "train",
        "image": spec.image or settings.trainer_image,
        "command": _train_command(spec, settings),
        "env": env,
        "resources": resources,
        "ports": [{"name": "rendezvous", "containerPort": settings.master_port}],
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    tolerations = [
        t.model_dump(by_alias=True, exclude_none=True) for t in spec.resources.tolerations
    ]
    if spec.resources.gpus_per_node:
        tolerations.append(dict(GPU_TOLERATION))
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        # Training, audit and eval pods never call the Kubernetes API.
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "nodeSelector": dict(spec.resources.node_selector),
        "tolerations": tolerations,
        # Time to write a checkpoint on SIGTERM (suspend, deadline, preemption).
        "terminationGracePeriodSeconds": CHECKPOINT_GRACE_SECONDS,
    }
    with_volumes(
        container,
        pod_spec,
        pod_volumes(
            spec.resources.cache,
            shared_memory=shared_memory_size(spec.resources.shared_memory, spec.resources.memory),
            cache_bytes=cache_size_needed(model_bytes, spec.method),
        ),
    )
    if spec.resources.nodes > 1:
        pod_spec["subdomain"] = names.service
    if spec.resources.priority_class_name:
        pod_spec["priorityClassName"] = spec.resources.priority_class_name
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    template = merge_templates(settings.pod_template, spec.pod_template)
    apply_pod_template(pod_spec, template, extra_resources=True)
    if spec.resources.queue_name:
        labels = {**labels, KUEUE_QUEUE_LABEL: spec.resources.queue_name}
    job_spec: dict[str, Any] = {
        "backoffLimit": 0,
        "podFailurePolicy": DISRUPTION_POLICY,
        "completions": spec.resources.nodes,
        "parallelism": spec.resources.nodes,
        # Kueue admits a queued Job by unsuspending it.
        "suspend": suspend or bool(spec.resources.queue_name),
    }
    if spec.resources.nodes > 1:
        job_spec["completionMode"] = "Indexed"
    if active_deadline_seconds is not None:
        job_spec["activeDeadlineSeconds"] = max(active_deadline_seconds, 1)
    return _job(
        name=names.train_job(attempt),
        run=run,
        labels=labels,
        pod_spec=pod_spec,
        job_spec=job_spec,
        pod_annotations=settings.pod_annotations,
    )


def headless_service(spec: FineTuneJobSpec, *, run: RunRef, settings: Settings) -> dict[str, Any]:
    """Stable DNS names `<job>-<index>.<service>` for torchrun's rendezvous."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": Names(run.name).service,
            "namespace": run.namespace,
            "labels": _labels(run, "train"),
            "ownerReferences": [owner_reference(run)],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {FTJ_LABEL: run.name, COMPONENT_LABEL: "train"},
            "ports": [{"name": "rendezvous", "port": settings.master_port}],
        },
    }
