"""What the eval command writes: per-item scores of base and candidate, per suite."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from tunegate_contract.base import Document
from tunegate_contract.eval_config import GateIdentity, Metric, Role


class ScoredSuite(Document):
    name: str
    role: Role
    metric: Metric
    items: int = Field(ge=0)
    base: list[float] = []  # empty for drift: KL is itself the comparison
    candidate: list[float]
    groups: list[str] | None = None  # per item: its cluster (the suite's groupBy key)

    @model_validator(mode="after")
    def _sides_pair_up(self) -> ScoredSuite:
        if len(self.candidate) != self.items:
            raise ValueError(f"{self.items} items but {len(self.candidate)} candidate scores")
        if self.groups is not None and len(self.groups) != self.items:
            raise ValueError(f"{self.items} items but {len(self.groups)} group labels")
        if self.base and len(self.base) != len(self.candidate):
            raise ValueError(
                f"{len(self.base)} base scores but {len(self.candidate)} candidate scores"
            )
        return self


class EvalResults(Document):
    schema_: Literal["tunegate.dev/eval-results/v1"] = Field(
        default="tunegate.dev/eval-results/v1", alias="schema"
    )
    gate: GateIdentity
    base_model: str
    adapter: str
    suites: list[ScoredSuite]
    created_at: str

    def suite(self, name: str) -> ScoredSuite | None:
        return next((s for s in self.suites if s.name == name), None)
