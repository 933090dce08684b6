"""Whether a pool can hold a run's pods: each pod needs gpusPerNode GPUs on one node."""

from __future__ import annotations

import pytest

from tunegate_operator.api.finetunejob import FineTuneJobSpec
from tunegate_operator.decisions.preflight import NodeView, PreflightInputs, preflight

GPU_TAINT = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}


def _spec(nodes: int, gpus_per_node: int) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(
        {
            "model": {"uri": "s3://bucket/model"},
            "dataset": {"train": "s3://bucket/train.jsonl"},
            "output": {"uri": "s3://bucket/out"},
            "resources": {
                "nodes": nodes,
                "gpusPerNode": gpus_per_node,
                "nodeSelector": {"tunegate.dev/pool": "p"},
            },
        }
    )


def _node(name: str, gpus: int) -> NodeView:
    return NodeView(name, {"tunegate.dev/pool": "p"}, gpus, [GPU_TAINT])


@pytest.mark.parametrize(
    ("nodes", "gpus_per_node", "pool", "fits"),
    [
        (2, 1, [4], True),  # two pods of one GPU share a four-GPU node
        (2, 2, [4], True),
        (2, 4, [4], False),  # one node, room for one pod of four
        (2, 4, [4, 4], True),
        (3, 3, [8, 2], False),  # 8 // 3 = 2 pods; the 2-GPU node holds none
        (3, 3, [8, 3], True),
        (1, 8, [8], True),
    ],
)
def test_a_pool_fits_a_run_when_its_nodes_have_room_for_every_pod(
    nodes: int, gpus_per_node: int, pool: list[int], fits: bool
) -> None:
    result = preflight(
        _spec(nodes, gpus_per_node),
        PreflightInputs(
            secret_name=None,
            secret_keys=None,
            nodes=[_node(f"n{i}", gpus) for i, gpus in enumerate(pool)],
        ),
    )
    reasons = {p.reason for p in result.problems}
    assert ("InsufficientNodes" not in reasons) is fits, result.problems
    if not fits:
        (problem,) = [p for p in result.problems if p.reason == "InsufficientNodes"]
        assert problem.field == "spec.resources.nodes" and problem.waiting
