"""Per-GPU memory estimate for a fine-tuning run, and what would fit instead (pure).

The model is the usual accounting for mixed-precision AdamW training:
weights + gradients + optimizer state (fp32 master copy and two moments), each
sharded by ZeRO stage, plus activations (Korthikanti et al., 2022, with
memory-efficient attention; with gradient checkpointing only layer inputs and
one layer's activations are live), fp32 logits for the loss, and a fixed
allowance for the CUDA context and allocator slack.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from tunegate_operator.planner.shapes import ModelShape

GIB = 1024**3
CUDA_OVERHEAD_BYTES = int(1.5 * GIB)
NF4_BYTES_PER_PARAM = 0.5 + 0.127 / 4  # 4-bit weights + double-quantised block constants
ACTIVATION_BYTES_PER_TOKEN_HIDDEN = 34  # per layer, 16-bit, memory-efficient attention

Method = Literal["lora", "qlora", "full"]
Precision = Literal["bf16", "fp16", "fp32"]


@dataclass(frozen=True)
class RunShape:
    """Everything about a run that decides its memory."""

    method: Method
    precision: Precision
    lora_rank: int
    lora_targets: tuple[str, ...]
    seq_length: int
    micro_batch: int
    gradient_checkpointing: bool
    zero_stage: int
    offload_optimizer: bool
    gpus: int  # total data-parallel processes


@dataclass(frozen=True)
class Estimate:
    total_bytes: int
    weights_bytes: int
    gradients_bytes: int
    optimizer_bytes: int
    activations_bytes: int
    trainable_parameters: int

    @property
    def gib(self) -> float:
        return self.total_bytes / GIB


def _bytes_per_param(precision: Precision) -> int:
    return 4 if precision == "fp32" else 2


def estimate(model: ModelShape, run: RunShape) -> Estimate:
    total_params = model.total_parameters()
    width = _bytes_per_param(run.precision)
    shards = max(run.gpus, 1)

    if run.method == "full":
        trainable = total_params
    else:
        trainable = model.lora_parameters(rank=run.lora_rank, target_modules=list(run.lora_targets))

    if run.method == "qlora":
        quantised = model.layers * model.block_linear_parameters()
        frozen_weights = int(quantised * NF4_BYTES_PER_PARAM) + (total_params - quantised) * width
    else:
        frozen_weights = total_params * width if run.method == "lora" else 0
    trainable_weights = trainable * width
    weights = frozen_weights + trainable_weights
    if run.zero_stage >= 3:
        weights = weights // shards

    gradients = trainable * width
    if run.zero_stage >= 2:
        gradients //= shards

    # fp32 master weights only exist under mixed precision; the two Adam moments always.
    optimizer = trainable * ((4 if width == 2 else 0) + 8)
    if run.offload_optimizer:
        optimizer = 0
    elif run.zero_stage >= 1:
        optimizer //= shards

    tokens = run.seq_length * run.micro_batch
    one_layer = ACTIVATION_BYTES_PER_TOKEN_HIDDEN * tokens * model.hidden * width // 2
    if run.gradient_checkpointing:
        activations = model.layers * tokens * model.hidden * width + one_layer
    else:
        activations = model.layers * one_layer
    logits = 2 * tokens * model.vocab * 4
    activations += logits

    total = weights + gradients + optimizer + activations + CUDA_OVERHEAD_BYTES
    return Estimate(total, weights, gradients, optimizer, activations, trainable)


@dataclass(frozen=True)
class Plan:
    estimate: Estimate
    available_bytes: int
    fits: bool
    message: str


def _alternatives(run: RunShape, *, max_gpus: int) -> list[tuple[str, RunShape]]:
    options: list[tuple[str, RunShape]] = []
    if run.method != "qlora":
        options.append(("method qlora", replace(run, method="qlora")))
    if run.method == "full":
        options.append(("method lora", replace(run, method="lora")))
    if not run.gradient_checkpointing:
        options.append(
            ("training.gradientCheckpointing true", replace(run, gradient_checkpointing=True))
        )
    for stage in range(max(run.zero_stage + 1, 2), 4):
        options.append((f"deepspeed.zeroStage {stage}", replace(run, zero_stage=stage)))
    if not run.offload_optimizer and run.method == "full":
        options.append(
            (
                "deepspeed.zeroStage 3 with offloadOptimizer",
                replace(run, zero_stage=3, offload_optimizer=True),
            )
        )
    gpus = run.gpus * 2
    while gpus <= max_gpus:
        options.append(
            (f"{gpus} GPUs with deepspeed.zeroStage 3", replace(run, gpus=gpus, zero_stage=3))
        )
        gpus *= 2
    if run.micro_batch > 1:
        options.append(
            ("training.batchSize 1 (raise gradientAccumulation)", replace(run, micro_batch=1))
        )
    return options


def plan(
    model: ModelShape, run: RunShape, *, gpu_memory_bytes: int, pool: str, max_gpus: int
) -> Plan:
    """Compare the estimate with one GPU of the pool; say what would fit when it does not."""
    result = estimate(model, run)
    if result.total_bytes <= gpu_memory_bytes:
        return Plan(
            result,
            gpu_memory_bytes,
            True,
            f"needs {result.gib:.1f} GiB per GPU of {gpu_memory_bytes / GIB:.1f} GiB on {pool}",
        )
    fitting = []
    for label, candidate in _alternatives(run, max_gpus=max_gpus):
        option = estimate(model, candidate)
        if option.total_bytes <= gpu_memory_bytes:
            fitting.append(f"{label} ({option.gib:.1f} GiB)")
    over = (result.total_bytes - gpu_memory_bytes) / GIB
    advice = (
        ("would fit: " + "; or ".join(fitting[:3]))
        if fitting
        else ("nothing tried fits this pool; choose a pool with more GPU memory")
    )
    return Plan(
        result,
        gpu_memory_bytes,
        False,
        f"needs {result.gib:.1f} GiB per GPU but {pool} GPUs have "
        f"{gpu_memory_bytes / GIB:.1f} GiB (over by {over:.1f} GiB); {advice}",
    )
