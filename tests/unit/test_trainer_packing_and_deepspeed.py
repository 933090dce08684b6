"""Packing (labels, block shapes) and the DeepSpeed config the trainer derives."""

from __future__ import annotations

from typing import Any

from tunegate_contract.trainer_config import TrainerConfig
from tunegate_trainer.data import Example
from tunegate_trainer.packing import IGNORE, pack
from tunegate_trainer.train import deepspeed_config, planned_steps


class CharTokenizer:
    """One token per character; id 0 is end-of-sequence."""

    eos_token_id = 0
    pad_token_id = None

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        return {"input_ids": [ord(c) for c in text]}


def test_prompt_tokens_are_not_learned_and_blocks_are_full_length() -> None:
    examples = [Example("ab", "cd", "train"), Example("", "efg", "train")]
    packed = pack(examples, CharTokenizer(), block_size=4)
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


def test_blocks_with_nothing_to_learn_are_dropped() -> None:
    packed = pack([Example("long prompt!", "x", "train")], CharTokenizer(), block_size=4)
    assert all((b["labels"] != IGNORE).any() for b in (packed[i] for i in range(len(packed))))


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
