"""Parameter counts of a decoder-only transformer from its Hugging Face config (pure)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class ConfigError(ValueError):
    """The model's config.json lacks what the planner needs."""


@dataclass(frozen=True)
class ModelShape:
    hidden: int
    layers: int
    intermediate: int
    vocab: int
    heads: int
    kv_heads: int
    tied_embeddings: bool

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in_features, out_features) of each adaptable linear layer, per block."""
        return {
            "q_proj": (self.hidden, self.hidden),
            "k_proj": (self.hidden, self.kv_dim),
            "v_proj": (self.hidden, self.kv_dim),
            "o_proj": (self.hidden, self.hidden),
            "gate_proj": (self.hidden, self.intermediate),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }

    def block_linear_parameters(self) -> int:
        return sum(i * o for i, o in self.linear_shapes().values())

    def embedding_parameters(self) -> int:
        return self.vocab * self.hidden * (1 if self.tied_embeddings else 2)

    def total_parameters(self) -> int:
        norms = self.layers * 2 * self.hidden + self.hidden
        return self.layers * self.block_linear_parameters() + self.embedding_parameters() + norms

    def lora_parameters(self, *, rank: int, target_modules: list[str]) -> int:
        shapes = self.linear_shapes()
        unknown = sorted(set(target_modules) - set(shapes))
        if unknown:
            raise ConfigError(
                f"lora.targetModules {unknown} are not linear layers of this model "
                f"(known: {', '.join(shapes)})"
            )
        per_block = sum(rank * (shapes[m][0] + shapes[m][1]) for m in set(target_modules))
        return self.layers * per_block


def shape_from_hf_config(config: Mapping[str, Any]) -> ModelShape:
    """Read the Llama/Mistral/Qwen-style keys of a config.json."""
    try:
        hidden = int(config["hidden_size"])
        layers = int(config["num_hidden_layers"])
        heads = int(config["num_attention_heads"])
        intermediate = int(config["intermediate_size"])
        vocab = int(config["vocab_size"])
    except KeyError as missing:
        raise ConfigError(f"model config.json has no {missing.args[0]!r}") from None
    return ModelShape(
        hidden=hidden,
        layers=layers,
        intermediate=intermediate,
        vocab=vocab,
        heads=heads,
        kv_heads=int(config.get("num_key_value_heads") or heads),
        tied_embeddings=bool(config.get("tie_word_embeddings", False)),
    )


# Llama-2-7B's config: the reference shape for the planner's documented orders.
LLAMA_2_7B: dict[str, Any] = {
    "hidden_size": 4096,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "intermediate_size": 11008,
    "vocab_size": 32000,
    "tie_word_embeddings": False,
}


# SmolLM2-135M's config: small enough for CPU tests and benchmarks.
SMOLLM2_135M: dict[str, Any] = {
    "hidden_size": 576,
    "num_hidden_layers": 30,
    "num_attention_heads": 9,
    "num_key_value_heads": 3,
    "intermediate_size": 1536,
    "vocab_size": 49152,
    "tie_word_embeddings": True,
}
