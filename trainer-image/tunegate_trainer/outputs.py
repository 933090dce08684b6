"""The run's deliverables: adapter files, loss curve, and the manifest (written last)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tunegate_contract.base import now_rfc3339
from tunegate_contract.digest import tree_digest
from tunegate_contract.run_documents import Manifest
from tunegate_contract.trainer_config import TrainerConfig
from tunegate_trainer import __version__
from tunegate_trainer.storage import Store


def name_the_base_model(adapter_dir: Path, model_uri: str) -> None:
    """adapter_config.json names the base model by where it came from (an hf repo id, or
    the s3:// URI), not by this pod's cache path: vLLM's LoRA resolvers match it
    against the served model's name."""
    path = adapter_dir / "adapter_config.json"
    if not path.exists():  # full fine-tuning saves a whole model
        return
    document = json.loads(path.read_text())
    document["base_model_name_or_path"] = model_uri.removeprefix("hf://")
    path.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")


def plot_loss(history: list[dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(6, 3.5), dpi=100)
    if history:
        axes.plot([h["step"] for h in history], [h["loss"] for h in history], marker=".")
    axes.set_xlabel("step")
    axes.set_ylabel("training loss")
    axes.set_title("tunegate training loss")
    axes.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def manifest(
    config: TrainerConfig,
    *,
    adapter_files: Mapping[str, str],
    adapter_bytes: int,
    extra_files: Mapping[str, str],
    base_digest: str,
    dataset_digests: Mapping[str, str],
    trainable: int,
    total: int,
    metrics: Mapping[str, Any],
) -> Manifest:
    return Manifest.model_validate(
        {
            "run": config.run.model_dump(),
            "base_model": {
                "uri": config.model.uri,
                "revision": config.model.revision,
                "sha256": base_digest,
            },
            "datasets": dict(dataset_digests),
            "method": config.method,
            "hyperparameters": {
                "training": config.training.model_dump(),
                "lora": config.lora.model_dump() if config.lora else None,
                "deepspeed": config.deepspeed.model_dump() if config.deepspeed else None,
                "replay_ratio": config.data.replay.ratio if config.data.replay else 0.0,
            },
            "trainable_parameters": trainable,
            "total_parameters": total,
            "final_metrics": dict(metrics),
            "code_version": __version__,
            "adapter": {
                "uri": config.artifacts.adapter,
                "sha256": tree_digest(adapter_files),
                "size_bytes": adapter_bytes,
                "files": dict(adapter_files),
            },
            "files": dict(extra_files),
            "created_at": now_rfc3339(),
        }
    )


def dataset_digest(store: Store, uri: str) -> str:
    digest = hashlib.sha256()
    for obj in store.list(uri):
        digest.update(hashlib.sha256(store.read_bytes(obj)).hexdigest().encode())
    return digest.hexdigest()
