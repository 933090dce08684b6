"""The fault suite's invariants judge a scenario's read-back state."""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any

from tunegate_cluster.invariants import Expected, Snapshot, violations
from tunegate_contract.digest import tree_digest

FILES = {"adapter_model.safetensors": hashlib.sha256(b"weights").hexdigest()}
ADAPTER = tree_digest(FILES)
OTHER = tree_digest({"adapter_model.safetensors": hashlib.sha256(b"other").hexdigest()})
SECRET = "s3cr3t-value"

EXPECTED = Expected(
    runs={"a": "Succeeded", "b": "Succeeded"},
    gates={"pass": "Promoted", "fail": "Rejected"},
    audited=frozenset({"a"}),
)


def clean() -> Snapshot:
    run: dict[str, Any] = {"phase": "Succeeded", "attempts": 1, "adapter": {"sha256": ADAPTER}}
    return Snapshot(
        runs={"a": run, "b": {**run, "adapter": {"sha256": OTHER}}},
        gates={
            "pass": {
                "phase": "Promoted",
                "decision": {"verdict": "Pass"},
                "promoted": {"sha256": ADAPTER},
            },
            "fail": {"phase": "Rejected", "decision": {"verdict": "Fail"}},
        },
        gate_runs={"pass": "a", "fail": "b"},
        jobs=["a-audit", "a-train-1", "b-train-1", "pass-eval-1", "fail-eval-1"],
        written_adapters={"a": ADAPTER, "b": OTHER},
        pointers={"pass": {"current": {"sha256": ADAPTER, "uri": "s3://t/serving/v"}}},
        served={"pass": dict(FILES)},
        texts={"events": "[]", "log operator": "reconciled"},
        secrets=(SECRET,),
    )


def test_a_clean_scenario_breaks_nothing() -> None:
    assert violations(clean(), EXPECTED) == []


def test_a_run_short_of_its_phase() -> None:
    snapshot = clean()
    snapshot.runs["b"] = {**snapshot.runs["b"], "phase": "Training"}
    assert violations(snapshot, EXPECTED) == ["FineTuneJob b: phase Training, expected Succeeded"]


def test_a_second_training_attempt_nobody_asked_for() -> None:
    snapshot = dataclasses.replace(clean(), jobs=[*clean().jobs, "a-train-2"])
    found = violations(snapshot, EXPECTED)
    assert any("a-train-2" in line for line in found), found
    assert violations(snapshot, dataclasses.replace(EXPECTED, attempts={"a": 2})) == [
        "FineTuneJob a: attempts 1, expected 2"
    ]


def test_a_second_evaluation_and_a_stray_job() -> None:
    snapshot = dataclasses.replace(clean(), jobs=[*clean().jobs, "pass-eval-2", "b-audit"])
    found = violations(snapshot, EXPECTED)
    assert len(found) == 2, found
    assert any("pass-eval-2" in line for line in found)
    assert any("b-audit" in line for line in found)


def test_a_run_that_reports_an_adapter_its_pod_did_not_write() -> None:
    snapshot = clean()
    snapshot.runs["a"] = {**snapshot.runs["a"], "adapter": {"sha256": OTHER}}
    found = violations(snapshot, EXPECTED)
    assert found == [f"FineTuneJob a: reports adapter {OTHER}, its pod wrote {ADAPTER}"]


def test_a_pointer_without_a_pass() -> None:
    snapshot = clean()
    snapshot.pointers["fail"] = {"current": {"sha256": OTHER}}
    snapshot.served["fail"] = {"adapter_model.safetensors": FILES["adapter_model.safetensors"]}
    found = violations(snapshot, EXPECTED)
    assert any("fail: a promotion pointer exists, verdict Fail" in line for line in found), found


def test_a_pointer_at_bytes_that_do_not_match_it() -> None:
    snapshot = clean()
    snapshot.served["pass"] = {"adapter_model.safetensors": hashlib.sha256(b"torn").hexdigest()}
    found = violations(snapshot, EXPECTED)
    assert len(found) == 1 and "the bytes it points at digest to" in found[0], found
    snapshot.served["pass"] = {}
    assert "digest to nothing" in violations(snapshot, EXPECTED)[0]


def test_a_status_that_claims_a_promotion_the_pointer_does_not_hold() -> None:
    snapshot = clean()
    snapshot.pointers.clear()
    snapshot.served.clear()
    found = violations(snapshot, EXPECTED)
    assert found == [f"EvalGate pass: status says {ADAPTER} is promoted, the pointer None"]


def test_a_secret_in_a_log() -> None:
    snapshot = clean()
    snapshot.texts["log operator"] = f"connecting with {SECRET}"
    assert violations(snapshot, EXPECTED) == ["a secret value appears in log operator"]
