"""The smallest EvalGate spec the unit tests vary: one exact-match target suite."""

from __future__ import annotations

from typing import Any

from tunegate_contract.eval_results import EvalResults
from tunegate_operator.api.evalgate import EvalGateSpec


def gate_spec(**fields: Any) -> EvalGateSpec:
    """A FineTuneJob candidate judged on one target suite; `fields` add or replace
    top-level spec fields (promotion, reevaluate, onInconclusive, ...)."""
    body: dict[str, Any] = {
        "candidate": {"fineTuneJobRef": {"name": "x"}},
        "suites": [
            {
                "name": "t",
                "role": "target",
                "dataset": "s3://data/t.jsonl",
                "metric": "exactMatch",
                "minImprovement": 0.1,
            }
        ],
        "bootstrapSamples": 200,
    }
    return EvalGateSpec.model_validate(body | fields)


# 40 items, 6 improved and none regressed: +0.15 against a minImprovement of 0.1, too
# few items to tell (Inconclusive).
UNSURE_SCORES = ([0.0, 1.0] * 20, [1.0, 1.0] * 6 + [0.0, 1.0] * 14)


def eval_results(base: list[float], candidate: list[float], *, suite: str = "t") -> EvalResults:
    """What the eval command writes for one suite (the spec decides its role and metric)."""
    return EvalResults.model_validate(
        {
            "gate": {"namespace": "ml", "name": "gate", "uid": "uid", "generation": 1},
            "base_model": "s3://models/base",
            "adapter": "s3://runs/x/adapter",
            "suites": [
                {
                    "name": suite,
                    "role": "target",
                    "metric": "exactMatch",
                    "items": len(candidate),
                    "base": base,
                    "candidate": candidate,
                }
            ],
            "created_at": "2026-01-01T00:00:00Z",
        }
    )
