"""Our multiple-choice accuracy equals lm-evaluation-harness's, item by item, for the
base model and for base + adapter (SmolLM2-135M-Instruct, the demo's routing task)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tunegate_cluster.peers import random_adapter, run_lm_eval, write_task

ROOT = Path(__file__).resolve().parents[2]
DATASET = ROOT / "examples" / "data" / "nimbus" / "eval.jsonl"


def our_scores(model: Path, adapter: Path, items: list[dict[str, Any]]) -> dict[str, list[float]]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from tunegate_contract.eval_config import Suite
    from tunegate_trainer.evaluate import Scorer, score_suite
    from tunegate_trainer.modeling import load_tokenizer

    base = AutoModelForCausalLM.from_pretrained(str(model), dtype=torch.float32)
    scorer = Scorer(PeftModel.from_pretrained(base, str(adapter)), load_tokenizer(model))
    suite = Suite(
        name="routing", role="target", metric="multipleChoiceAccuracy", dataset=str(DATASET)
    )
    scored = score_suite(scorer, suite, items)
    return {"base": scored.base, "candidate": scored.candidate}


@pytest.mark.timeout(1800)
def test_multiple_choice_accuracy_matches_lm_evaluation_harness(tmp_path: Path) -> None:
    from tunegate_trainer.smollm2 import prepare

    model = prepare()
    adapter = random_adapter(model, tmp_path / "adapter")
    items = [json.loads(line) for line in DATASET.read_text().splitlines() if line]
    ours = our_scores(model, adapter, items)
    task = write_task(tmp_path / "task", DATASET)
    peer_base = run_lm_eval(model, task, tmp_path / "lm-eval-base")
    peer_candidate = run_lm_eval(model, task, tmp_path / "lm-eval-peft", adapter=adapter)

    assert len(peer_base.per_item) == len(items)
    assert ours["base"] == peer_base.per_item
    assert ours["candidate"] == peer_candidate.per_item
    assert sum(ours["base"]) / len(items) == pytest.approx(peer_base.accuracy, abs=1e-9)
    assert sum(ours["candidate"]) / len(items) == pytest.approx(peer_candidate.accuracy, abs=1e-9)
    # The adapter changed some answers: the comparison is not trivially equal.
    assert ours["base"] != ours["candidate"]
