"""What must hold after any fault: the fault suite's verdict on one scenario, as a pure
function of what was read back from the cluster and S3."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from tunegate_contract.digest import tree_digest


@dataclass(frozen=True)
class Expected:
    """The scenario's plan: each object's final phase, and each run's attempts."""

    runs: dict[str, str]
    gates: dict[str, str]
    audited: frozenset[str] = frozenset()
    attempts: dict[str, int] = field(default_factory=dict)

    def attempts_of(self, run: str) -> int:
        return self.attempts.get(run, 1)


@dataclass(frozen=True)
class Snapshot:
    """What was read back after the scenario ended."""

    runs: dict[str, dict[str, Any]]  # FineTuneJob name -> status
    gates: dict[str, dict[str, Any]]  # EvalGate name -> status
    gate_runs: dict[str, str]  # EvalGate name -> the FineTuneJob it judges
    jobs: list[str]  # every Job's name in the namespace
    written_adapters: dict[str, str]  # run -> adapter sha256 its training pod wrote
    pointers: dict[str, dict[str, Any]]  # gate -> its promotion.json, where one exists
    served: dict[str, dict[str, str]]  # gate -> {file: sha256 of the bytes serving reads}
    texts: dict[str, str]  # where (a status, the events, a log) -> its text
    secrets: tuple[str, ...] = ()


def violations(snapshot: Snapshot, expected: Expected) -> list[str]:
    """Every broken invariant, each said in one line; empty when all hold."""
    return [
        *_phases(snapshot, expected),
        *_jobs(snapshot, expected),
        *_runs_kept(snapshot, expected),
        *_promotions(snapshot),
        *_secrets(snapshot),
    ]


def _phases(snapshot: Snapshot, expected: Expected) -> list[str]:
    found = []
    for kind, want, have in (
        ("FineTuneJob", expected.runs, snapshot.runs),
        ("EvalGate", expected.gates, snapshot.gates),
    ):
        for name, phase in sorted(want.items()):
            actual = (have.get(name) or {}).get("phase")
            if actual != phase:
                found.append(f"{kind} {name}: phase {actual}, expected {phase}")
    return found


_TRAIN = re.compile(r"^(?P<owner>.+)-train-(?P<attempt>\d+)$")
_EVAL = re.compile(r"^(?P<owner>.+)-eval-(?P<attempt>\d+)$")


def _jobs(snapshot: Snapshot, expected: Expected) -> list[str]:
    """No Job twice, none for an attempt that was not due, none unaccounted for."""
    found = []
    if len(set(snapshot.jobs)) != len(snapshot.jobs):
        found.append(f"duplicate Job names: {sorted(snapshot.jobs)}")
    for job in sorted(set(snapshot.jobs)):
        train, evaluation = _TRAIN.match(job), _EVAL.match(job)
        if train and train["owner"] in expected.runs:
            if int(train["attempt"]) > expected.attempts_of(train["owner"]):
                found.append(f"Job {job}: an attempt beyond the {train['owner']}'s due ones")
        elif evaluation and evaluation["owner"] in expected.gates:
            if int(evaluation["attempt"]) > 1:
                found.append(f"Job {job}: a second evaluation of {evaluation['owner']}")
        elif job.removesuffix("-audit") not in expected.audited:
            found.append(f"Job {job}: not accounted for by any object of the scenario")
    return found


def _runs_kept(snapshot: Snapshot, expected: Expected) -> list[str]:
    """Each finished run reports the adapter its pod wrote, after the due attempts."""
    found = []
    for name, phase in sorted(expected.runs.items()):
        status = snapshot.runs.get(name) or {}
        if status.get("attempts") != expected.attempts_of(name):
            found.append(
                f"FineTuneJob {name}: attempts {status.get('attempts')},"
                f" expected {expected.attempts_of(name)}"
            )
        if phase != "Succeeded":
            continue
        reported = (status.get("adapter") or {}).get("sha256")
        written = snapshot.written_adapters.get(name)
        if reported != written:
            found.append(f"FineTuneJob {name}: reports adapter {reported}, its pod wrote {written}")
    return found


def _promotions(snapshot: Snapshot) -> list[str]:
    """A pointer only after a Pass; it names bytes whose digest it records, and those
    are the judged candidate's."""
    found = []
    for gate, pointer in sorted(snapshot.pointers.items()):
        status = snapshot.gates.get(gate) or {}
        verdict = (status.get("decision") or {}).get("verdict")
        if verdict != "Pass":
            found.append(f"EvalGate {gate}: a promotion pointer exists, verdict {verdict}")
        current = pointer.get("current") or {}
        served = snapshot.served.get(gate) or {}
        if not served or tree_digest(served) != current.get("sha256"):
            found.append(
                f"EvalGate {gate}: the pointer names {current.get('sha256')}, "
                f"the bytes it points at digest to {tree_digest(served) if served else 'nothing'}"
            )
        candidate = snapshot.written_adapters.get(snapshot.gate_runs.get(gate, ""))
        if current.get("sha256") != candidate:
            found.append(
                f"EvalGate {gate}: promoted {current.get('sha256')}, "
                f"not the judged candidate {candidate}"
            )
    for gate, status in sorted(snapshot.gates.items()):
        promoted = (status.get("promoted") or {}).get("sha256")
        pointer_sha = ((snapshot.pointers.get(gate) or {}).get("current") or {}).get("sha256")
        if promoted and promoted != pointer_sha:
            found.append(
                f"EvalGate {gate}: status says {promoted} is promoted, the pointer {pointer_sha}"
            )
    return found


def _secrets(snapshot: Snapshot) -> list[str]:
    return [
        f"a secret value appears in {where}"
        for where, text in sorted(snapshot.texts.items())
        for secret in snapshot.secrets
        if secret and secret in text
    ]
