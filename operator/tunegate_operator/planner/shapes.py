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


# Far beyond any published model (vocabularies reach 256k, hidden sizes 16k): a config
# past it is a typo, and the memory plan from it would mean nothing.
MAX_DIMENSION = 1 << 24


def _dimension(config: Mapping[str, Any], key: str) -> int:
    value = config.get(key)
    if value is None:
        raise ConfigError(f"model config.json has no {key!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(
            f"model config.json {key!r} must be a whole number, not {type(value).__name__}"
        )
    if not 1 <= value <= MAX_DIMENSION:
        raise ConfigError(f"model config.json {key!r} is {value}; expected 1 to {MAX_DIMENSION}")
    return value


def shape_from_hf_config(config: Mapping[str, Any]) -> ModelShape:
    """Read the Llama/Mistral/Qwen-style keys of a config.json."""
    if not isinstance(config, Mapping):
        raise ConfigError(f"model config.json holds a {type(config).__name__}, not an object")
    hidden = _dimension(config, "hidden_size")
    layers = _dimension(config, "num_hidden_layers")
    heads = _dimension(config, "num_attention_heads")
    intermediate = _dimension(config, "intermediate_size")
    vocab = _dimension(config, "vocab_size")
    kv_heads = (
        heads
        if config.get("num_key_value_heads") is None
        else _dimension(config, "num_key_value_heads")
    )
    return ModelShape(
        hidden=hidden,
        layers=layers,
        intermediate=intermediate,
        vocab=vocab,
        heads=heads,
        kv_heads=kv_heads,
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
