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


@pytest.mark.parametrize("items", [1, 5])
def test_a_suite_of_ties_measures_nothing_and_cannot_pass(items: int) -> None:
    ties = SuiteScores("r", "retention", "exactMatch", [1.0] * items, [1.0] * items, 0.0, 1)
    result = judge_suite(ties, confidence=0.95, samples=200)
    assert result.verdict == "Inconclusive"
    assert result.low < 0 < result.high


def test_a_suite_below_min_items_is_refused_naming_it() -> None:
    small = SuiteScores("legal-qa", "target", "exactMatch", [0.0] * 12, [1.0] * 12, 0.1, 30)
    with pytest.raises(GateInputError, match=r"legal-qa: 12 items .* minItems 30"):
        judge_suite(small, confidence=0.95, samples=200)


def test_binary_metrics_take_only_zero_or_one() -> None:
    odd = SuiteScores("t", "target", "exactMatch", [0.0, 1.0], [0.5, 1.0], 0.1)
    with pytest.raises(GateInputError, match="must each be 0 or 1"):
        judge_suite(odd, confidence=0.95, samples=200)


def test_an_inconclusive_suite_says_how_many_items_would_decide() -> None:
    base = [0.0, 1.0] * 20
    candidate = [1.0, 1.0] * 6 + [0.0, 1.0] * 14  # +0.15 against a margin of 0.1
    unsure = judge_suite(suite("target", base, candidate, 0.1), confidence=0.95, samples=200)
    assert unsure.verdict == "Inconclusive" and unsure.items_needed is not None
    verdict = judge_suites(
        [suite("target", base, candidate, 0.1)],
        confidence=0.95,
        samples=200,
        on_inconclusive="hold",
    )
    assert f"about {unsure.items_needed} items would decide" in verdict.reason
    # The same pattern, repeated to that many items, decides.
    copies = -(-unsure.items_needed // len(base))
    more = suite("target", base * copies, candidate * copies, 0.1)
    assert judge_suite(more, confidence=0.95, samples=200).verdict == "Pass"


def test_clustered_items_count_as_their_clusters() -> None:
    """Twelve documents, ten items each, every item of a document scored alike: as
    evidence that is twelve items, too few to clear the margin."""
    pattern = [1.0] * 9 + [0.0] * 3  # per document: improved, or unchanged
    base = [0.0] * 120
    candidate = [v for v in pattern for _ in range(10)]
    groups = [f"doc-{d}" for d in range(12) for _ in range(10)]
    independent = SuiteScores("t", "target", "exactMatch", base, candidate, 0.5)
    clustered = SuiteScores("t", "target", "exactMatch", base, candidate, 0.5, groups=groups)
    assert judge_suite(independent, confidence=0.95, samples=200).verdict == "Pass"
    result = judge_suite(clustered, confidence=0.95, samples=200)
    assert (result.verdict, result.clusters) == ("Inconclusive", 12)


def test_the_verdict_table_keeps_long_suite_names_apart() -> None:
    from tunegate_operator.kubectl_plugin import verdict_table

    row = {
        "role": "retention",
        "items": 60,
        "base": 0.9,
        "candidate": 0.88,
        "delta": -0.02,
        "interval": {"low": -0.05, "high": 0.01},
        "minimumDetectableDifference": 0.08,
        "verdict": "Inconclusive",
    }
    status = {"results": [row | {"suite": "general-knowledge"}, row | {"suite": "t"}]}
    header, first, second, _ = verdict_table(status).splitlines()
    assert "general-knowledge  retention" in first
    for column in ("ROLE", "INTERVAL", "VERDICT"):
        at = header.index(column)
        assert first[at - 1] == " " and second[at - 1] == " " and first[at] != " "
