"""Confidence intervals for one suite's comparison (pure; numpy only).

Each function takes a batch: rows are independent suites (production passes one, the
simulation in tests/unit/test_gate_statistics.py passes thousands), so the code that
decides a gate is the code whose error rate is measured.

- Paired binary scores (accuracy, exact match, refusal): the score interval for a
  difference of paired proportions (Tango 1998), inverted from the score test with a
  continuity correction (CONTINUITY). It needs no discordant pair to be defined (a
  suite of ties has a wide interval, not [0, 0]) and, in the simulation, holds its
  one-sided error at every n from 10 up; the uncorrected test reaches 3% at n = 20
  from the discreteness of the counts, Newcombe's hybrid interval 16%.
- Continuous scores (perplexity, KL): the studentized (percentile-t) bootstrap. It
  corrects most of the skew of per-item scores that the percentile bootstrap and the
  t interval let through (simulated on gamma-skewed scores: 2.4-3.4% from 30 items,
  against 4-10% before), not all of it; suites under minItems (40) are refused.
- Clustered items (groupBy): the binary score variance is inflated by the design
  effect of the cluster-robust variance (Rao-Scott); the bootstrap resamples whole
  clusters and studentizes with the cluster-robust standard error.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

BINARY_METHOD = "paired score interval (Tango, continuity-corrected)"
CONTINUOUS_METHOD = "studentized bootstrap"
DETECTION_POWER = 0.8  # the minimum detectable difference is detected this often
# Of one discordant pair. Half a pair (Yates) let the one-sided error reach 2.9% at
# 95% when discordant items are about as rare as the margin; three quarters holds it
# under 2.5% across the simulated space for 1% of the power.
CONTINUITY = 0.75
_BISECTION_STEPS = 60


@dataclass(frozen=True)
class Intervals:
    """Per suite in the batch: the estimate and its interval."""

    estimate: np.ndarray
    low: np.ndarray
    high: np.ndarray


def one_sided_z(confidence: float) -> float:
    """z of the two-sided interval at `confidence`: each side errs (1 - confidence)/2."""
    return NormalDist().inv_cdf(1 - (1 - confidence) / 2)


def minimum_detectable_difference(standard_error: np.ndarray, confidence: float) -> np.ndarray:
    """The true distance from a margin this suite decides with DETECTION_POWER."""
    return (one_sided_z(confidence) + NormalDist().inv_cdf(DETECTION_POWER)) * standard_error


def items_to_detect(items: int, mdd: float, distance: float) -> int | None:
    """Items needed for the minimum detectable difference to shrink to `distance`
    (the standard error falls as 1/sqrt(n)); None when nothing would."""
    if distance <= 0 or not np.isfinite(mdd):
        return None
    ratio = mdd / distance
    if ratio > 1e4:  # over a hundred million times the items: never, in practice
        return None
    return int(np.ceil(items * ratio**2))


# --- paired binary scores -------------------------------------------------------------


def _restricted_regression_rate(
    improved: np.ndarray, regressed: np.ndarray, n: np.ndarray, theta: np.ndarray
) -> np.ndarray:
    """Maximum likelihood P(base right, candidate wrong) given that the difference
    P(improved) - P(regressed) equals theta (the root of the score equation)."""
    linear = (improved + regressed) - theta * (2 * n - improved + regressed)
    discriminant = linear**2 + 8 * n * regressed * theta * (1 - theta)
    rate: np.ndarray = (linear + np.sqrt(np.maximum(discriminant, 0.0))) / (4 * n)
    return rate


def _score_statistic(
    improved: np.ndarray,
    regressed: np.ndarray,
    n: np.ndarray,
    theta: np.ndarray,
    design_effect: np.ndarray,
) -> np.ndarray:
    """Continuity-corrected score z for H0: difference == theta (decreasing in theta)."""
    rate = _restricted_regression_rate(improved, regressed, n, theta)
    variance = design_effect * (2 * rate + theta - theta**2) / n
    distance = (improved - regressed) / n - theta
    corrected = np.sign(distance) * np.maximum(np.abs(distance) - CONTINUITY / n, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = corrected / np.sqrt(variance)
    # No variance left (theta at -1 or 1, or ties at theta 0): any distance is certain.
    with np.errstate(invalid="ignore"):
        certain = np.where(corrected == 0, 0.0, np.sign(corrected) * np.inf)
    return np.where(variance > 0, z, certain)


def _invert(
    improved: np.ndarray,
    regressed: np.ndarray,
    n: np.ndarray,
    design_effect: np.ndarray,
    *,
    z: float,
    lower: bool,
) -> np.ndarray:
    """The theta where the score statistic crosses +z (lower bound) or -z (upper)."""
    estimate = (improved - regressed) / n
    below = np.where(lower, -1.0, estimate) * np.ones_like(estimate)
    above = np.where(lower, estimate, 1.0) * np.ones_like(estimate)
    target = z if lower else -z
    for _ in range(_BISECTION_STEPS):
        middle = (below + above) / 2
        beyond = _score_statistic(improved, regressed, n, middle, design_effect) > target
        below = np.where(beyond, middle, below)
        above = np.where(beyond, above, middle)
    bound: np.ndarray = (below + above) / 2
    return bound


def paired_binary_intervals(
    improved: np.ndarray,
    regressed: np.ndarray,
    n: np.ndarray,
    *,
    confidence: float,
    design_effect: np.ndarray | None = None,
) -> Intervals:
    """Interval of P(candidate right) - P(base right) from the discordant counts:
    `improved` items only the candidate gets right, `regressed` only the base."""
    improved, regressed, n = (np.asarray(a, dtype=float) for a in (improved, regressed, n))
    effect = np.ones_like(n) if design_effect is None else np.asarray(design_effect, float)
    z = one_sided_z(confidence)
    return Intervals(
        (improved - regressed) / n,
        _invert(improved, regressed, n, effect, z=z, lower=True),
        _invert(improved, regressed, n, effect, z=z, lower=False),
    )


# --- continuous scores ----------------------------------------------------------------


def _cluster_sums(values: np.ndarray, groups: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Per cluster: the sum of the values and the number of items (each item its own
    cluster without groups)."""
    if groups is None:
        return values, np.ones_like(values)
    _, index = np.unique(groups, return_inverse=True)
    sums = np.zeros((values.shape[0], index.max() + 1))
    for row in range(values.shape[0]):
        sums[row] = np.bincount(index, weights=values[row])
    sizes = np.bincount(index).astype(float)
    return sums, np.broadcast_to(sizes, sums.shape)


def _mean_and_error(sums: np.ndarray, sizes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The item mean and its cluster-robust standard error, over the last axis."""
    total = sizes.sum(axis=-1)
    mean = sums.sum(axis=-1) / total
    clusters = sums.shape[-1]
    residual = sums - sizes * mean[..., None]
    variance = (residual**2).sum(axis=-1) / total**2 * clusters / max(clusters - 1, 1)
    return mean, np.sqrt(variance)


def studentized_bootstrap_intervals(
    values: np.ndarray,
    *,
    confidence: float,
    samples: int,
    seed: int,
    groups: np.ndarray | None = None,
) -> Intervals:
    """Percentile-t interval of the mean of each row of `values` (n items each),
    resampling whole clusters when `groups` (one label per item) is given."""
    values = np.atleast_2d(np.asarray(values, dtype=float))
    sums, sizes = _cluster_sums(values, groups)
    mean, error = _mean_and_error(sums, sizes)
    rng = np.random.default_rng(seed)
    clusters = sums.shape[1]
    tail = (1 - confidence) / 2
    low, high = np.empty_like(mean), np.empty_like(mean)
    # Rows in chunks: samples x clusters resampled per row stays within memory.
    chunk = max(1, 4_000_000 // max(samples * clusters, 1))
    for start in range(0, values.shape[0], chunk):
        rows = slice(start, start + chunk)
        picks = rng.integers(0, clusters, size=(samples, clusters))
        boot_mean, boot_error = _mean_and_error(sums[rows][:, picks], sizes[rows][:, picks])
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (boot_mean - mean[rows, None]) / boot_error
        # A resample with no spread (all one value) says nothing about the shape.
        t = np.where(np.isfinite(t), t, 0.0)
        upper_t, lower_t = np.quantile(t, [1 - tail, tail], axis=1)
        low[rows] = mean[rows] - upper_t * error[rows]
        high[rows] = mean[rows] - lower_t * error[rows]
    return Intervals(mean, low, high)


def design_effect(differences: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Variance of the mean under clustering over the variance if items were
    independent (at least 1: clustering is never credited with more information)."""
    differences = np.atleast_2d(np.asarray(differences, dtype=float))
    if groups is None:
        return np.ones(differences.shape[0])
    _, clustered = _mean_and_error(*_cluster_sums(differences, groups))
    _, independent = _mean_and_error(differences, np.ones_like(differences))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = (clustered / independent) ** 2
    return np.where(np.isfinite(ratio), np.maximum(ratio, 1.0), 1.0)
