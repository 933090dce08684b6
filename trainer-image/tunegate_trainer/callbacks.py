"""Trainer callbacks: progress for the operator, checkpoints to S3, stop on SIGTERM."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from tunegate_contract.base import now_rfc3339
from tunegate_contract.layout import LATEST_CHECKPOINT
from tunegate_contract.run_documents import Progress
from tunegate_trainer.storage import Store


def is_main() -> bool:
    return not dist.is_initialized() or dist.get_rank() == 0


def is_local_main() -> bool:
    return int(os.environ.get("LOCAL_RANK", "0")) == 0


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


class ProgressReporter(TrainerCallback):
    """Writes progress.json (rank 0) at most every `interval` seconds and at the end."""

    def __init__(
        self,
        store: Store,
        uri: str,
        *,
        tokens_per_step: int,
        interval: float = 5.0,
        start_step: int = 0,
    ) -> None:
        self.store, self.uri = store, uri
        self.tokens_per_step = tokens_per_step
        self.interval = interval
        self.started = time.monotonic()
        self.start_step = start_step
        self.last_write = 0.0
        self.loss: float | None = None
        self.history: list[dict[str, float]] = []

    def on_train_begin(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        self.started = time.monotonic()
        self.start_step = state.global_step

    def on_log(
        self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **_: Any
    ) -> None:
        if logs and "loss" in logs:
            self.loss = float(logs["loss"])
            self.history.append({"step": state.global_step, "loss": self.loss})

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        if time.monotonic() - self.last_write >= self.interval:
            self.write(state)

    def on_train_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        self.write(state)

    def write(self, state: Any) -> None:
        if not is_main():
            return
        self.last_write = time.monotonic()
        elapsed = max(self.last_write - self.started, 1e-6)
        done = state.global_step - self.start_step
        rate = done / elapsed
        remaining = max(state.max_steps - state.global_step, 0)
        progress = Progress(
            step=state.global_step,
            total_steps=state.max_steps,
            epoch=round(float(state.epoch or 0), 4),
            loss=self.loss,
            tokens_per_second=round(rate * self.tokens_per_step, 2),
            eta_seconds=int(remaining / rate) if rate > 0 else None,
            updated_at=now_rfc3339(),
        )
        self.store.write_json(self.uri, progress.to_json())


class CheckpointUploader(TrainerCallback):
    """After each save: every node uploads what it wrote, then rank 0 moves `latest`."""

    def __init__(self, store: Store, uri: str, local_dir: Path) -> None:
        self.store, self.uri, self.local_dir = store, uri.rstrip("/"), local_dir

    def on_save(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        name = f"checkpoint-{state.global_step}"
        barrier()
        if is_local_main():
            self.store.upload_tree(self.local_dir / name, f"{self.uri}/{name}")
        barrier()
        if is_main():
            self.store.write_json(
                f"{self.uri}/{LATEST_CHECKPOINT}", {"step": state.global_step, "checkpoint": name}
            )


class StopOnSigterm(TrainerCallback):
    """Kubernetes sends SIGTERM before killing a pod: save a checkpoint, then stop.

    When only some ranks are signalled (one node of several is preempted), every rank
    must stop at the same step, or the others block in the checkpoint's collectives
    until they time out: the flag is agreed on (max over ranks) after every step."""

    def __init__(self) -> None:
        self.signalled = False  # this process got SIGTERM; never reset
        self.requested = False  # every rank agreed to stop
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum: int, frame: Any) -> None:
        self.signalled = True

    def on_step_end(self, args: Any, state: Any, control: Any, **_: Any) -> None:
        # The handler may run between the collective's return and the read of its result;
        # writing only `requested` here keeps that signal for the next step's vote.
        agreed = self.signalled
        if dist.is_initialized():
            flag = torch.tensor([float(self.signalled)], device=args.device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            agreed = bool(flag.item())
        self.requested = self.requested or agreed
        if self.requested:
            control.should_save = True
            control.should_training_stop = True


def latest_checkpoint(store: Store, uri: str) -> str | None:
    marker = f"{uri.rstrip('/')}/{LATEST_CHECKPOINT}"
    if not store.exists(marker):
        return None
    return str(store.read_json(marker)["checkpoint"])
