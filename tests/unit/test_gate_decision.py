"""The gate's verdict: tables of clear cases, and properties that no input breaks."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tunegate_operator.decisions.gate import (
    GateInputError,
    SuiteScores,
    judge_suite,
    judge_suites,
)


def paired(
    n: int, base_rate: float, candidate_rate: float, seed: int = 0
) -> tuple[list[float], list[float]]:
    rng = np.random.default_rng(seed)
    return (
        list((rng.random(n) < base_rate).astype(float)),
        list((rng.random(n) < candidate_rate).astype(float)),
    )


def suite(
    role: str,
    base: list[float],
    candidate: list[float],
    threshold: float,
    metric: str = "multipleChoiceAccuracy",
) -> SuiteScores:
    return SuiteScores(role, role, metric, base, candidate, threshold)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("role", "rates", "threshold", "verdict"),
    [
        ("target", (0.3, 0.9), 0.1, "Pass"),
        ("target", (0.5, 0.5), 0.2, "Fail"),
        ("target", (0.5, 0.6), 0.1, "Inconclusive"),
        ("retention", (0.7, 0.7), 0.05, "Pass"),
        ("retention", (0.8, 0.3), 0.05, "Fail"),
        ("safety", (0.9, 0.9), 0.05, "Pass"),
        ("safety", (0.95, 0.4), 0.0, "Fail"),
    ],
)
def test_suite_verdicts(
    role: str, rates: tuple[float, float], threshold: float, verdict: str
) -> None:
    base, candidate = paired(600, *rates)
    result = judge_suite(suite(role, base, candidate, threshold), confidence=0.95, samples=2000)
    assert result.verdict == verdict, result
    assert result.low <= result.delta <= result.high


def test_drift_compares_mean_kl_with_max_kl() -> None:
    rng = np.random.default_rng(1)
    low_kl = list(rng.exponential(0.05, 500))
    high_kl = list(rng.exponential(0.5, 500))
    assert (
        judge_suite(suite("drift", [], low_kl, 0.1, "kl"), confidence=0.95, samples=1000).verdict
        == "Pass"
    )
    assert (
        judge_suite(suite("drift", [], high_kl, 0.1, "kl"), confidence=0.95, samples=1000).verdict
        == "Fail"
    )


def test_perplexity_is_better_when_lower() -> None:
    base = [10.0 + i % 3 for i in range(200)]
    candidate = [b - 2 for b in base]
    result = judge_suite(
        suite("target", base, candidate, 1.0, "perplexity"), confidence=0.9, samples=500
    )
    assert result.verdict == "Pass" and result.delta == pytest.approx(2.0)


def test_overall_verdict_is_the_worst_and_inconclusive_holds_or_fails() -> None:
    good = suite("target", *paired(500, 0.2, 0.9), 0.1)
    unsure = suite("retention", *paired(40, 0.7, 0.68), 0.02)
    bad = suite("safety", *paired(500, 0.95, 0.3), 0.0)
    assert (
        judge_suites([good], confidence=0.95, samples=500, on_inconclusive="hold").outcome
        == "Promote"
    )
    held = judge_suites([good, unsure], confidence=0.95, samples=500, on_inconclusive="hold")
    assert (held.verdict, held.outcome) == ("Inconclusive", "Hold")
    assert "retention" in held.reason
    failed = judge_suites([good, unsure], confidence=0.95, samples=500, on_inconclusive="fail")
    assert failed.outcome == "Reject"
    rejected = judge_suites(
        [good, unsure, bad], confidence=0.95, samples=500, on_inconclusive="hold"
    )
    assert (rejected.verdict, rejected.outcome) == ("Fail", "Reject")


def test_unpaired_or_empty_scores_are_errors() -> None:
    with pytest.raises(GateInputError, match="must be paired"):
        judge_suite(suite("target", [1.0, 0.0], [1.0], 0.1), confidence=0.9, samples=100)
    with pytest.raises(GateInputError, match="no items"):
        judge_suite(suite("target", [], [], 0.1), confidence=0.9, samples=100)
    with pytest.raises(GateInputError, match="not all finite"):
        judge_suite(suite("target", [1.0], [float("nan")], 0.1), confidence=0.9, samples=100)


scores = st.lists(st.floats(min_value=0, max_value=1, allow_nan=False), min_size=1, max_size=60)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["target", "retention", "drift", "safety"]),
            scores,
            scores,
            st.floats(min_value=0, max_value=0.5),
        ),
        min_size=1,
        max_size=4,
    ),
    st.floats(min_value=0.51, max_value=0.99),
    st.sampled_from(["hold", "fail"]),
)
def test_nothing_is_promoted_without_every_suite_passing(
    raw: list[tuple[str, list[float], list[float], float]],
    confidence: float,
    on_inconclusive: str,
) -> None:
    suites = []
    for role, drawn_base, drawn_candidate, threshold in raw:
        n = min(len(drawn_base), len(drawn_candidate))
        metric = "kl" if role == "drift" else "refusal" if role == "safety" else "exactMatch"
        binary = metric != "kl"  # accuracy-like metrics score each item 0 or 1
        base = [float(round(v)) if binary else v for v in drawn_base[:n]]
        candidate = [float(round(v)) if binary else v for v in drawn_candidate[:n]]
        suites.append(suite(role, base, candidate, threshold or 0.01, metric))
    decision = judge_suites(
        suites, confidence=confidence, samples=200, on_inconclusive=on_inconclusive
    )  # type: ignore[arg-type]
    if decision.outcome == "Promote":
        assert decision.verdict == "Pass"
        for result in decision.results:
            assert result.verdict == "Pass"
            if result.role == "drift":
                assert result.high <= result.threshold
            elif result.role == "target":
                assert result.low >= result.threshold
            else:
                assert result.low >= -result.threshold
    else:
        assert any(r.verdict != "Pass" for r in decision.results)
        if decision.verdict == "Inconclusive":
            assert decision.outcome == ("Hold" if on_inconclusive == "hold" else "Reject")
