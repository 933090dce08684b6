"""Each benchmark still runs, at a size that checks its output rather than its speed
(TUNEGATE_BENCH_QUICK=1 for the trainer and eval ones; a few thousand rows for the
audit). The numbers themselves come from `python -m benchmarks`, never from a test."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def bench(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks", *args],
        cwd=ROOT,
        env={**os.environ, "TUNEGATE_BENCH_QUICK": "1"},
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


@pytest.mark.timeout(900)
def test_audit_benchmark_finds_what_it_planted() -> None:
    out = bench("audit", "3000")
    planted = re.search(r"planted (\d+) reworded copies and a backdoor in (\d+) rows", out)
    assert planted, out
    ours = re.search(r"tunegate audit.*near (\d+), exact (\d+), triggers \['zq-override'\]", out)
    assert ours, out
    found, reworded = int(ours.group(1)) + int(ours.group(2)), int(planted.group(1))
    assert 0.9 * reworded <= found <= reworded
    assert re.search(r"datatrove MinHash dedup +\d+ rows/s", out)


@pytest.mark.timeout(1200)
def test_trainer_benchmark_runs_its_three_variants() -> None:
    out = bench("trainer")
    for label in ("HF Trainer + peft, padded", "concatenated packing", "isolated packing"):
        assert re.search(rf"{re.escape(label)} +[\d.]+ tokens/s .* held-out loss \d", out), out


@pytest.mark.timeout(1200)
def test_eval_benchmark_scores_equal_lm_evaluation_harness() -> None:
    out = bench("eval")
    for metric in ("multipleChoiceAccuracy", "exactMatch", "refusal"):
        assert re.search(rf"{metric} +8 items .* scores that differ: 0", out), out
    assert "answers that differ: 0" in out
