"""The eval command's config: the operator renders it from an EvalGate (JSON, in env var
TUNEGATE_EVAL_CONFIG) and the eval command refuses anything else."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

from pydantic import Field

from tunegate_contract.base import S3_URI, Strict, load_json_env
from tunegate_contract.trainer_config import ModelSource, Storage

EVAL_CONFIG_ENV = "TUNEGATE_EVAL_CONFIG"
Role = Literal["target", "retention", "drift", "safety"]
Metric = Literal["multipleChoiceAccuracy", "exactMatch", "perplexity", "kl", "refusal"]


class GateIdentity(Strict):
    namespace: str
    name: str
    uid: str
    generation: int = Field(ge=1)


class Suite(Strict):
    name: str
    role: Role
    metric: Metric
    dataset: str = Field(pattern=S3_URI)
    max_items: int | None = Field(default=None, ge=1)
    max_new_tokens: int = Field(default=64, ge=1)
    group_by: str | None = None  # item key naming its cluster: written as `groups`


class EvalConfig(Strict):
    version: Literal[1] = 1
    gate: GateIdentity
    base_model: ModelSource
    adapter: str = Field(pattern=S3_URI)
    suites: list[Suite] = Field(min_length=1)
    results: str = Field(pattern=S3_URI)
    storage: Storage
    precision: Literal["bf16", "fp16", "fp32"] = "fp32"


def load_eval_config(environ: Mapping[str, str] | None = None) -> EvalConfig:
    return load_json_env(EvalConfig, EVAL_CONFIG_ENV, environ, purpose="the gate's eval config")
