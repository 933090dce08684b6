"""The trainer config a FineTuneJob implies (pure), rendered through the contract's
model: what the operator renders is what the trainer accepts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunegate_contract.layout import RunLayout
from tunegate_contract.trainer_config import TrainerConfig
from tunegate_operator.api.finetunejob import AuditSpec, FieldMapping, FineTuneJobSpec
from tunegate_operator.api.finetunejob import LoraSpec as ApiLora
from tunegate_operator.settings import Settings


@dataclass(frozen=True)
class RunRef:
    namespace: str
    name: str
    uid: str


def credentials_secret(spec: FineTuneJobSpec, settings: Settings) -> str | None:
    return spec.storage.credentials_secret or settings.credentials_secret


def trainer_config(
    spec: FineTuneJobSpec, *, run: RunRef, attempt: int, settings: Settings
) -> TrainerConfig:
    layout = RunLayout.under(spec.output.uri)
    return TrainerConfig.model_validate(
        {
            "version": 1,
            "run": {
                "namespace": run.namespace,
                "name": run.name,
                "uid": run.uid,
                "attempt": attempt,
            },
            "model": {"uri": spec.model.uri, "revision": spec.model.revision},
            "data": _data_section(spec),
            "method": spec.method,
            "lora": _lora_section(spec),
            "training": _training_section(spec),
            "deepspeed": (
                {
                    "zero_stage": spec.deepspeed.zero_stage,
                    "offload_optimizer": spec.deepspeed.offload_optimizer,
                }
                if spec.deepspeed
                else None
            ),
            "audit": audit_section(spec.audit),
            "artifacts": {
                "checkpoints": layout.checkpoints,
                "adapter": layout.adapter,
                "manifest": layout.manifest,
                "progress": layout.progress,
                "audit_report": layout.audit_report,
                "loss_curve": layout.loss_curve,
            },
            "storage": settings.storage_document(spec.storage),
            "progress_interval_seconds": settings.progress_interval_seconds,
        }
    )


def audit_section(audit: AuditSpec) -> dict[str, Any]:
    """spec.audit as the audit pod reads it (and `kubectl tunegate audit` too)."""
    return {
        "mode": audit.mode,
        "max_duplicate_fraction": audit.max_duplicate_fraction,
        "max_pii_fraction": audit.max_pii_fraction,
        "contamination_sets": list(audit.contamination_sets),
        "max_contamination_fraction": audit.max_contamination_fraction,
        "block_triggers": audit.block_triggers,
        "distribution": {
            "max_response_opening_share": audit.distribution.max_response_opening_share,
            "max_label_imbalance": audit.distribution.max_label_imbalance,
            "max_truncated_fraction": audit.distribution.max_truncated_fraction,
            "max_other_language_fraction": audit.distribution.max_other_language_fraction,
            "max_replay_repeats": audit.distribution.max_replay_repeats,
        },
    }


def _data_section(spec: FineTuneJobSpec) -> dict[str, Any]:
    dataset = spec.dataset
    replay = spec.replay
    return {
        "train": dataset.train,
        "validation": dataset.validation,
        "validation_split": dataset.validation_split,
        "format": dataset.format,
        "on_malformed_row": dataset.on_malformed_row,
        "replay": {"dataset": replay.dataset, "ratio": replay.ratio} if replay else None,
        # Always rendered, so the trainer never falls back on defaults of its own.
        "fields": (dataset.fields or FieldMapping()).model_dump(),
    }


def _lora_section(spec: FineTuneJobSpec) -> dict[str, Any] | None:
    lora = spec.lora or (ApiLora() if spec.method in ("lora", "qlora") else None)
    if lora is None:
        return None
    return {
        "rank": lora.rank,
        "alpha": lora.alpha,
        "dropout": lora.dropout,
        "target_modules": list(lora.target_modules),
    }


def _training_section(spec: FineTuneJobSpec) -> dict[str, Any]:
    t = spec.training
    return {
        "epochs": t.epochs,
        "max_steps": t.max_steps,
        "learning_rate": t.learning_rate,
        "batch_size": t.batch_size,
        "gradient_accumulation": t.gradient_accumulation,
        "max_seq_length": t.max_seq_length,
        "seed": t.seed,
        "precision": t.precision,
        "gradient_checkpointing": t.gradient_checkpointing,
        "warmup_ratio": t.warmup_ratio,
        "checkpoint_every": t.checkpoint_every,
        "packing": "isolated",
    }
