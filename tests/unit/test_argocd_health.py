"""The Argo CD health checks, run by a real Lua interpreter (lupa) against objects in
every phase the operator can write."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any, get_args

import pytest
from lupa import LuaRuntime
from test_finetunejob_decisions import retries_used_up, spec

from tunegate_operator.api.evalgate import Phase as GatePhase
from tunegate_operator.api.finetunejob import Phase as JobPhase
from tunegate_operator.decisions.finetunejob import decide_finetunejob
from tunegate_operator.decisions.status_patch import desired_status

ARGOCD = Path(__file__).resolve().parents[2] / "argocd"


def health(script: str, obj: dict[str, Any]) -> dict[str, str]:
    lua = LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    # Argo CD runs the script as a chunk whose return value is the health table.
    result = lua.execute((ARGOCD / script).read_text())
    return {"status": str(result["status"]), "message": str(result["message"])}


def failed_status() -> dict[str, Any]:
    """The status the operator writes when a run exhausts its retries (its own pure
    decision, so the check reads the conditions production really writes)."""
    decision = decide_finetunejob(spec(), retries_used_up("pod x exited with code 137: OOMKilled"))
    assert decision.phase == "Failed"
    status = desired_status(decision, {}, now=datetime(2026, 1, 1, tzinfo=UTC), generation=2)
    return {k: v for k, v in status.items() if k != "phase"}


def resource(phase: str | None, **status: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"metadata": {"name": "demo", "generation": 2}}
    if phase is not None:
        body["status"] = {"phase": phase, "observedGeneration": 2, **status}
    return body


FTJ_EXPECTED = {
    "Pending": "Progressing",
    "Auditing": "Progressing",
    "Queued": "Progressing",
    "Training": "Progressing",
    "Succeeded": "Healthy",
    "Failed": "Degraded",
    "Suspended": "Suspended",
}
GATE_EXPECTED = {
    "Pending": "Progressing",
    "WaitingForCandidate": "Progressing",
    "Evaluating": "Progressing",
    "AwaitingApproval": "Suspended",
    "Promoted": "Healthy",
    "Passed": "Healthy",
    "Superseded": "Healthy",
    "Held": "Degraded",
    "Rejected": "Degraded",
    "RolledBack": "Degraded",
    "Failed": "Degraded",
}


def test_every_phase_of_the_api_has_an_expected_health() -> None:
    assert set(FTJ_EXPECTED) == set(get_args(JobPhase))
    assert set(GATE_EXPECTED) == set(get_args(GatePhase))


@pytest.mark.parametrize(("phase", "expected"), FTJ_EXPECTED.items())
def test_finetunejob_health(phase: str, expected: str) -> None:
    status: dict[str, Any] = {"progress": {"step": 12, "totalSteps": 40}}
    if phase == "Failed":
        status = failed_status()
    if phase == "Succeeded":
        status["adapter"] = {"uri": "s3://b/runs/demo/adapter"}
    if phase == "Queued":
        status["conditions"] = [
            {"type": "Queued", "status": "True", "reason": "WaitingForQuota", "message": "lq full"}
        ]
    result = health("finetunejob-health.lua", resource(phase, **status))
    assert result["status"] == expected
    if phase == "Training":
        assert result["message"] == "Training: step 12/40"
    if phase == "Failed":
        assert "OOMKilled" in result["message"]
    if phase == "Succeeded":
        assert "s3://b/runs/demo/adapter" in result["message"]
    if phase == "Queued":
        assert result["message"] == "lq full"


@pytest.mark.parametrize(("phase", "expected"), GATE_EXPECTED.items())
def test_evalgate_health(phase: str, expected: str) -> None:
    status = {
        "decision": {"verdict": "Fail", "reason": "failed: general (retention)"},
        "promoted": {"uri": "s3://b/serving/demo"},
    }
    result = health("evalgate-health.lua", resource(phase, **status))
    assert result["status"] == expected
    if phase == "Rejected":
        assert "general (retention)" in result["message"]
    if phase == "AwaitingApproval":
        assert "kubectl tunegate approve demo" in result["message"]


@pytest.mark.parametrize("script", ["finetunejob-health.lua", "evalgate-health.lua"])
def test_new_and_stale_objects_are_progressing(script: str) -> None:
    assert health(script, resource(None))["status"] == "Progressing"
    stale = resource("Succeeded" if "finetunejob" in script else "Promoted")
    stale["metadata"]["generation"] = 3
    assert health(script, stale) == {
        "status": "Progressing",
        "message": "the operator has not yet seen the latest spec",
    }
