"""The smallest EvalGate spec the unit tests vary: one exact-match target suite."""

from __future__ import annotations

from typing import Any

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
