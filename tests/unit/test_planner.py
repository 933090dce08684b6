"""GPU memory planner: the documented orders for a 7B model, and useful refusals."""

from __future__ import annotations

from dataclasses import replace

import pytest

from tunegate_operator.planner.memory import GIB, RunShape, estimate, plan
from tunegate_operator.planner.shapes import LLAMA_2_7B, ConfigError, shape_from_hf_config

LLAMA = shape_from_hf_config(LLAMA_2_7B)
LORA = RunShape(
    method="lora",
    precision="bf16",
    lora_rank=8,
    lora_targets=("q_proj", "v_proj"),
    seq_length=2048,
    micro_batch=4,
    gradient_checkpointing=True,
    zero_stage=0,
    offload_optimizer=False,
    gpus=1,
)


def test_seven_b_parameter_counts() -> None:
    assert LLAMA.total_parameters() == 6_738_415_616
    assert LLAMA.lora_parameters(rank=8, target_modules=["q_proj", "v_proj"]) == 4_194_304
    assert estimate(LLAMA, LORA).trainable_parameters == 4_194_304


def test_full_needs_several_times_lora_and_qlora_less_than_lora() -> None:
    lora = estimate(LLAMA, LORA).total_bytes
    full = estimate(LLAMA, replace(LORA, method="full")).total_bytes
    qlora = estimate(LLAMA, replace(LORA, method="qlora")).total_bytes
    assert full > 4 * lora
    assert qlora < lora * 0.7


def test_zero_stages_and_offload_shrink_per_gpu_memory() -> None:
    full8 = replace(LORA, method="full", gpus=8)
    sizes = [estimate(LLAMA, replace(full8, zero_stage=s)).total_bytes for s in range(4)]
    assert sizes == sorted(sizes, reverse=True) and len(set(sizes)) == 4
    offloaded = estimate(LLAMA, replace(full8, zero_stage=3, offload_optimizer=True))
    assert offloaded.optimizer_bytes == 0


def test_rank_and_targets_scale_trainable_parameters_linearly() -> None:
    r8 = LLAMA.lora_parameters(rank=8, target_modules=["q_proj", "v_proj"])
    assert LLAMA.lora_parameters(rank=16, target_modules=["q_proj", "v_proj"]) == 2 * r8
    all_attention = LLAMA.lora_parameters(
        rank=8, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]
    )
    assert all_attention == 2 * r8


def test_gradient_checkpointing_and_micro_batch_change_activation_memory() -> None:
    with_ckpt = estimate(LLAMA, LORA).activations_bytes
    without = estimate(LLAMA, replace(LORA, gradient_checkpointing=False)).activations_bytes
    assert without > 3 * with_ckpt
    assert estimate(LLAMA, replace(LORA, micro_batch=8)).activations_bytes > with_ckpt


def test_refusal_says_how_much_over_and_what_fits() -> None:
    result = plan(
        LLAMA, replace(LORA, method="full"), gpu_memory_bytes=80 * GIB, pool="a100-80g", max_gpus=16
    )
    assert not result.fits
    assert "over by 26.9 GiB" in result.message
    assert "would fit: method qlora" in result.message
    fits = plan(LLAMA, LORA, gpu_memory_bytes=80 * GIB, pool="a100-80g", max_gpus=16)
    assert fits.fits and "needs 19.1 GiB" in fits.message


def test_unknown_target_module_names_the_field() -> None:
    with pytest.raises(ConfigError, match=r"lora.targetModules \['qkv'\]"):
        LLAMA.lora_parameters(rank=8, target_modules=["qkv"])


def test_missing_config_key_is_named() -> None:
    with pytest.raises(ConfigError, match="hidden_size"):
        shape_from_hf_config({"num_hidden_layers": 2})
