"""The EvalGate verdict (pure): paired confidence intervals per suite, then the
overall decision. Nothing is promoted unless every suite Passes.

Each suite compares base and candidate on the same items. The interval is a
paired bootstrap percentile interval of the mean per-item difference (for
drift: of the mean per-item KL). A suite Passes only when the whole interval
clears its margin, Fails when the whole interval is on the wrong side, and is
Inconclusive otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tunegate_operator.api.evalgate import Metric, Role, Verdict

Outcome = Literal["Promote", "Hold", "Reject"]
_RANK: dict[Verdict, int] = {"Pass": 0, "Inconclusive": 1, "Fail": 2}


class GateInputError(ValueError):
    """Scores that cannot be compared (unpaired, empty, not finite)."""


@dataclass(frozen=True)
class SuiteScores:
    suite: str
    role: Role
    metric: Metric
    base: Sequence[float]  # per item; for drift, unused (KL is already a difference)
    candidate: Sequence[float]  # per item; for drift, per-item KL(base || candidate)
    threshold: float  # minImprovement, maxRegression or maxKL


@dataclass(frozen=True)
class SuiteVerdict:
    suite: str
    role: Role
    metric: Metric
    base: float | None
    candidate: float
    delta: float
    low: float
    high: float
    threshold: float
    verdict: Verdict
    items: int


@dataclass(frozen=True)
class GateVerdict:
    verdict: Verdict
    outcome: Outcome
    reason: str
    results: tuple[SuiteVerdict, ...]


def bootstrap_interval(
    values: np.ndarray, *, confidence: float, samples: int, seed: int
) -> tuple[float, float]:
    """Percentile interval of the mean of `values` (already paired differences)."""
    rng = np.random.default_rng(seed)
    n = len(values)
    means = values[rng.integers(0, n, size=(samples, n))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return float(low), float(high)


def _lower_is_better(metric: Metric) -> bool:
    return metric == "perplexity"


def judge_suite(
    scores: SuiteScores, *, confidence: float, samples: int, seed: int = 0
) -> SuiteVerdict:
    candidate = np.asarray(scores.candidate, dtype=float)
    if candidate.size == 0:
        raise GateInputError(f"suite {scores.suite}: no items were scored")
    if not np.all(np.isfinite(candidate)):
        raise GateInputError(f"suite {scores.suite}: candidate scores are not all finite")
    if scores.role == "drift":
        low, high = bootstrap_interval(candidate, confidence=confidence, samples=samples, seed=seed)
        mean_kl = float(candidate.mean())
        verdict: Verdict = (
            "Pass"
            if high <= scores.threshold
            else "Fail"
            if low > scores.threshold
            else "Inconclusive"
        )
        return SuiteVerdict(
            scores.suite,
            scores.role,
            scores.metric,
            None,
            mean_kl,
            mean_kl,
            low,
            high,
            scores.threshold,
            verdict,
            int(candidate.size),
        )
    base = np.asarray(scores.base, dtype=float)
    if base.shape != candidate.shape:
        raise GateInputError(
            f"suite {scores.suite}: base has {base.size} scores, candidate "
            f"{candidate.size}; they must be paired"
        )
    if not np.all(np.isfinite(base)):
        raise GateInputError(f"suite {scores.suite}: base scores are not all finite")
    # Orient so that positive always means "candidate is better".
    sign = -1.0 if _lower_is_better(scores.metric) else 1.0
    differences = sign * (candidate - base)
    low, high = bootstrap_interval(differences, confidence=confidence, samples=samples, seed=seed)
    improvement = float(differences.mean())
    margin = scores.threshold if scores.role == "target" else -scores.threshold
    verdict = "Pass" if low >= margin else "Fail" if high < margin else "Inconclusive"
    return SuiteVerdict(
        scores.suite,
        scores.role,
        scores.metric,
        float(base.mean()),
        float(candidate.mean()),
        improvement,
        low,
        high,
        scores.threshold,
        verdict,
        int(candidate.size),
    )


def judge_suites(
    suites: Sequence[SuiteScores],
    *,
    confidence: float,
    samples: int,
    on_inconclusive: Literal["hold", "fail"],
    seed: int = 0,
) -> GateVerdict:
    if not suites:
        raise GateInputError("no suites to judge")
    results = tuple(
        judge_suite(s, confidence=confidence, samples=samples, seed=seed + i)
        for i, s in enumerate(suites)
    )
    worst = max(results, key=lambda r: _RANK[r.verdict])
    if worst.verdict == "Pass":
        return GateVerdict("Pass", "Promote", "every suite's interval clears its margin", results)
    failing = [r for r in results if r.verdict == worst.verdict]
    names = ", ".join(f"{r.suite} ({r.role})" for r in failing)
    if worst.verdict == "Fail":
        return GateVerdict("Fail", "Reject", f"failed: {names}", results)
    outcome: Outcome = "Reject" if on_inconclusive == "fail" else "Hold"
    return GateVerdict(
        "Inconclusive", outcome, f"inconclusive at confidence {confidence}: {names}", results
    )
