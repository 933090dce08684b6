"""The EvalGate verdict (pure): a confidence interval per suite, then the overall
decision. Nothing is promoted unless every suite Passes.

Each suite compares base and candidate on the same items (drift: the per-item KL
itself). A suite Passes only when its whole interval clears the margin, Fails when
the whole interval is on the wrong side, and is Inconclusive otherwise; how each
interval is built, and why, is in gate_statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tunegate_contract.eval_config import Metric, Role
from tunegate_operator.api.evalgate import Verdict
from tunegate_operator.decisions.gate_statistics import (
    BINARY_METHOD,
    CONTINUOUS_METHOD,
    Intervals,
    design_effect,
    items_to_detect,
    minimum_detectable_difference,
    one_sided_z,
    paired_binary_intervals,
    studentized_bootstrap_intervals,
)

Outcome = Literal["Promote", "Hold", "Reject"]
_RANK: dict[Verdict, int] = {"Pass": 0, "Inconclusive": 1, "Fail": 2}
BINARY_METRICS: frozenset[Metric] = frozenset({"multipleChoiceAccuracy", "exactMatch", "refusal"})


class GateInputError(ValueError):
    """Scores that cannot be compared (unpaired, empty, not finite, too few)."""


@dataclass(frozen=True)
class SuiteScores:
    suite: str
    role: Role
    metric: Metric
    base: Sequence[float]  # per item; for drift, unused (KL is already a difference)
    candidate: Sequence[float]  # per item; for drift, per-item KL(base || candidate)
    threshold: float  # minImprovement, maxRegression or maxKL
    min_items: int = 1  # fewer items are refused: they cannot stand for the task
    groups: Sequence[str] | None = None  # per item: its cluster (spec groupBy)


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
    method: str = ""
    mdd: float = 0.0  # minimum detectable difference: a true distance decided 80% of the time
    clusters: int | None = None  # groups the items fell into (groupBy)
    items_needed: int | None = None  # Inconclusive: items to resolve the observed distance

    @property
    def margin(self) -> float:
        return margin_of(self.role, self.threshold)


def margin_of(role: Role, threshold: float) -> float:
    """Where the interval is compared: +minImprovement, -maxRegression, maxKL."""
    return -threshold if role in ("retention", "safety") else threshold


@dataclass(frozen=True)
class GateVerdict:
    verdict: Verdict
    outcome: Outcome
    reason: str
    results: tuple[SuiteVerdict, ...]


def _checked(scores: SuiteScores) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """candidate, base (None for drift) and groups as arrays, or GateInputError."""
    candidate = np.asarray(scores.candidate, dtype=float)
    name = f"suite {scores.suite}"
    if candidate.size == 0:
        raise GateInputError(f"{name}: no items were scored")
    if candidate.size < scores.min_items:
        raise GateInputError(
            f"{name}: {candidate.size} items scored, fewer than its minItems "
            f"{scores.min_items}; add items or lower minItems"
        )
    if not np.all(np.isfinite(candidate)):
        raise GateInputError(f"{name}: candidate scores are not all finite")
    groups = None if scores.groups is None else np.asarray(scores.groups, dtype=str)
    if groups is not None and groups.shape != candidate.shape:
        raise GateInputError(f"{name}: {groups.size} group labels for {candidate.size} items")
    if scores.role == "drift":
        return candidate, None, groups
    base = np.asarray(scores.base, dtype=float)
    if base.shape != candidate.shape:
        raise GateInputError(
            f"{name}: base has {base.size} scores, candidate {candidate.size}; they must be paired"
        )
    if not np.all(np.isfinite(base)):
        raise GateInputError(f"{name}: base scores are not all finite")
    if scores.metric in BINARY_METRICS and not np.all(np.isin(np.r_[base, candidate], (0, 1))):
        raise GateInputError(f"{name}: {scores.metric} scores must each be 0 or 1")
    return candidate, base, groups


def _intervals(
    scores: SuiteScores,
    candidate: np.ndarray,
    base: np.ndarray | None,
    groups: np.ndarray | None,
    *,
    confidence: float,
    samples: int,
    seed: int,
) -> tuple[Intervals, str]:
    """The interval of the oriented difference (positive: candidate better), or of
    the mean KL for drift, and the method's name."""
    if base is None:
        found = studentized_bootstrap_intervals(
            candidate, confidence=confidence, samples=samples, seed=seed, groups=groups
        )
        return found, CONTINUOUS_METHOD
    sign = -1.0 if scores.metric == "perplexity" else 1.0
    differences = sign * (candidate - base)
    if scores.metric not in BINARY_METRICS:
        found = studentized_bootstrap_intervals(
            differences, confidence=confidence, samples=samples, seed=seed, groups=groups
        )
        return found, CONTINUOUS_METHOD
    found = paired_binary_intervals(
        np.array([np.sum(differences > 0)]),
        np.array([np.sum(differences < 0)]),
        np.array([differences.size]),
        confidence=confidence,
        design_effect=design_effect(differences, groups),
    )
    return found, BINARY_METHOD


def verdict_of(low: float, high: float, margin: float, *, drift: bool) -> Verdict:
    """The single definition: Pass only when the whole interval is on the good side."""
    if drift:  # lower KL is better: the interval must stay under maxKL
        return "Pass" if high <= margin else "Fail" if low > margin else "Inconclusive"
    return "Pass" if low >= margin else "Fail" if high < margin else "Inconclusive"


def judge_suite(
    scores: SuiteScores, *, confidence: float, samples: int, seed: int = 0
) -> SuiteVerdict:
    candidate, base, groups = _checked(scores)
    found, method = _intervals(
        scores, candidate, base, groups, confidence=confidence, samples=samples, seed=seed
    )
    estimate, low, high = float(found.estimate[0]), float(found.low[0]), float(found.high[0])
    drift = scores.role == "drift"
    margin = margin_of(scores.role, scores.threshold)
    verdict = verdict_of(low, high, margin, drift=drift)
    # The interval's own half-width stands for the standard error: defined even for a
    # suite of ties, whose sample variance is zero.
    error = (high - low) / (2 * one_sided_z(confidence))
    mdd = float(minimum_detectable_difference(np.array([error]), confidence)[0])
    needed = None
    if verdict == "Inconclusive":
        needed = items_to_detect(candidate.size, mdd, abs(estimate - margin))
    return SuiteVerdict(
        scores.suite,
        scores.role,
        scores.metric,
        None if base is None else float(base.mean()),
        float(candidate.mean()),
        estimate,
        low,
        high,
        scores.threshold,
        verdict,
        int(candidate.size),
        method=method,
        mdd=mdd,
        clusters=None if groups is None else len(np.unique(groups)),
        items_needed=needed,
    )


def _unresolved(result: SuiteVerdict) -> str:
    """Why an Inconclusive suite could not decide, and what would."""
    text = (
        f"{result.suite} ({result.role}): {result.items} items resolve differences of "
        f"{result.mdd:.3g} from the margin"
    )
    if result.items_needed is None:
        return text + "; its estimate sits on the margin"
    distance = abs(result.delta - result.margin)
    needed = result.items_needed
    return text + f"; its estimate is {distance:.3g} from it: about {needed} items would decide"


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
    details = "; ".join(_unresolved(r) for r in failing)
    return GateVerdict(
        "Inconclusive", outcome, f"inconclusive at confidence {confidence}: {details}", results
    )
