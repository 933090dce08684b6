"""EvalGate: its contract with the eval command, the shared digest definition, and the
state machine's table (never promote on anything but Pass)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import yaml
from gate_specs import UNSURE_SCORES, eval_results, gate_spec

from tunegate_contract.eval_config import EVAL_CONFIG_ENV, load_eval_config
from tunegate_operator.api.evalgate import EvalGateSpec
from tunegate_operator.builders.eval_job import Candidate, GateRef, eval_job
from tunegate_operator.decisions.evalgate_actions import CreateEvalJob, Promote
from tunegate_operator.decisions.verdict import (
    CandidateProblem,
    VerdictObserved,
    decide_verdict,
    verdict_recorded,
)
from tunegate_operator.decisions.vocabulary import JobView
from tunegate_operator.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
GATE = GateRef("ml", "gate", "uid", 3)
CANDIDATE = Candidate("s3://runs/legal/adapter", "s3://models/base", "ab" * 32, "FineTuneJob x")
SPECS = [
    document["spec"]
    for path in sorted((ROOT / "examples").glob("*.yaml"))
    for document in yaml.safe_load_all(path.read_text())
    if document["kind"] == "EvalGate"
]


@pytest.mark.parametrize("raw", SPECS, ids=lambda s: s["candidate"]["fineTuneJobRef"]["name"])
def test_the_eval_command_loads_the_config_every_example_job_carries(raw: dict[str, Any]) -> None:
    spec = EvalGateSpec.model_validate(raw)
    job = eval_job(spec, gate=GATE, candidate=CANDIDATE, settings=Settings())
    (container,) = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container["env"] if e["name"] == EVAL_CONFIG_ENV}
    config = load_eval_config(env)
    assert [
        (s.name, s.role, s.metric, s.dataset, s.max_items, s.group_by) for s in config.suites
    ] == [(s.name, s.role, s.metric, s.dataset, s.max_items, s.group_by) for s in spec.suites]
    assert config.results == "s3://runs/legal/evals/gate-g3/results.json"
    assert config.adapter == CANDIDATE.adapter_uri
    assert config.precision == ("fp32" if spec.resources.gpus == 0 else "bf16")
    assert job["metadata"]["name"] == "gate-eval-3"
    assert job["metadata"]["ownerReferences"][0]["kind"] == "EvalGate"


def spec(mode: str | None = "auto", on_inconclusive: str = "hold") -> EvalGateSpec:
    promotion = {"promotion": {"mode": mode, "uri": "s3://serving/x"}} if mode else {}
    return gate_spec(onInconclusive=on_inconclusive, **promotion)


def observed(**fields: Any) -> VerdictObserved:
    base = {
        "now": datetime(2026, 1, 1, tzinfo=UTC),
        "generation": 3,
        "status": {},
        "annotations": {},
        "candidate": CANDIDATE,
    }
    return VerdictObserved(**(base | fields))


CLEAR_PASS = eval_results([0.0] * 100, [1.0] * 100)
CLEAR_FAIL = eval_results([1.0] * 50, [0.0] * 50)
UNSURE = eval_results(*UNSURE_SCORES)


@pytest.mark.parametrize(
    ("case", "the_spec", "obs", "phase", "actions"),
    [
        (
            "missing FineTuneJob waits",
            spec(),
            observed(candidate=CandidateProblem(True, "FineTuneJobNotFound", "m")),
            "WaitingForCandidate",
            [],
        ),
        (
            "failed FineTuneJob fails the gate",
            spec(),
            observed(candidate=CandidateProblem(False, "CandidateFailed", "m")),
            "Failed",
            [],
        ),
        ("no results yet starts the eval job", spec(), observed(), "Evaluating", [CreateEvalJob()]),
        (
            "eval running",
            spec(),
            observed(eval_job=JobView("gate-eval-3", active=1)),
            "Evaluating",
            [],
        ),
        (
            "eval job failed",
            spec(),
            observed(eval_job=JobView("gate-eval-3", failed=1, finished="Failed", message="OOM")),
            "Failed",
            [],
        ),
        (
            "pass + auto promotes",
            spec(),
            observed(results=CLEAR_PASS),
            "Evaluating",
            [Promote(CANDIDATE)],
        ),
        (
            "pass + promoted already",
            spec(),
            observed(results=CLEAR_PASS, promoted_sha256="ab" * 32),
            "Promoted",
            [],
        ),
        (
            "pass + manual waits",
            spec("manual"),
            observed(results=CLEAR_PASS),
            "AwaitingApproval",
            [],
        ),
        (
            "pass + manual approved",
            spec("manual"),
            observed(results=CLEAR_PASS, annotations={"tunegate.dev/approve": "true"}),
            "AwaitingApproval",
            [Promote(CANDIDATE)],
        ),
        ("pass without promotion", spec(None), observed(results=CLEAR_PASS), "Passed", []),
        ("fail never promotes", spec(), observed(results=CLEAR_FAIL), "Rejected", []),
        (
            "fail never promotes, even approved",
            spec("manual"),
            observed(results=CLEAR_FAIL, annotations={"tunegate.dev/approve": "true"}),
            "Rejected",
            [],
        ),
        ("inconclusive holds", spec(), observed(results=UNSURE), "Held", []),
        (
            "inconclusive fails when asked",
            spec(on_inconclusive="fail"),
            observed(results=UNSURE),
            "Rejected",
            [],
        ),
        (
            "results for other suites are an error",
            spec(),
            observed(results=eval_results([1], [1], suite="other")),
            "Failed",
            [],
        ),
    ],
)
def test_gate_table(
    case: str, the_spec: EvalGateSpec, obs: VerdictObserved, phase: str, actions: list[Any]
) -> None:
    decision = decide_verdict(the_spec, obs)
    assert decision.phase == phase
    assert list(decision.actions) == actions


def test_report_renders_every_suite_with_a_plot() -> None:
    from tunegate_operator import report

    rows = [
        {
            "suite": "task",
            "role": "target",
            "metric": "exactMatch",
            "base": 0.2,
            "candidate": 0.6,
            "delta": 0.4,
            "interval": {"low": 0.3, "high": 0.5},
            "threshold": 0.1,
            "verdict": "Pass",
            "items": 100,
        },
        {
            "suite": "ref",
            "role": "drift",
            "metric": "kl",
            "candidate": 0.05,
            "delta": 0.05,
            "interval": {"low": 0.04, "high": 0.06},
            "threshold": 0.2,
            "verdict": "Pass",
            "items": 50,
        },
    ]
    page, images = report.render(
        name="ml/<gate>",
        rows=rows,
        decision={"verdict": "Pass", "reason": "all clear"},
        candidate="FineTuneJob x",
        base="s3://m/b",
        confidence=0.95,
        loss_curve=None,
    )
    assert set(images) == {"task.svg", "ref.svg"}
    assert all(ElementTree.fromstring(svg).tag.endswith("svg") for svg in images.values())
    assert 'src="task.svg"' in page and 'src="ref.svg"' in page
    assert "ml/&lt;gate&gt;" in page and "[+0.3000, +0.5000]" in page
    assert "Training loss" not in page


def settled(verdict: str, **fields: Any) -> dict[str, Any]:
    """The status a judged gate keeps (as decide_verdict wrote it)."""
    return {
        "observedGeneration": 3,
        "results": [{"suite": "t", "verdict": verdict}],
        "summary": {},
        "decision": {"verdict": verdict, "reason": "r", "judged": CANDIDATE.identity},
    } | fields


@pytest.mark.parametrize(
    ("status", "recorded"),
    [
        (settled("Fail"), True),
        (settled("Inconclusive"), True),
        (settled("Pass"), True),
        (settled("Fail", observedGeneration=2), False),  # the spec changed
        (settled("Error"), False),  # errors are looked at again
        (settled("Fail", results=[]), False),
        (
            settled("Fail")
            | {"decision": {"verdict": "Fail", "judged": "s3://runs/legal/adapter"}},
            False,  # judged before the digest was known, or another adapter
        ),
        ({}, False),
    ],
)
def test_a_verdict_is_recorded_for_this_generation_and_candidate_only(
    status: dict[str, Any], recorded: bool
) -> None:
    assert verdict_recorded(status, 3, CANDIDATE) is recorded


@pytest.mark.parametrize(
    ("the_spec", "verdict", "phase", "actions"),
    [
        (spec(), "Fail", "Rejected", []),
        (spec(), "Inconclusive", "Held", []),
        (spec(on_inconclusive="fail"), "Inconclusive", "Rejected", []),
        (spec(), "Pass", "Evaluating", [Promote(CANDIDATE)]),
        (spec(None), "Pass", "Passed", []),
    ],
)
def test_a_recorded_verdict_decides_as_the_results_did(
    the_spec: EvalGateSpec, verdict: str, phase: str, actions: list[Any]
) -> None:
    decision = decide_verdict(
        the_spec, observed(status=settled(verdict), results=None, recorded=True)
    )
    assert decision.phase == phase and list(decision.actions) == actions
    assert decision.status["decision"]["verdict"] == verdict


def test_a_fresh_verdict_records_what_it_judged() -> None:
    decision = decide_verdict(spec(), observed(results=CLEAR_FAIL))
    assert decision.status["decision"]["judged"] == f"{CANDIDATE.adapter_uri}@sha256:{'ab' * 32}"
    assert verdict_recorded({**decision.status, "observedGeneration": 3}, 3, CANDIDATE), (
        "the next pass finds it settled"
    )
