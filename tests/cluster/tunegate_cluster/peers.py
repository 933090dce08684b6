"""Running lm-evaluation-harness, the peer our eval scoring is checked against, offline
on a local JSONL task (`--include_path`): multiple choice by log-likelihood, and greedy
chat generation for exact-match and refusal suites."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

TASK = "tunegate_local_mc"
GENERATION_TASK = "tunegate_local_generation"


def _write_task_yaml(directory: Path, task: str, dataset: Path, lines: list[str]) -> Path:
    """A task over a local JSONL file (its test split), configured by `lines`."""
    directory.mkdir(parents=True, exist_ok=True)
    header = [
        f"task: {task}",
        "dataset_path: json",
        "dataset_kwargs:",
        "  data_files:",
        f"    test: {json.dumps(str(dataset.resolve()))}",
        "test_split: test",
    ]
    (directory / f"{task}.yaml").write_text("\n".join([*header, *lines, ""]))
    return directory


def write_task(directory: Path, dataset: Path) -> Path:
    """A multiple-choice task over our item format, scored as our eval scores it:
    the choice with the highest summed log-likelihood after "Question: ...\\nAnswer:"."""
    return _write_task_yaml(
        directory,
        TASK,
        dataset,
        [
            "output_type: multiple_choice",
            'doc_to_text: "Question: {{question}}\\nAnswer:"',
            "doc_to_choice: choices",
            "doc_to_target: answer",
            'target_delimiter: " "',
            "metric_list:",
            "  - metric: acc",
        ],
    )


def write_generation_task(
    directory: Path, dataset: Path, *, target: str, max_new_tokens: int
) -> Path:
    """A greedy generation task over our {"prompt": ...} items: the prompt as the user
    turn of the model's chat template (run with --apply_chat_template), stopping at the
    end-of-turn token or after max_new_tokens, as our eval generates. `target` is the
    item key lm-eval's own metric compares with; the answers are what we compare."""
    return _write_task_yaml(
        directory,
        GENERATION_TASK,
        dataset,
        [
            "output_type: generate_until",
            'doc_to_text: "{{prompt}}"',
            f'doc_to_target: "{{{{{target}}}}}"',
            "generation_kwargs:",
            "  until: []",
            "  do_sample: false",
            f"  max_gen_toks: {max_new_tokens}",
            "metric_list:",
            "  - metric: exact_match",
        ],
    )


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


@dataclass(frozen=True)
class PeerGeneration:
    answers: list[str]  # the generated text of each item, in dataset order
    seconds: float


def _run(
    model: Path,
    task_dir: Path,
    task: str,
    output: Path,
    *,
    adapter: Path | None,
    batch_size: int,
    extra: tuple[str, ...] = (),
) -> tuple[dict[str, float], list[dict[str, object]], float]:
    """(the task's results, its logged samples in dataset order, wall seconds)."""
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
            f"--tasks={task}",
            f"--include_path={task_dir}",
            "--device=cpu",
            f"--batch_size={batch_size}",
            f"--output_path={output}",
            "--log_samples",
            *extra,
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
    results = json.loads(results_file.read_text())["results"][task]
    samples_file = max(output.rglob(f"samples_{task}_*.jsonl"), key=lambda p: p.stat().st_mtime)
    samples = [json.loads(line) for line in samples_file.read_text().splitlines() if line]
    return results, sorted(samples, key=lambda s: int(s["doc_id"])), seconds


def run_lm_eval(
    model: Path, task_dir: Path, output: Path, *, adapter: Path | None = None
) -> PeerRun:
    results, samples, seconds = _run(model, task_dir, TASK, output, adapter=adapter, batch_size=8)
    per_item = [float(str(s["acc"])) for s in samples]
    return PeerRun(float(results["acc,none"]), per_item, seconds)


def run_lm_eval_generation(
    model: Path, task_dir: Path, output: Path, *, adapter: Path | None = None, batch_size: int
) -> PeerGeneration:
    _, samples, seconds = _run(
        model,
        task_dir,
        GENERATION_TASK,
        output,
        adapter=adapter,
        batch_size=batch_size,
        extra=("--apply_chat_template",),
    )
    answers = []
    for sample in samples:
        filtered = sample["filtered_resps"]
        answers.append(str(filtered[0] if isinstance(filtered, list) else filtered))
    return PeerGeneration(answers, seconds)
