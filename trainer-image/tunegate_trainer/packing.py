"""Tokenise examples and pack them into fixed-length blocks (no padding waste).

Prompt tokens get label -100, so the loss is only on what the model should say.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from tunegate_trainer.data import Example

IGNORE = -100


class PackedDataset(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, blocks: list[dict[str, list[int]]]) -> None:
        self.blocks = blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: torch.tensor(value) for key, value in self.blocks[index].items()}

    @property
    def tokens(self) -> int:
        return sum(sum(block["attention_mask"]) for block in self.blocks)


def pack(examples: Sequence[Example], tokenizer: Any, *, block_size: int) -> PackedDataset:
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    ids: list[int] = []
    labels: list[int] = []
    for example in examples:
        prompt = (
            tokenizer(example.prompt, add_special_tokens=False)["input_ids"]
            if example.prompt
            else []
        )
        target = tokenizer(example.target, add_special_tokens=False)["input_ids"] + [eos]
        ids += prompt + target
        labels += [IGNORE] * len(prompt) + target
    blocks = []
    for start in range(0, len(ids), block_size):
        chunk_ids = ids[start : start + block_size]
        chunk_labels = labels[start : start + block_size]
        if all(label == IGNORE for label in chunk_labels):
            continue
        padding = block_size - len(chunk_ids)
        blocks.append(
            {
                "input_ids": chunk_ids + [pad] * padding,
                "labels": chunk_labels + [IGNORE] * padding,
                "attention_mask": [1] * len(chunk_ids) + [0] * padding,
            }
        )
    return PackedDataset(blocks)
