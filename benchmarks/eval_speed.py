"""Eval speed against lm-evaluation-harness on the same multiple-choice task.

Baseline: lm-eval run twice (base, then base + adapter via `peft=`), as a team would
to compare the two. Ours: `Scorer` scoring base and candidate in one model load. Same
model (SmolLM2-135M-Instruct), same adapter, same items, CPU, fp32. Accuracies are
printed too: they must be equal (tests/integration/test_lm_eval_parity.py asserts it).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from tunegate_cluster.peers import random_adapter, run_lm_eval, write_task

ROOT = Path(__file__).resolve().parents[1]
DATASET = ROOT / "examples" / "data" / "nimbus" / "eval.jsonl"
PROMPTS = ROOT / "examples" / "data" / "safety" / "prompts.jsonl"
NEW_TOKENS = 16


def _ours(model: Path, adapter: Path) -> tuple[float, float, float]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunegate_contract.eval_config import Suite
    from tunegate_trainer.evaluate import Scorer, score_suite
    from tunegate_trainer.modeling import load_tokenizer

    started = time.monotonic()
    items = [json.loads(line) for line in DATASET.read_text().splitlines() if line]
    base = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    scorer = Scorer(PeftModel.from_pretrained(base, str(adapter)), load_tokenizer(model))
    suite = Suite(name="mc", role="target", metric="multipleChoiceAccuracy", dataset=str(DATASET))
    scored = score_suite(scorer, suite, items)
    seconds = time.monotonic() - started
    n = len(items)
    return seconds, sum(scored.base) / n, sum(scored.candidate) / n


def _generation(model: Path, adapter: Path) -> tuple[float, float, int, int]:
    """Refusal-suite generation (the candidate side): one prompt at a time, the way
    the eval command generated before, against its batched generation. Returns the
    seconds of each and how many of the answers differ."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunegate_trainer import evaluate
    from tunegate_trainer.modeling import load_tokenizer

    prompts = [json.loads(line)["prompt"] for line in PROMPTS.read_text().splitlines() if line]
    base = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    scorer = evaluate.Scorer(PeftModel.from_pretrained(base, str(adapter)), load_tokenizer(model))
    with torch.no_grad():
        started = time.monotonic()
        alone = [scorer.generate([prompt], NEW_TOKENS)[0] for prompt in prompts]
        one_at_a_time = time.monotonic() - started
        started = time.monotonic()
        batched = scorer.generate(prompts, NEW_TOKENS)
        together = time.monotonic() - started
    differ = sum(a != b for a, b in zip(alone, batched, strict=True))
    return one_at_a_time, together, differ, len(prompts)


def main() -> None:
    from tunegate_trainer.smollm2 import prepare

    model = prepare()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        adapter = random_adapter(model, work / "adapter")
        task = write_task(work / "task", DATASET)
        ours_seconds, ours_base, ours_candidate = _ours(model, adapter)
        alone_seconds, batched_seconds, differ, prompts = _generation(model, adapter)
        peer_base = run_lm_eval(model, task, work / "base")
        peer_candidate = run_lm_eval(model, task, work / "peft", adapter=adapter)
    peer_seconds = peer_base.seconds + peer_candidate.seconds
    items = len(DATASET.read_text().splitlines())
    print(f"task: {DATASET.relative_to(ROOT)} ({items} items x 4 choices), SmolLM2-135M, CPU fp32")
    print(
        f"lm-eval (baseline, 2 runs): {peer_seconds:7.1f} s   "
        f"acc base {peer_base.accuracy:.3f} candidate {peer_candidate.accuracy:.3f}"
    )
    print(
        f"tunegate eval (1 load):     {ours_seconds:7.1f} s   "
        f"acc base {ours_base:.3f} candidate {ours_candidate:.3f}"
    )
    print(f"speed-up vs lm-eval: {peer_seconds / ours_seconds:.2f}x")
    print(
        f"generation ({PROMPTS.relative_to(ROOT)}, {prompts} prompts, {NEW_TOKENS} new tokens): "
        f"one at a time {prompts / alone_seconds:.2f} items/s, batched "
        f"{prompts / batched_seconds:.2f} items/s ({alone_seconds / batched_seconds:.2f}x); "
        f"answers that differ: {differ}"
    )
