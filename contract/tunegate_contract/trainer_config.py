"""The trainer's config: the operator renders it from a FineTuneJob (JSON, in env var
TUNEGATE_TRAINER_CONFIG) and the trainer refuses anything else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from tunegate_contract.base import S3_URI, Strict, load_json_env

TRAINER_CONFIG_ENV = "TUNEGATE_TRAINER_CONFIG"


class RunIdentity(Strict):
    namespace: str
    name: str
    uid: str
    attempt: int = Field(ge=1)


class ModelSource(Strict):
    uri: str
    revision: str | None = None


class FieldNames(Strict):
    """Which JSON keys hold which part of a row. The operator always renders them; the
    defaults serve local runs and benchmarks."""

    messages: str = "messages"
    prompt: str = "prompt"
    input: str = "input"
    response: str = "response"
    text: str = "text"


class Replay(Strict):
    dataset: str = Field(pattern=S3_URI)
    ratio: float = Field(ge=0, lt=1)


class Data(Strict):
    train: str = Field(pattern=S3_URI)
    validation: str | None = Field(default=None, pattern=S3_URI)
    validation_split: float = Field(ge=0, le=0.5)
    format: Literal["chat", "instruction", "text"]
    fields: FieldNames = FieldNames()
    on_malformed_row: Literal["fail", "skip"]
    replay: Replay | None = None


class Lora(Strict):
    rank: int = Field(ge=1)
    alpha: float = Field(gt=0)
    dropout: float = Field(ge=0, lt=1)
    target_modules: list[str] = Field(min_length=1)


class Training(Strict):
    epochs: int = Field(ge=1)
    max_steps: int | None = Field(default=None, ge=1)
    learning_rate: float = Field(gt=0)
    batch_size: int = Field(ge=1)
    gradient_accumulation: int = Field(ge=1)
    max_seq_length: int = Field(ge=16)
    seed: int = Field(ge=0)
    precision: Literal["bf16", "fp16", "fp32"]
    gradient_checkpointing: bool
    warmup_ratio: float = Field(ge=0, lt=1)
    checkpoint_every: int = Field(ge=1)
    # isolated: each packed example attends only to itself (the operator's choice);
    # concatenated: the older packing, kept for the benchmark's comparison.
    packing: Literal["isolated", "concatenated"] = "isolated"


class DeepSpeed(Strict):
    zero_stage: int = Field(ge=0, le=3)
    offload_optimizer: bool


class Distribution(Strict):
    """Limits on the data's shape (spec.audit.distribution)."""

    max_response_opening_share: float = Field(ge=0, le=1)
    max_label_imbalance: float = Field(ge=1)
    max_truncated_fraction: float = Field(ge=0, le=1)
    max_other_language_fraction: float = Field(ge=0, le=1)
    max_replay_repeats: float = Field(ge=1)


class Audit(Strict):
    mode: Literal["enforce", "warn", "off"]
    max_duplicate_fraction: float = Field(ge=0, le=1)
    max_pii_fraction: float = Field(ge=0, le=1)
    contamination_sets: list[str] = []
    max_contamination_fraction: float = Field(ge=0, le=1)
    block_triggers: bool
    # None: the shape is measured and reported, never judged (the operator always sets it)
    distribution: Distribution | None = None


class Artifacts(Strict):
    """Where each output goes; the operator owns this layout."""

    checkpoints: str = Field(pattern=S3_URI)
    adapter: str = Field(pattern=S3_URI)
    manifest: str = Field(pattern=S3_URI)
    progress: str = Field(pattern=S3_URI)
    audit_report: str = Field(pattern=S3_URI)
    loss_curve: str = Field(pattern=S3_URI)


class Storage(Strict):
    """S3 endpoint; credentials come only from AWS_* env vars (secret references)."""

    endpoint: str | None = None
    region: str = "us-east-1"


class TrainerConfig(Strict):
    version: Literal[1] = 1
    run: RunIdentity
    model: ModelSource
    data: Data
    method: Literal["lora", "qlora", "full"]
    lora: Lora | None = None
    training: Training
    deepspeed: DeepSpeed | None = None
    audit: Audit
    artifacts: Artifacts
    storage: Storage
    # How often progress.json is written (the operator's status is at most this stale).
    progress_interval_seconds: float = Field(default=5.0, gt=0)


def load_trainer_config(environ: Mapping[str, str] | None = None) -> TrainerConfig:
    return load_json_env(TrainerConfig, TRAINER_CONFIG_ENV, environ, purpose="the run's config")
