"""Packing (labels, block shapes) and the DeepSpeed config the trainer derives."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from tunegate_contract.trainer_config import TrainerConfig
from tunegate_trainer.data import Example
from tunegate_trainer.modeling import without_kv_cache
from tunegate_trainer.packing import IGNORE, Packing, pack
from tunegate_trainer.train import deepspeed_config, planned_steps


class CharTokenizer:
    """One token per character; id 0 is end-of-sequence."""

    eos_token_id = 0
    pad_token_id = None

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}


def test_concatenated_packing_cuts_the_token_stream_into_full_blocks() -> None:
    examples = [Example("ab", "cd", "train"), Example("", "efg", "train")]
    packed = pack(examples, CharTokenizer(), block_size=4, packing="concatenated")
    blocks = [packed[i] for i in range(len(packed))]
    assert [b["input_ids"].tolist() for b in blocks] == [
        [97, 98, 99, 100],
        [0, 101, 102, 103],
        [0, 0, 0, 0],
    ]
    assert blocks[0]["labels"].tolist() == [IGNORE, IGNORE, 99, 100]
    assert blocks[2]["labels"].tolist() == [0, IGNORE, IGNORE, IGNORE]
    assert blocks[2]["attention_mask"].tolist() == [1, 0, 0, 0]
    assert packed.tokens == 9


@pytest.mark.parametrize("packing", ["isolated", "concatenated"])
def test_blocks_with_nothing_to_learn_are_dropped(packing: Packing) -> None:
    packed = pack(
        [Example("long prompt!", "x", "train")], CharTokenizer(), block_size=4, packing=packing
    )
    assert all((b["labels"] != IGNORE).any() for b in (packed[i] for i in range(len(packed))))


def test_isolated_packing_places_whole_examples_with_their_own_positions() -> None:
    examples = [
        Example("ab", "cd", "train"),  # 5 tokens with end-of-sequence
        Example("", "efg", "train"),  # 4
        Example("h", "ij", "train"),  # 4
    ]
    packed = pack(examples, CharTokenizer(), block_size=9)
    blocks = [packed[i] for i in range(len(packed))]
    assert [b["input_ids"].tolist() for b in blocks] == [
        [97, 98, 99, 100, 0, 101, 102, 103, 0],
        [104, 105, 106, 0, 0, 0, 0, 0, 0],
    ]
    assert [b["position_ids"].tolist() for b in blocks] == [
        [0, 1, 2, 3, 4, 0, 1, 2, 3],
        [0, 1, 2, 3, 0, 1, 2, 3, 4],
    ]
    assert blocks[1]["labels"].tolist() == [IGNORE, 105, 106, 0, *[IGNORE] * 5]
    # No attention mask: the model derives one block-diagonal mask from the positions.
    assert "attention_mask" not in blocks[0]
    assert packed.tokens == 13


def test_a_packed_example_computes_exactly_what_it_computes_alone() -> None:
    """Logits of each example in an isolated block equal those of the example run by
    itself; in a concatenated block the second example sees the first and differs."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = without_kv_cache(LlamaForCausalLM(config).eval())  # as the trainer loads it
    first, second = Example("ab", "cd", "train"), Example("xy", "zw", "train")
    alone = [
        model(input_ids=pack([e], CharTokenizer(), block_size=5)[0]["input_ids"][None]).logits[0]
        for e in (first, second)
    ]
    isolated = pack([first, second], CharTokenizer(), block_size=10)[0]
    together = model(
        input_ids=isolated["input_ids"][None], position_ids=isolated["position_ids"][None]
    ).logits[0]
    torch.testing.assert_close(together[:5], alone[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(together[5:], alone[1], atol=1e-5, rtol=1e-4)
    concatenated = pack([first, second], CharTokenizer(), block_size=10, packing="concatenated")
    mixed = model(
        input_ids=concatenated[0]["input_ids"][None],
        attention_mask=concatenated[0]["attention_mask"][None],
    ).logits[0]
    assert not torch.allclose(mixed[5:], alone[1], atol=1e-3)


def _config(**overrides: Any) -> TrainerConfig:
    document: dict[str, Any] = {
        "run": {"namespace": "n", "name": "r", "uid": "u", "attempt": 1},
        "model": {"uri": "s3://models/base"},
        "data": {
            "train": "s3://data/t.jsonl",
            "validation_split": 0.0,
            "format": "text",
            "on_malformed_row": "fail",
        },
        "method": "full",
        "training": {
            "epochs": 2,
            "learning_rate": 1e-4,
            "batch_size": 4,
            "gradient_accumulation": 2,
            "max_seq_length": 64,
            "seed": 0,
            "precision": "bf16",
            "gradient_checkpointing": True,
            "warmup_ratio": 0.0,
            "checkpoint_every": 10,
        },
        "audit": {
            "mode": "off",
            "max_duplicate_fraction": 1,
            "max_pii_fraction": 1,
            "max_contamination_fraction": 1,
            "block_triggers": False,
        },
        "artifacts": {
            k: f"s3://out/run/{k}"
            for k in (
                "checkpoints",
                "adapter",
                "manifest",
                "progress",
                "audit_report",
                "loss_curve",
            )
        },
        "storage": {},
    }
    return TrainerConfig.model_validate(document | overrides)


def test_deepspeed_config_follows_the_spec() -> None:
    assert deepspeed_config(_config()) is None
    zero3 = deepspeed_config(_config(deepspeed={"zero_stage": 3, "offload_optimizer": True}))
    assert zero3 is not None
    assert zero3["zero_optimization"]["stage"] == 3
    assert zero3["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    assert zero3["zero_optimization"]["offload_optimizer"]["device"] == "cpu"
    assert zero3["bf16"] == {"enabled": True} and zero3["optimizer"]["params"]["torch_adam"]


def test_planned_steps_cover_every_block_for_each_epoch(monkeypatch: Any) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert planned_steps(_config(), blocks=33) == 2 * 3  # 16 blocks per step, 2 epochs
    assert (
        planned_steps(
            _config(training=_config().training.model_dump() | {"max_steps": 7}), blocks=33
        )
        == 7
    )
