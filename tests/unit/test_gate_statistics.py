"""The gate's promise, measured: when the true difference sits exactly on the margin, a
suite Passes at most (1 - confidence)/2 of the time, plus Monte Carlo error.

Seeded simulations through the intervals the gate itself uses (batched), for every
metric type, suite sizes 10 to 300 and margins 0.02 and 0.05. The power tables printed
here are the ones in the README.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from tunegate_operator.api.evalgate import SuiteSpec
from tunegate_operator.decisions.gate import verdict_of
from tunegate_operator.decisions.gate_statistics import (
    design_effect,
    paired_binary_intervals,
    studentized_bootstrap_intervals,
)

CONFIDENCE = 0.95
ALLOWED = (1 - CONFIDENCE) / 2
SIZES = (10, 20, 40, 100, 300)
MARGINS = (0.02, 0.05)
# Smaller suites are refused before any interval is computed.
DEFAULT_MIN_ITEMS: int = SuiteSpec.model_fields["min_items"].default


def allowed_with_monte_carlo(reps: int) -> float:
    """The promised rate plus three Monte Carlo standard errors of its estimate."""
    return ALLOWED + 3 * np.sqrt(ALLOWED * (1 - ALLOWED) / reps)


def binary_pass_rate(
    n: int, true_difference: float, discordant: float, margin: float, reps: int, seed: int
) -> float:
    """P(Pass) of a binary suite whose candidate differs by `true_difference`, with a
    `discordant` share of items scored differently by the two models."""
    improved = (discordant + true_difference) / 2
    regressed = (discordant - true_difference) / 2
    cells = np.random.default_rng(seed).multinomial(
        n, [improved, regressed, 1 - improved - regressed], size=reps
    )
    found = paired_binary_intervals(
        cells[:, 0], cells[:, 1], np.full(reps, n), confidence=CONFIDENCE
    )
    verdicts = [
        verdict_of(lo, hi, margin, drift=False)
        for lo, hi in zip(found.low, found.high, strict=True)
    ]
    return verdicts.count("Pass") / reps


@pytest.mark.parametrize("discordant", [0.1, 0.3, 0.6])
@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("n", SIZES)
def test_binary_suites_keep_the_promise_at_the_margin(
    n: int, margin: float, discordant: float
) -> None:
    reps = 20_000
    # retention and safety: a regression of exactly maxRegression
    regression = binary_pass_rate(n, -margin, discordant, -margin, reps, seed=n)
    # target: an improvement of exactly minImprovement
    improvement = binary_pass_rate(n, margin, discordant, margin, reps, seed=n + 1)
    assert max(regression, improvement) <= allowed_with_monte_carlo(reps), (
        regression,
        improvement,
    )


def _skewed(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Mean 0, variance 1, skewness 1.4 (gamma, shape 2): per-item scores with a tail."""
    return (rng.gamma(2.0, 1.0, size=shape) - 2.0) / np.sqrt(2.0)


# Per metric: draw (reps, n) scores whose true mean sits exactly on the margin, and
# say which way is good. Perplexity differences (base - candidate, oriented) have
# their tail on the regression side, where a Pass would be wrong; per-item KL is
# non-negative with its tail up, where a Pass would be wrong.
ContinuousCase = Callable[[np.random.Generator, int, int, float], np.ndarray]
CONTINUOUS: dict[str, tuple[ContinuousCase, bool]] = {
    "perplexity": (lambda rng, reps, n, m: -m - 3 * m * _skewed(rng, (reps, n)), False),
    "perplexity, symmetric": (
        lambda rng, reps, n, m: -m + 3 * m * rng.standard_normal((reps, n)),
        False,
    ),
    "kl": (lambda rng, reps, n, m: m * rng.gamma(2.0, 0.5, size=(reps, n)), True),
}


def continuous_pass_rate(metric: str, n: int, margin: float, reps: int, seed: int) -> float:
    draw, drift = CONTINUOUS[metric]
    values = draw(np.random.default_rng(seed), reps, n, margin)
    found = studentized_bootstrap_intervals(values, confidence=CONFIDENCE, samples=400, seed=seed)
    edge = margin if drift else -margin
    verdicts = [
        verdict_of(lo, hi, edge, drift=drift) for lo, hi in zip(found.low, found.high, strict=True)
    ]
    return verdicts.count("Pass") / reps


@pytest.mark.parametrize("margin", MARGINS)
@pytest.mark.parametrize("metric", sorted(CONTINUOUS))
def test_continuous_suites_keep_the_promise_at_the_margin(metric: str, margin: float) -> None:
    measured = {}
    for n in SIZES:
        if n < DEFAULT_MIN_ITEMS:
            continue  # refused before any interval is computed: P(Pass) = 0
        reps = 3000 if n <= 100 else 1500
        measured[n] = continuous_pass_rate(metric, n, margin, reps, seed=n)
        assert measured[n] <= allowed_with_monte_carlo(reps), (metric, n, measured)


def test_power_tables(capsys: pytest.CaptureFixture[str]) -> None:
    """Printed (and in the README): how often a suite decides, by size. Retention at a
    2-point margin with 30% discordant items; a harmless candidate (no change) should
    Pass, a true 8-point regression should Fail."""
    rows = []
    for n in (40, 100, 300, 1000):
        reps = 4000
        improved, regressed = 0.15, 0.15
        cells = np.random.default_rng(n).multinomial(n, [improved, regressed, 0.7], size=reps)
        harmless = paired_binary_intervals(
            cells[:, 0], cells[:, 1], np.full(reps, n), confidence=CONFIDENCE
        )
        cells = np.random.default_rng(n + 1).multinomial(n, [0.11, 0.19, 0.7], size=reps)
        regressing = paired_binary_intervals(
            cells[:, 0], cells[:, 1], np.full(reps, n), confidence=CONFIDENCE
        )
        rows.append(
            (
                n,
                float(np.mean(harmless.low >= -0.02)),
                float(np.mean(regressing.high < -0.02)),
            )
        )
    with capsys.disabled():
        print(
            "\nretention, margin 0.02, 30% discordant: items | P(Pass | no change) | "
            "P(Fail | 8-point regression)"
        )
        for n, passes, fails in rows:
            print(f"  {n:5d} | {passes:.2f} | {fails:.2f}")
    # More items never decide less often.
    assert [r[1] for r in rows] == sorted(r[1] for r in rows)
    assert [r[2] for r in rows] == sorted(r[2] for r in rows)
    assert rows[-1][2] > 0.9


def test_clustered_items_widen_the_interval_to_what_the_clusters_support() -> None:
    """20 documents of 10 near-identical items each are 20 observations, not 200."""
    rng = np.random.default_rng(3)
    per_document = rng.choice([-1.0, 0.0, 1.0], size=20, p=[0.1, 0.6, 0.3])
    differences = np.repeat(per_document, 10)
    groups = np.repeat(np.arange(20).astype(str), 10)
    effect = design_effect(differences, groups)[0]
    assert effect == pytest.approx(10, rel=0.2)
    improved, regressed = np.sum(differences > 0), np.sum(differences < 0)
    naive = paired_binary_intervals(
        np.array([improved]), np.array([regressed]), np.array([200]), confidence=CONFIDENCE
    )
    clustered = paired_binary_intervals(
        np.array([improved]),
        np.array([regressed]),
        np.array([200]),
        confidence=CONFIDENCE,
        design_effect=np.array([effect]),
    )
    assert clustered.high[0] - clustered.low[0] > 2.5 * (naive.high[0] - naive.low[0])
    values = per_document[None, :].repeat(10, axis=1) + rng.normal(0, 0.01, (1, 200))
    loose = studentized_bootstrap_intervals(values, confidence=CONFIDENCE, samples=2000, seed=1)
    robust = studentized_bootstrap_intervals(
        values, confidence=CONFIDENCE, samples=2000, seed=1, groups=groups
    )
    assert robust.high[0] - robust.low[0] > 2 * (loose.high[0] - loose.low[0])
