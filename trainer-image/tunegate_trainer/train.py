"""`python -m tunegate_trainer train`: one entrypoint for one process, torchrun across
processes, or many nodes; distribution is config (env from torchrun), not code.

Reads top to bottom: config -> data -> model -> resume point -> train (checkpoints
to S3, progress for the operator, stop on SIGTERM) -> adapter, loss curve,
manifest (last). Exits 143 when stopped by SIGTERM so the attempt is not
mistaken for a finished run.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import socket
from pathlib import Path
from typing import Any

import torch

from tunegate_contract.trainer_config import TrainerConfig
from tunegate_trainer.callbacks import (
    CheckpointUploader,
    ProgressReporter,
    StopOnSigterm,
    barrier,
    is_local_main,
    is_main,
    latest_checkpoint,
)
from tunegate_trainer.data import load_datasets
from tunegate_trainer.modeling import (
    cache_root,
    count_parameters,
    fetch_model,
    fetch_once,
    load_model,
    load_tokenizer,
    model_digest,
)
from tunegate_trainer.outputs import dataset_digest, manifest, name_the_base_model, plot_loss
from tunegate_trainer.packing import pack
from tunegate_trainer.storage import Store, sha256_file

log = logging.getLogger("tunegate.train")
SIGTERM_EXIT = 143


def _single_process_deepspeed_env() -> None:
    """DeepSpeed falls back to MPI discovery unless these are set; torchrun sets them.
    A free port, not a fixed one: other single-process runs may share this host."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = str(probe.getsockname()[1])
    for key, value in (
        ("RANK", "0"),
        ("LOCAL_RANK", "0"),
        ("WORLD_SIZE", "1"),
        ("MASTER_ADDR", "127.0.0.1"),
        ("MASTER_PORT", free_port),
    ):
        os.environ.setdefault(key, value)


def deepspeed_config(config: TrainerConfig) -> dict[str, Any] | None:
    if config.deepspeed is None:
        return None
    zero: dict[str, Any] = {"stage": config.deepspeed.zero_stage}
    if config.deepspeed.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": torch.cuda.is_available()}
    if config.deepspeed.zero_stage == 3:
        # Save gathered (full) tensors, so the adapter loads without DeepSpeed.
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    precision = config.training.precision
    return {
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "train_batch_size": "auto",
        "gradient_clipping": "auto",
        "zero_optimization": zero,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16"},
        # torch's Adam: no JIT-compiled DeepSpeed ops on first start.
        "optimizer": {
            "type": "AdamW",
            "params": {"lr": "auto", "weight_decay": "auto", "torch_adam": True},
        },
        "zero_allow_untested_optimizer": True,
    }


def training_arguments(config: TrainerConfig, workdir: Path, *, steps: int) -> Any:
    from transformers import TrainingArguments

    t = config.training
    on_cpu = not torch.cuda.is_available()
    return TrainingArguments(
        output_dir=str(workdir / "checkpoints"),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.gradient_accumulation,
        learning_rate=t.learning_rate,
        max_steps=steps,
        warmup_steps=math.ceil(t.warmup_ratio * steps),
        lr_scheduler_type="linear",
        logging_steps=1 if steps <= 200 else max(1, steps // 200),
        save_strategy="steps",
        save_steps=t.checkpoint_every,
        save_total_limit=2,
        seed=t.seed,
        data_seed=t.seed,
        bf16=t.precision == "bf16",
        fp16=t.precision == "fp16" and not on_cpu,
        gradient_checkpointing=False,  # enabled on the model itself (works with peft)
        use_cpu=on_cpu,
        deepspeed=deepspeed_config(config),
        report_to=[],
        disable_tqdm=not is_main(),
        remove_unused_columns=False,
        dataloader_num_workers=0,
    )


def planned_steps(config: TrainerConfig, blocks: int) -> int:
    if config.training.max_steps:
        return config.training.max_steps
    world = int(os.environ.get("WORLD_SIZE", "1"))
    per_step = config.training.batch_size * config.training.gradient_accumulation * world
    return max(1, math.ceil(blocks / per_step) * config.training.epochs)


def run(config: TrainerConfig, store: Store, *, workdir: Path | None = None) -> int:
    """Train and publish; 0 when the manifest is written, 143 when stopped by SIGTERM
    after a checkpoint."""
    # One directory per pod and attempt, shared by its local ranks: DeepSpeed writes
    # every rank's shards into the same checkpoint, and local rank 0 uploads it.
    scratch = workdir or cache_root() / "runs" / f"{config.run.uid}-{config.run.attempt}"
    code = _train(config, store, scratch)
    barrier()
    if workdir is None and is_local_main():
        # Everything in it is in S3 now; a PVC cache must not fill up with old attempts.
        shutil.rmtree(scratch, ignore_errors=True)
    return code


def _train(config: TrainerConfig, store: Store, workdir: Path) -> int:
    from transformers import Trainer, default_data_collator

    if config.deepspeed is not None:
        # Without DeepSpeed a single process needs no process group (and no port).
        _single_process_deepspeed_env()
    torch.manual_seed(config.training.seed)

    datasets = load_datasets(store, config.data, seed=config.training.seed)
    if datasets.skipped:
        log.warning(
            "skipped %d malformed rows; first: %s", len(datasets.skipped), datasets.skipped[0]
        )
    model_path = fetch_model(store, config.model.uri, config.model.revision)
    tokenizer = load_tokenizer(model_path)
    block, packing = config.training.max_seq_length, config.training.packing
    train_set = pack(datasets.train, tokenizer, block_size=block, packing=packing)
    eval_set = (
        pack(datasets.validation, tokenizer, block_size=block, packing=packing)
        if datasets.validation
        else None
    )
    steps = planned_steps(config, len(train_set))
    args = training_arguments(config, workdir, steps=steps)
    # Set up the process group now: ZeRO-3 partitions the model while it loads.
    log.info("device %s, world size %d", args.device, args.world_size)
    if config.deepspeed is not None:
        import deepspeed

        deepspeed.init_distributed()  # its own comm layer must know the world size too

    model = load_model(config, model_path)
    trainable, total = count_parameters(model)
    log.info(
        "method %s: %d trainable of %d parameters; %d packed blocks, %d steps",
        config.method,
        trainable,
        total,
        len(train_set),
        steps,
    )

    resume_from = None
    name = latest_checkpoint(store, config.artifacts.checkpoints)
    if name:
        source = f"{config.artifacts.checkpoints}/{name}"
        # Once per pod; the lock sits outside checkpoints/, where HF rotates checkpoint-*.
        resume_from = fetch_once(
            workdir / "checkpoints" / name,
            lambda target: store.download_tree(source, target),
            source=source,
            lock_file=workdir / f".{name}.lock",
        )
        log.info("resuming from %s", name)

    tokens_per_step = (
        config.training.batch_size
        * config.training.gradient_accumulation
        * config.training.max_seq_length
        * int(os.environ.get("WORLD_SIZE", "1"))
    )
    progress = ProgressReporter(
        store,
        config.artifacts.progress,
        tokens_per_step=tokens_per_step,
        interval=config.progress_interval_seconds,
    )
    sigterm = StopOnSigterm()
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set,
        data_collator=default_data_collator,
        callbacks=[
            progress,
            CheckpointUploader(store, config.artifacts.checkpoints, workdir / "checkpoints"),
            sigterm,
        ],
    )
    result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    if sigterm.requested:
        log.warning("stopped by SIGTERM at step %d; checkpoint saved", trainer.state.global_step)
        return SIGTERM_EXIT

    metrics: dict[str, Any] = {
        "train_loss": float(result.training_loss),  # the mean over the run
        "last_loss": progress.loss,  # the latest logged step's: what progress showed
        "steps": trainer.state.global_step,
        "tokens": train_set.tokens,
        "train_runtime_seconds": float(result.metrics.get("train_runtime", 0.0)),
        "skipped_rows": len(datasets.skipped),
    }
    if eval_set is not None:
        metrics["eval_loss"] = float(trainer.evaluate()["eval_loss"])
    adapter_dir = workdir / "adapter"
    trainer.save_model(str(adapter_dir))  # every rank: ZeRO-3 gathers here
    barrier()
    if is_main():
        _publish(
            config,
            store,
            workdir,
            adapter_dir,
            progress,
            model_path=model_path,
            trainable=trainable,
            total=total,
            metrics=metrics,
        )
    barrier()
    return 0


def _publish(
    config: TrainerConfig,
    store: Store,
    workdir: Path,
    adapter_dir: Path,
    progress: ProgressReporter,
    *,
    model_path: Path,
    trainable: int,
    total: int,
    metrics: dict[str, Any],
) -> None:
    for leftover in ("training_args.bin",):
        (adapter_dir / leftover).unlink(missing_ok=True)
    name_the_base_model(adapter_dir, config.model.uri)
    adapter_files = store.upload_tree(adapter_dir, config.artifacts.adapter)
    size = sum(p.stat().st_size for p in adapter_dir.rglob("*") if p.is_file())
    curve = workdir / "loss.png"
    plot_loss(progress.history, curve)
    store.write_bytes(config.artifacts.loss_curve, curve.read_bytes())
    datasets = {"train": dataset_digest(store, config.data.train)}
    if config.data.validation:
        datasets["validation"] = dataset_digest(store, config.data.validation)
    if config.data.replay:
        datasets["replay"] = dataset_digest(store, config.data.replay.dataset)
    document = manifest(
        config,
        adapter_files=adapter_files,
        adapter_bytes=size,
        extra_files={"loss.png": sha256_file(curve)},
        base_digest=model_digest(model_path),
        dataset_digests=datasets,
        trainable=trainable,
        total=total,
        metrics=metrics,
    )
    store.write_json(config.artifacts.manifest, document.to_json())  # last: the run is complete now
    log.info("manifest written: %s", config.artifacts.manifest)
