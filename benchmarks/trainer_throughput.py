"""Training throughput of `tunegate_trainer train` against a plain HF Trainer + peft
script (per-example tokenisation, dynamic padding) on the same model (SmolLM2-135M),
data, hyper-parameters and epochs, measured in the same run; plus each side's peak
memory next to the operator's planner estimate for the same configuration.

Three variants: the padded baseline, tunegate's isolated packing (each example
attends only to itself: the trainer's mode) and the older concatenated packing
(examples attend to the ones before them in a block). Tokens are real tokens, never
padding, so the rates compare like with like.

On a CPU-only machine "peak memory" is the process's peak RSS growth during
training; the planner estimates GPU memory, so the comparison is indicative.
"""

from __future__ import annotations

import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SEQ = 256
BATCH = 2  # packed blocks per step (tunegate); the baseline's batch is derived from it
# TUNEGATE_BENCH_QUICK=1: a few rows and one epoch, to check the benchmark runs (CI).
QUICK = os.environ.get("TUNEGATE_BENCH_QUICK") == "1"
EPOCHS = 1 if QUICK else 2
LR = 2e-3
ROWS = 24 if QUICK else 96
TRAIN_ROWS = ROWS * 5 // 6  # the rest are held out


def _rows() -> list[dict[str, Any]]:
    """Chat rows of varied length, as real instruction data is."""
    rng = random.Random(0)
    words = [
        "the",
        "model",
        "learns",
        "a",
        "narrow",
        "task",
        "while",
        "keeping",
        "what",
        "it",
        "already",
        "knew",
        "about",
        "many",
        "general",
        "topics",
        "such",
        "as",
        "rivers",
        "cities",
        "music",
        "science",
        "history",
        "and",
        "cooking",
    ]
    rows = []
    for i in range(ROWS):
        question = " ".join(rng.choice(words) for _ in range(rng.randint(4, 30)))
        answer = " ".join(rng.choice(words) for _ in range(rng.choice([3, 8, 20, 60, 120])))
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": f"({i}) {question}?"},
                    {"role": "assistant", "content": answer},
                ]
            }
        )
    return rows


def _config(model: Path, work: Path, packing: str) -> dict[str, Any]:
    return {
        "run": {"namespace": "bench", "name": "bench", "uid": "bench", "attempt": 1},
        "model": {"uri": str(model)},
        "data": {
            "train": str(work / "train.jsonl"),
            "validation": str(work / "val.jsonl"),
            "validation_split": 0.0,
            "format": "chat",
            "on_malformed_row": "fail",
        },
        "method": "lora",
        "lora": {"rank": 8, "alpha": 16, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
        "training": {
            "epochs": EPOCHS,
            "learning_rate": LR,
            "batch_size": BATCH,
            "gradient_accumulation": 1,
            "max_seq_length": SEQ,
            "seed": 0,
            "precision": "fp32",
            "gradient_checkpointing": False,
            "warmup_ratio": 0.0,
            "checkpoint_every": 10_000,
            "packing": packing,
        },
        "audit": {
            "mode": "off",
            "max_duplicate_fraction": 1,
            "max_pii_fraction": 1,
            "contamination_sets": [],
            "max_contamination_fraction": 1,
            "block_triggers": False,
        },
        "artifacts": {
            name: str(work / f"out-{packing}" / leaf)
            for name, leaf in (
                ("checkpoints", "checkpoints"),
                ("adapter", "adapter"),
                ("manifest", "manifest.json"),
                ("progress", "progress.json"),
                ("audit_report", "audit.json"),
                ("loss_curve", "loss.png"),
            )
        },
        "storage": {"endpoint": None, "region": "us-east-1"},
    }


def per_example_eval_loss(model: Any, tokenizer: Any, path: Path) -> float:
    """Mean per-token loss on the validation rows, one unpadded example at a time: the
    same measurement for both sides, whatever their training batches looked like."""
    import torch

    from tunegate_trainer.data import render_chat

    total = count = 0.0
    model.eval()
    with torch.no_grad():
        for line in path.read_text().splitlines():
            prompt, target = render_chat(json.loads(line)["messages"])
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            t = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ids = torch.tensor([(p + t)[:SEQ]])
            labels = torch.tensor([([-100] * len(p) + t)[:SEQ]])
            n = int((labels[:, 1:] != -100).sum())
            total += float(model(input_ids=ids, labels=labels).loss) * n
            count += n
    return total / count


def _ours(model: Path, work: Path, packing: str) -> dict[str, float]:
    from tunegate_contract.trainer_config import TrainerConfig
    from tunegate_trainer.storage import Store
    from tunegate_trainer.train import run

    config = TrainerConfig.model_validate(_config(model, work, packing))
    out = work / f"out-{packing}"
    run(config, Store(endpoint=None), workdir=work / f"scratch-{packing}")
    metrics = json.loads((out / "manifest.json").read_text())["final_metrics"]
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tuned = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(model)), str(out / "adapter")
    )
    loss = per_example_eval_loss(
        tuned, AutoTokenizer.from_pretrained(str(model)), work / "val.jsonl"
    )
    return {
        "tokens": metrics["tokens"] * EPOCHS,
        "seconds": metrics["train_runtime_seconds"],
        "eval_loss": loss,
        "steps": metrics["steps"],
    }


def _baseline(model: Path, work: Path, batch: int) -> dict[str, float]:
    """What a typical peft SFT script does: one padded example per row."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    from tunegate_trainer.data import render_chat

    tokenizer = AutoTokenizer.from_pretrained(str(model))
    tokenizer.pad_token = tokenizer.pad_token or tokenizer.eos_token

    def encode(path: Path) -> list[dict[str, list[int]]]:
        items = []
        for line in path.read_text().splitlines():
            prompt, target = render_chat(json.loads(line)["messages"])
            p = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            t = tokenizer(target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
            ids = (p + t)[:SEQ]
            items.append(
                {
                    "input_ids": ids,
                    "attention_mask": [1] * len(ids),
                    "labels": ([-100] * len(p) + t)[:SEQ],
                }
            )
        return items

    train, validation = encode(work / "train.jsonl"), encode(work / "val.jsonl")
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    peft_model = get_peft_model(
        base,
        LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules=["q_proj", "v_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    args = TrainingArguments(
        output_dir=str(work / "baseline"),
        per_device_train_batch_size=batch,
        per_device_eval_batch_size=batch,
        num_train_epochs=EPOCHS,
        learning_rate=LR,
        lr_scheduler_type="linear",
        seed=0,
        use_cpu=not torch.cuda.is_available(),
        report_to=[],
        save_strategy="no",
        logging_steps=10,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=peft_model,
        args=args,
        train_dataset=train,
        eval_dataset=validation,
        data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True),
    )
    result = trainer.train()
    tokens = sum(len(item["input_ids"]) for item in train) * EPOCHS
    return {
        "tokens": tokens,
        "seconds": float(result.metrics["train_runtime"]),
        "eval_loss": per_example_eval_loss(peft_model, tokenizer, work / "val.jsonl"),
        "steps": trainer.state.global_step,
    }


def _side(name: str, model: str, work: str, baseline_batch: int) -> None:
    """One side in its own process, so peak RSS is its own."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    if name == "baseline":
        result = _baseline(Path(model), Path(work), baseline_batch)
    else:
        result = _ours(Path(model), Path(work), packing=name)
    result["peak_rss_growth_gib"] = (
        resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    ) / 1024**2
    result["wall_seconds"] = time.monotonic() - started
    print("RESULT " + json.dumps(result))


def _run_side(name: str, model: Path, work: Path, baseline_batch: int = 0) -> dict[str, float]:
    output = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.trainer_throughput",
            "--side",
            name,
            str(model),
            str(work),
            str(baseline_batch),
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "TOKENIZERS_PARALLELISM": "false"},
    ).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    return dict(json.loads(line[len("RESULT ") :]))


def _planner_estimate(model: Path) -> float:
    from tunegate_operator.planner.memory import GIB, RunShape, estimate
    from tunegate_operator.planner.shapes import shape_from_hf_config

    shape = shape_from_hf_config(json.loads((model / "config.json").read_text()))
    run = RunShape(
        method="lora",
        precision="fp32",
        lora_rank=8,
        lora_targets=("q_proj", "v_proj"),
        seq_length=SEQ,
        micro_batch=BATCH,
        gradient_checkpointing=False,
        zero_stage=0,
        offload_optimizer=False,
        gpus=1,
    )
    return estimate(shape, run).total_bytes / GIB


def main() -> None:
    from tunegate_trainer.smollm2 import prepare

    model = prepare()
    work = Path(tempfile.mkdtemp(prefix="tunegate-bench-train-"))
    rows = _rows()
    (work / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[:TRAIN_ROWS]))
    (work / "val.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows[TRAIN_ROWS:]))
    isolated = _run_side("isolated", model, work)
    # The baseline steps at least as often as isolated packing over the same tokens, so
    # a better loss cannot come from more optimizer steps.
    baseline_batch = max(1, int(TRAIN_ROWS * EPOCHS / isolated["steps"]))
    sides = {
        "baseline": (
            "HF Trainer + peft, padded",
            _run_side("baseline", model, work, baseline_batch),
        ),
        "concatenated": ("tunegate, concatenated packing", _run_side("concatenated", model, work)),
        "isolated": ("tunegate, isolated packing", isolated),
    }
    base_rate = sides["baseline"][1]["tokens"] / sides["baseline"][1]["seconds"]
    print(
        f"LoRA r=8 on SmolLM2-135M, {EPOCHS} epochs, lr {LR}, seq {SEQ}, CPU; batch: "
        f"{BATCH} packed blocks (tunegate) vs {baseline_batch} padded examples (baseline)"
    )
    for label, result in sides.values():
        rate = result["tokens"] / result["seconds"]
        print(
            f"  {label:32} {rate:8.1f} tokens/s ({rate / base_rate:.2f}x)  "
            f"held-out loss {result['eval_loss']:.4f}  {result['steps']:.0f} steps  "
            f"peak RSS +{result['peak_rss_growth_gib']:.2f} GiB"
        )
    print(
        "  held-out loss is the same per-example measurement on the held-out rows for all; "
        "goal: isolated >= 2x the baseline at equal or better loss"
    )
    print(f"  planner estimate for this config: {_planner_estimate(model):.2f} GiB per device")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--side":
        _side(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))
    else:
        main()
