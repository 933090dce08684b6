"""Fake node pools of the local cluster, as pure data.

GPU nodes carry the labels NVIDIA GPU Feature Discovery puts on real nodes and
the taint GPU pools usually carry, so scheduling behaves as in production.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

POOL_LABEL = "tunegate.dev/pool"
MANAGED_BY_KWOK_LABEL = "kwok.x-k8s.io/managed"
GPU_RESOURCE = "nvidia.com/gpu"
GPU_TAINT: dict[str, str] = {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
# What pods placed on GPU nodes (the local runner, the real node) must tolerate.
GPU_TOLERATION: dict[str, str] = {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}
LOCAL_NODE_NAME = "local-runner"
LOCAL_POOL = "local"


@dataclass(frozen=True)
class NodePool:
    name: str
    nodes: int
    cpu: str
    memory: str
    gpus: int = 0
    gpu_product: str = ""
    gpu_memory_mib: int = 0
    # Local disk for emptyDir volumes (pods request it for the model cache).
    ephemeral_storage: str = "500Gi"

    def node_names(self) -> list[str]:
        return [f"{self.name}-{index}" for index in range(self.nodes)]


FAKE_POOLS: tuple[NodePool, ...] = (
    NodePool(
        name="a100-80g",
        nodes=2,
        cpu="96",
        memory="1000Gi",
        gpus=8,
        gpu_product="NVIDIA-A100-SXM4-80GB",
        gpu_memory_mib=81920,
        ephemeral_storage="7000Gi",
    ),
    NodePool(
        name="l4-24g",
        nodes=2,
        cpu="16",
        memory="64Gi",
        gpus=1,
        gpu_product="NVIDIA-L4",
        gpu_memory_mib=23034,
    ),
    NodePool(name="cpu", nodes=2, cpu="32", memory="128Gi"),
)

# The local node runs pods for real on this machine's CPU. It advertises GPUs so
# that GPU-requesting training pods can be pointed at it in end-to-end tests.
LOCAL_POOL_SPEC = NodePool(
    name=LOCAL_POOL,
    nodes=1,
    cpu="64",
    memory="256Gi",
    gpus=8,
    gpu_product="LOCAL-CPU-AS-GPU",
    gpu_memory_mib=24576,
)


def node_manifest(pool: NodePool, name: str, *, managed_by_kwok: bool) -> dict[str, Any]:
    labels = {
        POOL_LABEL: pool.name,
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64",
        "node.kubernetes.io/instance-type": f"fake-{pool.name}",
    }
    annotations: dict[str, str] = {"node.alpha.kubernetes.io/ttl": "0"}
    capacity = {
        "cpu": pool.cpu,
        "memory": pool.memory,
        "ephemeral-storage": pool.ephemeral_storage,
        "pods": "110",
    }
    taints: list[dict[str, str]] = []
    if pool.gpus:
        labels |= {
            "nvidia.com/gpu.present": "true",
            "nvidia.com/gpu.product": pool.gpu_product,
            "nvidia.com/gpu.memory": str(pool.gpu_memory_mib),
            "nvidia.com/gpu.count": str(pool.gpus),
        }
        capacity[GPU_RESOURCE] = str(pool.gpus)
        taints.append(dict(GPU_TAINT))
    if managed_by_kwok:
        labels[MANAGED_BY_KWOK_LABEL] = "true"
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": name, "labels": labels, "annotations": annotations},
        "spec": {"taints": taints} if taints else {},
        "status": {"capacity": capacity, "allocatable": dict(capacity)},
    }


def all_node_manifests() -> list[dict[str, Any]]:
    manifests = [
        node_manifest(pool, name, managed_by_kwok=True)
        for pool in FAKE_POOLS
        for name in pool.node_names()
    ]
    manifests.append(node_manifest(LOCAL_POOL_SPEC, LOCAL_NODE_NAME, managed_by_kwok=False))
    return manifests
