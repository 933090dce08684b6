"""The eval command's typed config: the contract with the operator's EvalGate."""

from __future__ import annotations

import json
import os
from typing import Literal

from pydantic import Field, ValidationError

from tunegate_trainer.config import S3_URI, ConfigError, ModelSource, Storage, Strict

EVAL_CONFIG_ENV = "TUNEGATE_EVAL_CONFIG"


class GateIdentity(Strict):
    namespace: str
    name: str
    uid: str
    generation: int = Field(ge=1)


class Suite(Strict):
    name: str
    role: Literal["target", "retention", "drift", "safety"]
    metric: Literal["multipleChoiceAccuracy", "exactMatch", "perplexity", "kl", "refusal"]
    dataset: str = Field(pattern=S3_URI)
    max_items: int | None = Field(default=None, ge=1)
    max_new_tokens: int = Field(default=64, ge=1)


class EvalConfig(Strict):
    version: Literal[1] = 1
    gate: GateIdentity
    base_model: ModelSource
    adapter: str = Field(pattern=S3_URI)
    suites: list[Suite] = Field(min_length=1)
    results: str = Field(pattern=S3_URI)
    storage: Storage
    precision: Literal["bf16", "fp16", "fp32"] = "fp32"


def load_eval_config(environ: dict[str, str] | None = None) -> EvalConfig:
    env = os.environ if environ is None else environ
    raw = env.get(EVAL_CONFIG_ENV)
    if not raw:
        raise ConfigError(f"{EVAL_CONFIG_ENV} is not set: the operator passes the gate's config")
    try:
        return EvalConfig.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{EVAL_CONFIG_ENV} is not JSON: {exc}") from None
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc'])}: {error['msg']}" for error in exc.errors()
        )
        raise ConfigError(f"invalid eval config: {problems}") from None
