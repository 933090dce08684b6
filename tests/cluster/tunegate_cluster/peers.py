"""Running lm-evaluation-harness, the peer our multiple-choice scoring is checked
against, offline on a local JSONL task (`--include_path`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TASK = "tunegate_local_mc"


def write_task(directory: Path, dataset: Path) -> Path:
    """A multiple-choice task over our item format, scored as our eval scores it:
    the choice with the highest summed log-likelihood after "Question: ...\\nAnswer:"."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{TASK}.yaml").write_text(
        "\n".join(
            [
                f"task: {TASK}",
                "dataset_path: json",
                "dataset_kwargs:",
                "  data_files:",
                f"    test: {json.dumps(str(dataset.resolve()))}",
                "test_split: test",
                "output_type: multiple_choice",
                'doc_to_text: "Question: {{question}}\\nAnswer:"',
                "doc_to_choice: choices",
                "doc_to_target: answer",
                'target_delimiter: " "',
                "metric_list:",
                "  - metric: acc",
                "",
            ]
        )
    )
    return directory


def random_adapter(model: Path, target: Path) -> Path:
    """A LoRA adapter with random (non-zero) B, so base and candidate really differ."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(3)
    base = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    config = LoraConfig(
        r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"], init_lora_weights=False
    )
    get_peft_model(base, config).save_pretrained(str(target))
    return target


@dataclass(frozen=True)
class PeerRun:
    accuracy: float
    per_item: list[float]  # 1.0 where the peer picked the right choice, in dataset order
    seconds: float


def run_lm_eval(
    model: Path, task_dir: Path, output: Path, *, adapter: Path | None = None
) -> PeerRun:
    model_args = f"pretrained={model},dtype=float32"
    if adapter is not None:
        model_args += f",peft={adapter}"
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_DATASETS_CACHE": str(output / "datasets-cache"),
        "TOKENIZERS_PARALLELISM": "false",
    }
    started = time.monotonic()
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "lm_eval"),
            "--model=hf",
            f"--model_args={model_args}",
            f"--tasks={TASK}",
            f"--include_path={task_dir}",
            "--device=cpu",
            "--batch_size=8",
            f"--output_path={output}",
            "--log_samples",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    seconds = time.monotonic() - started
    if result.returncode != 0:
        raise RuntimeError(f"lm_eval failed:\n{result.stderr[-4000:]}")
    results_file = max(output.rglob("results_*.json"), key=lambda p: p.stat().st_mtime)
    accuracy = float(json.loads(results_file.read_text())["results"][TASK]["acc,none"])
    samples_file = max(output.rglob(f"samples_{TASK}_*.jsonl"), key=lambda p: p.stat().st_mtime)
    samples = [json.loads(line) for line in samples_file.read_text().splitlines() if line]
    per_item = [float(s["acc"]) for s in sorted(samples, key=lambda s: int(s["doc_id"]))]
    return PeerRun(accuracy, per_item, seconds)
