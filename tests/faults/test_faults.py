"""The fault suite: the fleet (20 FineTuneJobs, 5 EvalGates) played to the end with one
kind of fault injected while it runs. Every object must reach its phase with no
duplicate Job, no lost run, no promotion without a Pass, a pointer only at verified
bytes, and no secret value anywhere (tunegate_cluster/invariants.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tunegate_cluster.cluster import ClusterInfo
from tunegate_cluster.fault_cases import CASES, FaultCase, run_case


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_the_fleet_finishes_with_every_invariant_kept(
    case: FaultCase, crds: ClusterInfo, operator_kubeconfig: Path, tmp_path: Path
) -> None:
    result = run_case(case, crds, operator_kubeconfig=operator_kubeconfig, log_dir=tmp_path)
    log = (tmp_path / "operator.log").read_text(errors="replace")[-6000:]
    assert result.finished, f"{result.outcome}: {result.violations}\n{log}"
    assert result.violations == [], "\n".join(result.violations)
    if case.name != "none":
        # The fault really landed mid-run; otherwise the case proves nothing.
        assert result.injected > 0, result.notes
