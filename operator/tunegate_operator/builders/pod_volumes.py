"""The volumes every training and eval pod gets (pure): a memory-backed /dev/shm and a
cache for the base model and checkpoints.

Without them /dev/shm is the runtime's 64 MiB (NCCL and DataLoader workers fail) and
multi-GB downloads land in the container's writable layer, which the kubelet neither
requests nor accounts for until it evicts the pod.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunegate_operator.api.common import CacheSpec
from tunegate_operator.builders.quantities import GIB, mebibytes, quantity_value

CACHE_DIR = "/cache"
CACHE_ENV = "TUNEGATE_CACHE"
SHM_DIR = "/dev/shm"
# Checkpoints kept on local disk at once: the trainer's save_total_limit (2) plus the
# one a resumed attempt downloads.
LOCAL_CHECKPOINTS = 3
# A full fine-tuning checkpoint holds the weights and AdamW's two fp32 moments: about
# 5x the 16-bit weights. An adapter's checkpoint is a few percent of the model.
CHECKPOINT_SHARE = {"full": 5.0, "lora": 0.05, "qlora": 0.05}
CACHE_SLACK_BYTES = GIB


@dataclass(frozen=True)
class PodVolumes:
    volumes: list[dict[str, Any]]
    mounts: list[dict[str, Any]]
    ephemeral_storage: str | None  # the pod's request, when the cache is an emptyDir


def cache_size_needed(model_bytes: int | None, method: str | None) -> int | None:
    """Bytes the cache must hold: the base model, plus local checkpoints when training
    (method given). None when the model's size is unknown (hf:// models)."""
    if model_bytes is None:
        return None
    checkpoints = LOCAL_CHECKPOINTS * CHECKPOINT_SHARE[method] * model_bytes if method else 0
    return int(model_bytes + checkpoints + CACHE_SLACK_BYTES)


def shared_memory_size(shared_memory: str | None, memory: str | None) -> str | None:
    """The /dev/shm limit: as asked, else half the pod's memory (shm pages count against
    the memory limit), else none (the kubelet bounds it by the node)."""
    if shared_memory:
        return shared_memory
    if memory:
        return mebibytes(quantity_value(memory) / 2)
    return None


def pod_volumes(
    cache: CacheSpec, *, shared_memory: str | None, cache_bytes: int | None
) -> PodVolumes:
    shm: dict[str, Any] = {"medium": "Memory"}
    if shared_memory:
        shm["sizeLimit"] = shared_memory
    volumes: list[dict[str, Any]] = [{"name": "dshm", "emptyDir": shm}]
    ephemeral: str | None = None
    if cache.claim_name:
        volumes.append({"name": "cache", "persistentVolumeClaim": {"claimName": cache.claim_name}})
    else:
        ephemeral = cache.size_limit or (mebibytes(cache_bytes) if cache_bytes else None)
        volumes.append({"name": "cache", "emptyDir": {"sizeLimit": ephemeral} if ephemeral else {}})
    mounts = [
        {"name": "dshm", "mountPath": SHM_DIR},
        {"name": "cache", "mountPath": CACHE_DIR},
    ]
    return PodVolumes(volumes, mounts, ephemeral)
