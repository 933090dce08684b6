"""Loading the base model for lora, qlora or full fine-tuning."""

from __future__ import annotations

import fcntl
import hashlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, cast

import torch

from tunegate_contract.trainer_config import TrainerConfig
from tunegate_trainer.storage import StorageError, Store, sha256_file

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def without_kv_cache(model: Any) -> Any:
    """Training needs no KV cache, and with one transformers ignores packed position
    ids: examples in a block would attend to each other (packing.py)."""
    model.config.use_cache = False
    return model


def cache_root() -> Path:
    return Path(os.environ.get("TUNEGATE_CACHE", Path.home() / ".cache" / "tunegate"))


COMPLETE = ".complete"


@contextmanager
def _exclusive(lock_file: Path) -> Iterator[None]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes (or we die)
        yield


def fetch_once(
    target: Path,
    download: Callable[[Path], object],
    *,
    source: str,
    lock_file: Path | None = None,
) -> Path:
    """Fill `target` once per cache: the first process (of every local rank) to take the
    lock downloads, the others wait on it and find the copy complete. A download cut off
    midway has no marker, so the next holder starts it again."""
    if (target / COMPLETE).exists():
        return target
    with _exclusive(lock_file or target.with_name(target.name + ".lock")):
        if not (target / COMPLETE).exists():
            download(target)
            (target / COMPLETE).write_text(source)
    return target


HF_SCHEME = "hf://"


class ModelSourceError(StorageError):
    """The base model cannot be fetched; the message names the URI and revision."""


def _from_hub(repo_id: str, revision: str | None, target: Path) -> None:
    """A snapshot of a Hub repository at `revision` (HF_TOKEN, HF_ENDPOINT apply)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        HfHubHTTPError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        snapshot_download(
            repo_id,
            revision=revision,
            local_dir=target,
            token=os.environ.get("HF_TOKEN") or None,
        )
    except (RepositoryNotFoundError, RevisionNotFoundError, HfHubHTTPError, OSError) as exc:
        where = f"{HF_SCHEME}{repo_id}" + (f" (revision {revision})" if revision else "")
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelSourceError(
            f"model {where} cannot be downloaded from the Hub: {first}. A private or gated "
            "model needs spec.model.tokenSecret; pods need to reach the Hub (HF_ENDPOINT "
            "for a mirror)"
        ) from None


def fetch_model(store: Store, uri: str, revision: str | None = None) -> Path:
    """A local copy of the base model, downloaded once per cache: an s3:// checkpoint
    directory, or an hf://org/name repository at `revision` (default: main)."""
    if uri.startswith(HF_SCHEME):
        repo_id = uri.removeprefix(HF_SCHEME).strip("/")
        key = f"{uri}@{revision or 'main'}"
        target = cache_root() / "models" / hashlib.sha256(key.encode()).hexdigest()[:16]
        return fetch_once(target, lambda t: _from_hub(repo_id, revision, t), source=key)
    if not uri.startswith("s3://"):
        return Path(uri)
    target = cache_root() / "models" / hashlib.sha256(uri.encode()).hexdigest()[:16]
    return fetch_once(target, lambda t: store.download_tree(uri, t), source=uri)


def model_digest(path: Path) -> str:
    """One digest over the checkpoint's files (names and contents); the Hub client's
    own bookkeeping (.cache/) and the download marker are not the model."""
    digest = hashlib.sha256()
    files = (
        p
        for p in path.rglob("*")
        if p.is_file() and p.name != COMPLETE and p.relative_to(path).parts[0] != ".cache"
    )
    for file in sorted(files):
        digest.update(file.relative_to(path).as_posix().encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def load_tokenizer(path: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(path))
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(config: TrainerConfig, path: Path) -> Any:
    """The model ready to train: adapters attached for lora/qlora."""
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    dtype = DTYPES[config.training.precision]
    kwargs: dict[str, Any] = {"dtype": dtype}
    if config.method == "qlora":
        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    model = without_kv_cache(AutoModelForCausalLM.from_pretrained(str(path), **kwargs))
    if config.training.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if config.method == "full":
        return model
    if config.method == "qlora":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.training.gradient_checkpointing
        )
    assert config.lora is not None
    lora = LoraConfig(
        r=config.lora.rank,
        lora_alpha=cast(Any, config.lora.alpha),
        lora_dropout=config.lora.dropout,
        target_modules=list(config.lora.target_modules),
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, lora)


def count_parameters(model: Any) -> tuple[int, int]:
    trainable = total = 0
    for parameter in model.parameters():
        # ZeRO-3 partitions parameters; ds_numel is the real size.
        size = int(getattr(parameter, "ds_numel", parameter.numel()))
        total += size
        if parameter.requires_grad:
            trainable += size
    return trainable, total
