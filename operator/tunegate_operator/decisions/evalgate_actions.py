"""What an EvalGate reconcile may decide to do, and the decision itself (pure: no I/O
here). The I/O shell, reconcile_evalgate, runs each action."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tunegate_operator.api.evalgate import Phase
from tunegate_operator.builders.eval_job import Candidate
from tunegate_operator.decisions.conditions import Cond
from tunegate_operator.decisions.promotion_record import Promoted
from tunegate_operator.decisions.vocabulary import Event


@dataclass(frozen=True)
class CreateEvalJob:
    pass


@dataclass(frozen=True)
class Promote:
    candidate: Candidate


@dataclass(frozen=True)
class StartRound:
    """A scheduled re-evaluation round: its eval Job."""

    round: int


@dataclass(frozen=True)
class RollBack:
    """Point serving back at the previous version."""

    failed_sha256: str


@dataclass(frozen=True)
class HandOff:
    """Tell serving (ConfigMap, promotion.handoff) which version the pointer serves."""

    served: Promoted


@dataclass(frozen=True)
class PublishReport:
    uri: str


GateAction = CreateEvalJob | Promote | StartRound | RollBack | HandOff | PublishReport


@dataclass(frozen=True)
class EvalGateDecision:
    phase: Phase
    conditions: tuple[Cond, ...]
    status: Mapping[str, Any] = field(default_factory=dict)
    actions: tuple[GateAction, ...] = ()
    events: tuple[Event, ...] = ()
