"""Tokenise examples and pack them into fixed-length blocks (little padding waste).

Prompt tokens get label -100, so the loss is only on what the model should say.

`isolated` (the trainer's mode): whole examples are placed into blocks (best fit,
longest first), and each block carries position ids that restart at every example
and no attention mask. transformers then attends within each example only (a
block-diagonal causal mask on SDPA and eager, variable-length kernels with
FlashAttention), so a packed example is computed exactly as if it ran alone.

`concatenated` (kept for the benchmark's comparison): the token stream is cut into
blocks, and each example attends to the ones before it in its block.
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Any, Literal

import torch

from tunegate_trainer.data import Example

IGNORE = -100
Packing = Literal["isolated", "concatenated"]


class PackedDataset(torch.utils.data.Dataset[dict[str, torch.Tensor]]):
    def __init__(self, blocks: list[dict[str, list[int]]], tokens: int) -> None:
        self.blocks = blocks
        self.tokens = tokens  # real (not padding) tokens over all blocks

    def __len__(self) -> int:
        return len(self.blocks)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {key: torch.tensor(value) for key, value in self.blocks[index].items()}


def _tokenised(example: Example, tokenizer: Any) -> tuple[list[int], list[int]]:
    prompt = (
        tokenizer(example.prompt, add_special_tokens=False)["input_ids"] if example.prompt else []
    )
    target = tokenizer(example.target, add_special_tokens=False)["input_ids"]
    target = [*target, tokenizer.eos_token_id]
    return prompt + target, [IGNORE] * len(prompt) + target


def _pad_id(tokenizer: Any) -> int:
    pad = tokenizer.pad_token_id
    return int(pad if pad is not None else tokenizer.eos_token_id)


def pack(
    examples: Sequence[Example],
    tokenizer: Any,
    *,
    block_size: int,
    packing: Packing = "isolated",
) -> PackedDataset:
    tokenised = [_tokenised(example, tokenizer) for example in examples]
    if packing == "concatenated":
        return _concatenated(tokenised, block_size, _pad_id(tokenizer))
    return _isolated(tokenised, block_size, _pad_id(tokenizer))


def _isolated(
    tokenised: list[tuple[list[int], list[int]]], block_size: int, pad: int
) -> PackedDataset:
    # An example longer than a block keeps its beginning (its prompt and the start of
    # its answer); one with nothing left to learn is dropped.
    pieces = [
        (ids[:block_size], labels[:block_size])
        for ids, labels in tokenised
        if any(label != IGNORE for label in labels[:block_size])
    ]
    order = sorted(range(len(pieces)), key=lambda i: -len(pieces[i][0]))
    contents: list[list[int]] = []  # example indices per block
    free: list[tuple[int, int]] = []  # (space left, block), sorted: best fit by bisect
    for index in order:
        size = len(pieces[index][0])
        at = bisect.bisect_left(free, (size, -1))
        if at < len(free):
            space, block = free.pop(at)
        else:
            space, block = block_size, len(contents)
            contents.append([])
        contents[block].append(index)
        if space - size:
            bisect.insort(free, (space - size, block))
    blocks = []
    for members in contents:
        ids: list[int] = []
        labels: list[int] = []
        positions: list[int] = []
        for index in sorted(members):  # dataset order within a block
            ids += pieces[index][0]
            labels += pieces[index][1]
            positions += range(len(pieces[index][0]))
        padding = block_size - len(ids)
        blocks.append(
            {
                "input_ids": ids + [pad] * padding,
                "labels": labels + [IGNORE] * padding,
                "position_ids": positions + list(range(padding)),
            }
        )
    return PackedDataset(blocks, sum(len(ids) for ids, _ in pieces))


def _concatenated(
    tokenised: list[tuple[list[int], list[int]]], block_size: int, pad: int
) -> PackedDataset:
    ids = [token for example_ids, _ in tokenised for token in example_ids]
    labels = [label for _, example_labels in tokenised for label in example_labels]
    blocks = []
    tokens = 0
    for start in range(0, len(ids), block_size):
        chunk_ids = ids[start : start + block_size]
        chunk_labels = labels[start : start + block_size]
        if all(label == IGNORE for label in chunk_labels):
            continue
        padding = block_size - len(chunk_ids)
        tokens += len(chunk_ids)
        blocks.append(
            {
                "input_ids": chunk_ids + [pad] * padding,
                "labels": chunk_labels + [IGNORE] * padding,
                "attention_mask": [1] * len(chunk_ids) + [0] * padding,
            }
        )
    return PackedDataset(blocks, tokens)
