"""SIGTERM under torchrun: every rank votes after each step; a signal that lands while a
rank waits in the vote's collective must not be lost (the run would train on until the
pod is killed, without its checkpoint)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
import torch

from tunegate_trainer import callbacks
from tunegate_trainer.callbacks import StopOnSigterm


@pytest.fixture
def stopper() -> Iterator[StopOnSigterm]:
    previous = signal.getsignal(signal.SIGTERM)
    yield StopOnSigterm()
    signal.signal(signal.SIGTERM, previous)


def _step(stopper: StopOnSigterm) -> Any:
    control = SimpleNamespace(should_save=False, should_training_stop=False)
    stopper.on_step_end(SimpleNamespace(device="cpu"), SimpleNamespace(), control)
    return control


def test_a_signal_during_the_vote_stops_the_run_at_the_next_step(
    stopper: StopOnSigterm, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ranks, this one signalled while blocked in all_reduce: the handler runs as the
    collective returns, after this rank voted 0, and the others voted 0 too."""
    signalled_during = {1}
    votes = iter(range(1, 10))

    def all_reduce(flag: torch.Tensor, op: Any) -> None:
        vote = next(votes)
        if vote in signalled_during:
            stopper._handle(signal.SIGTERM, None)  # lands mid-collective
        # the other rank's vote is 0: the max is this rank's own

    monkeypatch.setattr(callbacks.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(callbacks.dist, "all_reduce", all_reduce)
    first = _step(stopper)
    assert not first.should_training_stop  # nobody had voted to stop yet
    second = _step(stopper)
    assert second.should_save and second.should_training_stop
    assert stopper.requested


def test_without_a_signal_nothing_stops(
    stopper: StopOnSigterm, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(callbacks.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(callbacks.dist, "all_reduce", lambda flag, op: None)
    for _ in range(3):
        assert not _step(stopper).should_training_stop
    assert not stopper.requested
