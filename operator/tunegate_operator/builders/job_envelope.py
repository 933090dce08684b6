"""What every Job the operator creates shares (pure): the Job envelope (labels,
owner, pod template metadata), the worker pod's fixed settings (no restarts in place,
no API token, restricted Pod Security), its identity and the env every worker gets."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tunegate_operator.api.common import API_VERSION, GPU_RESOURCE, CacheSpec, Toleration
from tunegate_operator.builders.pod_volumes import (
    CACHE_DIR,
    CACHE_ENV,
    pod_volumes,
    shared_memory_size,
)
from tunegate_operator.settings import Settings

GPU_TOLERATION = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
# The trainer image's user (trainer-image/Dockerfile); an image given in spec.image
# runs as this uid too.
TRAINER_UID = 10001


@dataclass(frozen=True)
class Owner:
    """The tunegate object a Job belongs to (deleted with it)."""

    kind: str
    namespace: str
    name: str
    uid: str

    def reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": self.kind,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }


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


def placement_tolerations(tolerations: Sequence[Toleration], gpus: int) -> list[dict[str, Any]]:
    """The spec's tolerations, plus the GPU taint's when the pod asks for GPUs."""
    rendered = [t.model_dump(by_alias=True, exclude_none=True) for t in tolerations]
    return [*rendered, dict(GPU_TOLERATION)] if gpus else rendered


def worker_pod_spec(
    container: dict[str, Any],
    *,
    node_selector: Mapping[str, str],
    tolerations: list[dict[str, Any]],
    settings: Settings,
    priority_class: str | None = None,
) -> dict[str, Any]:
    """Audit, training and eval pods: never restarted in place (the operator decides),
    never calling the Kubernetes API, non-root."""
    pod_spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "nodeSelector": dict(node_selector),
        "tolerations": tolerations,
    }
    if priority_class:
        pod_spec["priorityClassName"] = priority_class
    if settings.service_account:
        pod_spec["serviceAccountName"] = settings.service_account
    return pod_spec


def job_manifest(
    *,
    name: str,
    owner: Owner,
    labels: dict[str, str],
    pod_spec: dict[str, Any],
    job_spec: dict[str, Any],
    pod_annotations: Mapping[str, str],
) -> dict[str, Any]:
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": owner.namespace,
            "labels": labels,
            "ownerReferences": [owner.reference()],
        },
        "spec": {
            **job_spec,
            "template": {
                "metadata": {"labels": labels, "annotations": dict(pod_annotations)},
                "spec": pod_spec,
            },
        },
    }


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


def worker_container(
    name: str, image: str, command: list[str], env: list[dict[str, Any]], resources: Any
) -> dict[str, Any]:
    """An audit, training or eval container: unprivileged, its log tail as the message."""
    return {
        "name": name,
        "image": image,
        "command": command,
        "env": env,
        "resources": resources,
        "securityContext": container_security_context(),
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }


def with_volumes(
    container: dict[str, Any],
    pod_spec: dict[str, Any],
    *,
    cache: CacheSpec,
    shared_memory: str | None,
    memory: str | None,
    cache_bytes: int | None,
) -> None:
    """Mount /dev/shm and the cache, and request the cache's ephemeral storage."""
    volumes = pod_volumes(
        cache, shared_memory=shared_memory_size(shared_memory, memory), cache_bytes=cache_bytes
    )
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
