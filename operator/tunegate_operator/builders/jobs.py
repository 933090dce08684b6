"""Manifests of a FineTuneJob's children: audit Job, training Job(s), headless Service.

Pure functions of the spec, the run's identity and the operator settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunegate_contract.base import env_value
from tunegate_contract.trainer_config import TRAINER_CONFIG_ENV
from tunegate_operator.api.common import GPU_RESOURCE
from tunegate_operator.api.finetunejob import FineTuneJobSpec
from tunegate_operator.api.names import (
    ATTEMPT_LABEL,
    COMPLETION_INDEX_ANNOTATION,
    COMPONENT_LABEL,
    FTJ_LABEL,
    KUEUE_QUEUE_LABEL,
    MANAGED_LABELS,
)
from tunegate_operator.builders.job_envelope import (
    Owner,
    credential_env,
    hub_token_env,
    job_manifest,
    placement_tolerations,
    threads_env,
    with_volumes,
    worker_container,
    worker_pod_spec,
)
from tunegate_operator.builders.pod_template import apply_pod_template, merge_templates
from tunegate_operator.builders.pod_volumes import (
    cache_size_needed,
)
from tunegate_operator.builders.quantities import mebibytes, quantity_value
from tunegate_operator.builders.trainer_config import (
    RunRef,
    credentials_secret,
    trainer_config,
)
from tunegate_operator.settings import Settings

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


def _owner(run: RunRef) -> Owner:
    return Owner("FineTuneJob", run.namespace, run.name, run.uid)


def _labels(run: RunRef, component: str, attempt: int | None = None) -> dict[str, str]:
    labels = {**MANAGED_LABELS, FTJ_LABEL: run.name, COMPONENT_LABEL: component}
    if attempt is not None:
        labels[ATTEMPT_LABEL] = str(attempt)
    return labels


def _config_env(
    spec: FineTuneJobSpec, run: RunRef, attempt: int, settings: Settings
) -> dict[str, str]:
    config = trainer_config(spec, run=run, attempt=attempt, settings=settings)
    return {"name": TRAINER_CONFIG_ENV, "value": env_value(config)}


def audit_job(spec: FineTuneJobSpec, *, run: RunRef, settings: Settings) -> dict[str, Any]:
    """CPU only: no GPU_RESOURCE is held while the data is audited."""
    labels = _labels(run, "audit")
    container = worker_container(
        "audit",
        # The audit is the operator's own check: its slim image, even for a custom
        # spec.image (which only has to train).
        settings.audit_image or spec.image or settings.trainer_image,
        [settings.trainer_python, "-m", "tunegate_trainer", "audit"],
        [_config_env(spec, run, 1, settings), *credential_env(credentials_secret(spec, settings))],
        settings.audit_resources,
    )
    pod_spec = worker_pod_spec(
        container,
        node_selector=settings.audit_placement.node_selector,
        tolerations=list(settings.audit_placement.tolerations),
        settings=settings,
    )
    template = merge_templates(settings.pod_template, spec.pod_template)
    apply_pod_template(pod_spec, template, extra_resources=False)
    return job_manifest(
        name=Names(run.name).audit_job,
        owner=_owner(run),
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
    container = worker_container(
        "train",
        spec.image or settings.trainer_image,
        _train_command(spec, settings),
        _training_env(spec, run, attempt, settings, resources),
        resources,
    )
    container["ports"] = [{"name": "rendezvous", "containerPort": settings.master_port}]
    pod_spec = worker_pod_spec(
        container,
        node_selector=spec.resources.node_selector,
        tolerations=placement_tolerations(spec.resources.tolerations, spec.resources.gpus_per_node),
        settings=settings,
        priority_class=spec.resources.priority_class_name,
    )
    # Time to write a checkpoint on SIGTERM (suspend, deadline, preemption).
    pod_spec["terminationGracePeriodSeconds"] = CHECKPOINT_GRACE_SECONDS
    with_volumes(
        container,
        pod_spec,
        cache=spec.resources.cache,
        shared_memory=spec.resources.shared_memory,
        memory=spec.resources.memory,
        cache_bytes=cache_size_needed(model_bytes, spec.method),
    )
    if spec.resources.nodes > 1:
        pod_spec["subdomain"] = names.service
    template = merge_templates(settings.pod_template, spec.pod_template)
    apply_pod_template(pod_spec, template, extra_resources=True)
    if spec.resources.queue_name:
        labels = {**labels, KUEUE_QUEUE_LABEL: spec.resources.queue_name}
    return job_manifest(
        name=names.train_job(attempt),
        owner=_owner(run),
        labels=labels,
        pod_spec=pod_spec,
        job_spec=_training_job_spec(spec, active_deadline_seconds, suspend=suspend),
        pod_annotations=settings.pod_annotations,
    )


def _training_env(
    spec: FineTuneJobSpec,
    run: RunRef,
    attempt: int,
    settings: Settings,
    resources: dict[str, Any],
) -> list[dict[str, Any]]:
    processes = max(spec.resources.gpus_per_node, 1)
    return [
        _config_env(spec, run, attempt, settings),
        *_rendezvous_env(spec, run, attempt, settings),
        *credential_env(credentials_secret(spec, settings)),
        *hub_token_env(spec.model.token_secret),
        threads_env(quantity_value(resources["requests"]["cpu"]) / processes),
    ]


def _training_job_spec(
    spec: FineTuneJobSpec, active_deadline_seconds: int | None, *, suspend: bool
) -> dict[str, Any]:
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
    return job_spec


def headless_service(spec: FineTuneJobSpec, *, run: RunRef, settings: Settings) -> dict[str, Any]:
    """Stable DNS names `<job>-<index>.<service>` for torchrun's rendezvous."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": Names(run.name).service,
            "namespace": run.namespace,
            "labels": _labels(run, "train"),
            "ownerReferences": [_owner(run).reference()],
        },
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {FTJ_LABEL: run.name, COMPONENT_LABEL: "train"},
            "ports": [{"name": "rendezvous", "port": settings.master_port}],
        },
    }
