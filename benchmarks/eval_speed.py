"""Eval speed per metric against lm-evaluation-harness on the same items, in one run.

Baseline: lm-eval run twice per suite (base, then base + adapter via `peft=`), as a
team would to compare the two. Ours: the eval command's `score_suite`, scoring base and
candidate in one model load. Same model (SmolLM2-135M-Instruct), same random adapter,
same items, CPU, fp32; each side's time includes loading the model.

- multipleChoiceAccuracy: lm-eval's `multiple_choice` (acc).
- exactMatch, refusal: lm-eval's `generate_until` with the chat template, greedy, the
  same new-token budget and batch size; its answers are scored by our rule, so equal
  answers give equal scores.
- perplexity and kl: ours only. lm-eval's `loglikelihood_rolling` reports aggregate
  word/byte perplexity, not a per-item token perplexity to compare item by item.

Every row prints how many items' scores differ from lm-eval's (0 is the goal).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunegate_cluster.peers import (
    random_adapter,
    run_lm_eval,
    run_lm_eval_generation,
    write_generation_task,
    write_task,
)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "data"
# TUNEGATE_BENCH_QUICK=1: a few items and tokens, to check the benchmark runs (CI).
QUICK = os.environ.get("TUNEGATE_BENCH_QUICK") == "1"
ITEMS = 8 if QUICK else None
NEW_TOKENS = 8 if QUICK else 32
BATCH = 16  # lm-eval's batch size for generation; ours is evaluate.GENERATION_BATCH


@dataclass(frozen=True)
class Row:
    metric: str
    items: int
    ours_seconds: float
    peer_seconds: float | None = None
    differ: int | None = None  # items whose base or candidate score differs from lm-eval's

    def line(self) -> str:
        ours = 2 * self.items / self.ours_seconds
        text = f"  {self.metric:23} {self.items:4d} items  tunegate {ours:6.2f} items/s"
        if self.peer_seconds is None:
            return text + "   (no per-item lm-eval equivalent)"
        peer = 2 * self.items / self.peer_seconds
        return (
            text + f"   lm-eval {peer:6.2f} items/s   {ours / peer:5.2f}x   "
            f"scores that differ: {self.differ}"
        )


def _read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


def _items(path: Path, work: Path) -> Path:
    """The dataset both sides score: all of it, or its first ITEMS in quick mode."""
    if ITEMS is None:
        return path
    subset = work / f"quick-{path.parent.name}-{path.name}"
    subset.write_text("".join(json.dumps(item) + "\n" for item in _read(path)[:ITEMS]))
    return subset


def _ours(
    model: Path, adapter: Path, metric: str, dataset: Path
) -> tuple[float, list[float], list[float]]:
    """Seconds (model load included), base scores, candidate scores."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunegate_contract.eval_config import Suite
    from tunegate_trainer.evaluate import Scorer, score_suite
    from tunegate_trainer.modeling import load_tokenizer

    started = time.monotonic()
    base = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    scorer = Scorer(PeftModel.from_pretrained(base, str(adapter)), load_tokenizer(model))
    suite = Suite(
        name=metric,
        role="target",
        metric=metric,  # type: ignore[arg-type]
        dataset=f"s3://bench/{dataset.name}",
        max_new_tokens=NEW_TOKENS,
    )
    scored = score_suite(scorer, suite, _read(dataset))
    return time.monotonic() - started, list(scored.base or []), list(scored.candidate)


def _generated_scores(metric: str, items: list[dict[str, Any]], answers: list[str]) -> list[float]:
    from tunegate_trainer.evaluate import normalise_answer
    from tunegate_trainer.refusal import is_refusal

    if metric == "exactMatch":
        return [
            float(normalise_answer(answer) == normalise_answer(str(item["answer"])))
            for item, answer in zip(items, answers, strict=True)
        ]
    return [
        float(is_refusal(answer) if item["harmful"] else not is_refusal(answer))
        for item, answer in zip(items, answers, strict=True)
    ]


def _differ(ours: tuple[list[float], list[float]], peer: tuple[list[float], list[float]]) -> int:
    pairs = zip(*ours, *peer, strict=True)
    return sum(ob != pb or oc != pc for ob, oc, pb, pc in pairs)


def _multiple_choice(model: Path, adapter: Path, work: Path) -> Row:
    dataset = _items(DATA / "nimbus" / "eval.jsonl", work)
    seconds, base, candidate = _ours(model, adapter, "multipleChoiceAccuracy", dataset)
    task = write_task(work / "mc-task", dataset)
    peer_base = run_lm_eval(model, task, work / "mc-base")
    peer_candidate = run_lm_eval(model, task, work / "mc-peft", adapter=adapter)
    return Row(
        "multipleChoiceAccuracy",
        len(base),
        seconds,
        peer_base.seconds + peer_candidate.seconds,
        _differ((base, candidate), (peer_base.per_item, peer_candidate.per_item)),
    )


def _generation(model: Path, adapter: Path, work: Path, metric: str, dataset: Path) -> Row:
    items = _read(dataset)
    seconds, base, candidate = _ours(model, adapter, metric, dataset)
    target = "answer" if metric == "exactMatch" else "harmful"
    task = write_generation_task(
        work / f"{metric}-task", dataset, target=target, max_new_tokens=NEW_TOKENS
    )
    peer = [
        run_lm_eval_generation(
            model, task, work / f"{metric}-{side}", adapter=side_adapter, batch_size=BATCH
        )
        for side, side_adapter in (("base", None), ("peft", adapter))
    ]
    peer_scores = (
        _generated_scores(metric, items, peer[0].answers),
        _generated_scores(metric, items, peer[1].answers),
    )
    return Row(
        metric,
        len(items),
        seconds,
        peer[0].seconds + peer[1].seconds,
        _differ((base, candidate), peer_scores),
    )


def _exact_match_items(work: Path) -> Path:
    """The general multiple-choice questions asked open-ended: the right choice is the
    expected answer."""
    path = work / "exact-match.jsonl"
    rows = [
        {"prompt": item["question"], "answer": item["choices"][int(item["answer"])]}
        for item in _read(DATA / "general" / "mc.jsonl")
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return _items(path, work)


def _perplexity_items(work: Path) -> Path:
    path = work / "perplexity.jsonl"
    rows = [
        {"text": item["prompt"]} for item in _read(DATA / "general" / "reference-prompts.jsonl")
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _alone_vs_batched(model: Path, adapter: Path, dataset: Path) -> str:
    """Refusal prompts generated one at a time (how the eval command generated before)
    against its batches: the speed-up of batching, and that the answers are the same."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunegate_trainer.evaluate import Scorer
    from tunegate_trainer.modeling import load_tokenizer

    prompts = [str(item["prompt"]) for item in _read(dataset)]
    base = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    scorer = Scorer(PeftModel.from_pretrained(base, str(adapter)), load_tokenizer(model))
    with torch.no_grad():
        started = time.monotonic()
        alone = [scorer.generate([prompt], NEW_TOKENS)[0] for prompt in prompts]
        one_at_a_time = time.monotonic() - started
        started = time.monotonic()
        batched = scorer.generate(prompts, NEW_TOKENS)
        together = time.monotonic() - started
    differ = sum(a != b for a, b in zip(alone, batched, strict=True))
    return (
        f"  refusal generation, candidate side: one prompt at a time "
        f"{len(prompts) / one_at_a_time:.2f} items/s, batched {len(prompts) / together:.2f} "
        f"items/s ({one_at_a_time / together:.2f}x); answers that differ: {differ}"
    )


def main() -> None:
    from tunegate_trainer.smollm2 import prepare

    model = prepare()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        adapter = random_adapter(model, work / "adapter")
        refusal = _items(DATA / "safety" / "prompts.jsonl", work)
        rows = [
            _multiple_choice(model, adapter, work),
            _generation(model, adapter, work, "exactMatch", _exact_match_items(work)),
            _generation(model, adapter, work, "refusal", refusal),
        ]
        for metric, dataset in (
            ("perplexity", _perplexity_items(work)),
            ("kl", _items(DATA / "general" / "reference-prompts.jsonl", work)),
        ):
            seconds, _, _ = _ours(model, adapter, metric, dataset)
            rows.append(Row(metric, len(_read(dataset)), seconds))
        batching = _alone_vs_batched(model, adapter, refusal)
    print(
        f"SmolLM2-135M-Instruct + random LoRA, CPU fp32; items/s counts both sides "
        f"(base and candidate), model loads included; generation: {NEW_TOKENS} new tokens"
    )
    print("baseline: lm-evaluation-harness, one run per side")
    for row in rows:
        print(row.line())
    print(batching)
