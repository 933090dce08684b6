"""Pure builders of the local cluster: pod status documents and fake node pools."""

from __future__ import annotations

from tunegate_cluster import pod_status
from tunegate_cluster.node_pools import (
    FAKE_POOLS,
    GPU_RESOURCE,
    LOCAL_NODE_NAME,
    MANAGED_BY_KWOK_LABEL,
    all_node_manifests,
)


def _exit(code: int, message: str = "") -> pod_status.ContainerExit:
    return pod_status.ContainerExit("main", "img", code, "t0", "t1", 0, message)


def test_phase_is_succeeded_only_when_every_container_exits_zero() -> None:
    assert pod_status.final_phase([_exit(0), _exit(0)]) == "Succeeded"
    assert pod_status.final_phase([_exit(0), _exit(3)]) == "Failed"
    assert pod_status.final_phase([]) == "Failed"


def test_terminal_patch_carries_exit_code_and_reason() -> None:
    status = pod_status.terminal_patch([_exit(3, "boom")])["status"]
    terminated = status["containerStatuses"][0]["state"]["terminated"]
    assert status["phase"] == "Failed"
    assert terminated == {
        "exitCode": 3,
        "reason": "Error",
        "message": "boom",
        "startedAt": "t0",
        "finishedAt": "t1",
    }


def test_termination_message_falls_back_to_log_tail_only_on_error() -> None:
    log = "x" * 10_000 + "END"
    assert pod_status.termination_message(log, policy="File", exit_code=1) == ""
    assert pod_status.termination_message(log, policy="FallbackToLogsOnError", exit_code=0) == ""
    message = pod_status.termination_message(log, policy="FallbackToLogsOnError", exit_code=1)
    assert message.endswith("END") and len(message) == pod_status.MAX_TERMINATION_MESSAGE_BYTES


def test_pools_have_gfd_labels_gpu_capacity_and_taints() -> None:
    manifests = {m["metadata"]["name"]: m for m in all_node_manifests()}
    a100 = manifests["a100-80g-0"]
    assert a100["status"]["capacity"][GPU_RESOURCE] == "8"
    assert a100["metadata"]["labels"]["nvidia.com/gpu.memory"] == "81920"
    assert a100["spec"]["taints"] == [
        {"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"}
    ]
    assert GPU_RESOURCE not in manifests["cpu-0"]["status"]["capacity"]
    assert "taints" not in manifests["cpu-0"]["spec"]
    local = manifests[LOCAL_NODE_NAME]
    assert MANAGED_BY_KWOK_LABEL not in local["metadata"]["labels"]
    products = {p.gpu_product for p in FAKE_POOLS if p.gpus}
    assert len(products) >= 2
