"""`python -m tunegate_trainer eval`: score base and candidate on the same items in one
model load (adapter disabled / enabled) and write per-item scores. The operator turns
them into paired intervals and a verdict; this command never decides anything.

Suite item formats (JSON Lines):
- multipleChoiceAccuracy: {"question", "choices": [...], "answer": <index>}; the choice
  with the highest summed log-likelihood after "Question: ...\\nAnswer:" is picked
  (as lm-evaluation-harness scores `acc`).
- exactMatch: {"prompt", "answer"}; greedy chat completion, normalised comparison.
- perplexity: {"text"}; per-item perplexity (lower is better).
- kl: {"prompt"}; mean per-token KL(base || candidate) over the prompt's positions.
- refusal: {"prompt", "harmful": bool}; 1 when the model refuses a harmful prompt or
  answers a benign one.
"""

from __future__ import annotations

import logging
import math
import string
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch

from tunegate_contract.base import now_rfc3339
from tunegate_contract.eval_config import EvalConfig, Suite
from tunegate_contract.eval_results import EvalResults, ScoredSuite
from tunegate_trainer.data import DataError, parse_lines
from tunegate_trainer.eval_items import checked_items
from tunegate_trainer.modeling import DTYPES, fetch_model, load_tokenizer
from tunegate_trainer.refusal import is_refusal
from tunegate_trainer.storage import Store

log = logging.getLogger("tunegate.eval")
GENERATION_BATCH = 16  # prompts generated together (left-padded, KV cache on)


def normalise_answer(text: str) -> str:
    first = text.strip().splitlines()[0] if text.strip() else ""
    cleaned = first.lower().translate(str.maketrans("", "", string.punctuation))
    return " ".join(cleaned.split())


def placement(
    precision: str, *, cuda: bool, bf16_supported: bool
) -> tuple[str, torch.dtype, str | None]:
    """(device, dtype, warning): the GPU when the pod has one, in the precision asked if
    the device can compute in it. bf16 falls back to fp16 on GPUs without it (V100, T4);
    on a CPU everything is scored in fp32 (half precision there is slow and inexact)."""
    if not cuda:
        warning = (
            None
            if precision == "fp32"
            else f"no GPU visible: scoring in fp32 on the CPU instead of {precision}"
        )
        return "cpu", torch.float32, warning
    if precision == "bf16" and not bf16_supported:
        return "cuda", torch.float16, "this GPU has no bf16: scoring in fp16"
    return "cuda", DTYPES[precision], None


class Scorer:
    """One loaded model; `side` switches between base (adapter off) and candidate."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.device = next(model.parameters()).device

    def _tensor(self, rows: list[list[int]]) -> torch.Tensor:
        return torch.tensor(rows, device=self.device)

    @contextmanager
    def side(self, name: str) -> Iterator[None]:
        context = self.model.disable_adapter() if name == "base" else nullcontext()
        with torch.no_grad(), context:
            yield

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def continuation_logprobs(self, context: str, continuations: list[str]) -> list[float]:
        """Summed log-probability of each continuation after context, all in one batch."""
        # Tokenise each pair together and split, so merges across the boundary match how
        # the text would really be tokenised (lm-evaluation-harness does the same).
        context_length = len(self._encode(context))
        sequences = [self._encode(context + c) for c in continuations]
        width = max(len(s) for s in sequences)
        # Right padding: causal attention keeps every real position's logits unchanged.
        ids = self._tensor([s + [0] * (width - len(s)) for s in sequences])
        mask = self._tensor([[1] * len(s) + [0] * (width - len(s)) for s in sequences])
        logprobs = self.model(input_ids=ids, attention_mask=mask).logits[:, :-1]
        logprobs = logprobs.float().log_softmax(-1)
        picked = logprobs.gather(-1, ids[:, 1:, None])[..., 0]
        return [
            float(picked[row, context_length - 1 : len(sequence) - 1].sum())
            for row, sequence in enumerate(sequences)
        ]

    def multiple_choice(self, item: dict[str, Any]) -> float:
        context = f"Question: {item['question']}\nAnswer:"
        scores = self.continuation_logprobs(context, [f" {c}" for c in item["choices"]])
        return float(int(max(range(len(scores)), key=scores.__getitem__)) == int(item["answer"]))

    def generate(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        """Greedy chat completions, GENERATION_BATCH prompts at a time: left-padded, so
        every prompt ends where generation starts, with the KV cache on."""
        answers: list[str] = []
        pad = self.tokenizer.pad_token_id
        pad = pad if pad is not None else self.tokenizer.eos_token_id
        for start in range(0, len(prompts), GENERATION_BATCH):
            encoded = [
                self._encode(
                    self.tokenizer.apply_chat_template(
                        [{"role": "user", "content": prompt}],
                        add_generation_prompt=True,
                        tokenize=False,
                    )
                )
                for prompt in prompts[start : start + GENERATION_BATCH]
            ]
            width = max(len(ids) for ids in encoded)
            ids = self._tensor([[pad] * (width - len(row)) + row for row in encoded])
            mask = self._tensor([[0] * (width - len(row)) + [1] * len(row) for row in encoded])
            output = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=pad,
                use_cache=True,
            )
            answers += [
                str(self.tokenizer.decode(row[width:], skip_special_tokens=True)) for row in output
            ]
        return answers

    def exact_match(self, items: list[dict[str, Any]], max_new_tokens: int) -> list[float]:
        answers = self.generate([str(item["prompt"]) for item in items], max_new_tokens)
        return [
            float(normalise_answer(answer) == normalise_answer(str(item["answer"])))
            for item, answer in zip(items, answers, strict=True)
        ]

    def perplexity(self, item: dict[str, Any]) -> float:
        ids = self._tensor([self._encode(item["text"])])
        if ids.shape[1] < 2:
            raise ValueError("text is too short to score")
        return float(math.exp(float(self.model(ids, labels=ids).loss)))

    def next_token_logprobs(self, prompt: str) -> torch.Tensor:
        ids = self._tensor([self._encode(prompt)])
        logits: torch.Tensor = self.model(ids).logits[0]
        return logits.float().log_softmax(-1)

    def refusal(self, items: list[dict[str, Any]], max_new_tokens: int) -> list[float]:
        answers = self.generate([str(item["prompt"]) for item in items], max_new_tokens)
        return [
            float(is_refusal(answer) if item["harmful"] else not is_refusal(answer))
            for item, answer in zip(items, answers, strict=True)
        ]


def score_suite(scorer: Scorer, suite: Suite, items: list[dict[str, Any]]) -> ScoredSuite:
    groups = item_groups(suite, items)  # before scoring: a missing key fails fast
    if suite.metric == "kl":
        values = []
        for index, item in enumerate(items):
            with scorer.side("base"):
                base = scorer.next_token_logprobs(item["prompt"])
            with scorer.side("candidate"):
                candidate = scorer.next_token_logprobs(item["prompt"])
            per_token = (base.exp() * (base - candidate)).sum(-1)
            values.append(float(per_token.mean()))
            if not math.isfinite(values[-1]):
                raise DataError(f"suite {suite.name}: item {index + 1}: KL is not finite")
        return ScoredSuite(
            name=suite.name,
            role=suite.role,
            metric=suite.metric,
            items=len(items),
            candidate=values,
            groups=groups,
        )
    sides: dict[str, list[float]] = {}
    for side in ("base", "candidate"):
        with scorer.side(side):
            sides[side] = _side_scores(scorer, suite, items)
    return ScoredSuite(
        name=suite.name,
        role=suite.role,
        metric=suite.metric,
        items=len(items),
        base=sides["base"],
        candidate=sides["candidate"],
        groups=groups,
    )


# Generation runs in batches; these keys are checked first, so a malformed item is
# named before any batch runs.
GENERATED: dict[str, tuple[str, ...]] = {
    "exactMatch": ("prompt", "answer"),
    "refusal": ("prompt", "harmful"),
}


def _side_scores(scorer: Scorer, suite: Suite, items: list[dict[str, Any]]) -> list[float]:
    """One side's per-item scores (the adapter switched by the caller)."""
    if suite.metric in GENERATED:
        for index, item in enumerate(items):
            missing = [key for key in GENERATED[suite.metric] if key not in item]
            if missing:
                raise DataError(
                    f"suite {suite.name}: item {index + 1} ({suite.dataset}) is malformed "
                    f"for metric {suite.metric}: missing {missing}"
                )
        generate = scorer.exact_match if suite.metric == "exactMatch" else scorer.refusal
        return generate(items, suite.max_new_tokens)
    score: Callable[[dict[str, Any]], float] = {
        "multipleChoiceAccuracy": scorer.multiple_choice,
        "perplexity": scorer.perplexity,
    }[suite.metric]
    values = []
    for index, item in enumerate(items):
        try:
            values.append(score(item))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise DataError(
                f"suite {suite.name}: item {index + 1} ({suite.dataset}) "
                f"is malformed for metric {suite.metric}: {exc!r}"
            ) from None
    return values


def item_groups(suite: Suite, items: list[dict[str, Any]]) -> list[str] | None:
    """Each item's cluster label (the suite's groupBy key), for a cluster-robust gate."""
    if suite.group_by is None:
        return None
    labels = []
    for index, item in enumerate(items):
        if suite.group_by not in item:
            raise DataError(
                f"suite {suite.name}: item {index + 1} ({suite.dataset}) has no key "
                f"{suite.group_by!r} (groupBy)"
            )
        labels.append(str(item[suite.group_by]))
    return labels


def load_scorer(store: Store, config: EvalConfig, workdir: Path) -> Scorer:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base_path = fetch_model(store, config.base_model.uri, config.base_model.revision)
    adapter_path = store.download_tree(config.adapter, workdir / "adapter")
    tokenizer = load_tokenizer(base_path)
    cuda = torch.cuda.is_available()
    device, dtype, warning = placement(
        config.precision, cuda=cuda, bf16_supported=cuda and torch.cuda.is_bf16_supported()
    )
    if warning:
        log.warning(warning)
    base = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=dtype, device_map=device)
    model = PeftModel.from_pretrained(base, str(adapter_path)).to(device)
    log.info("scoring on %s in %s", device, str(dtype).removeprefix("torch."))
    return Scorer(model, tokenizer)


def run(config: EvalConfig, store: Store, *, workdir: Path) -> EvalResults:
    torch.manual_seed(0)
    # Every item is read and checked before the model loads: a malformed one costs
    # seconds, not a model download.
    items = {
        suite.name: checked_items(suite, parse_lines(store.iter_lines(suite.dataset)))
        for suite in config.suites
    }
    scorer = load_scorer(store, config, workdir)
    suites = []
    for suite in config.suites:
        started = time.monotonic()
        suites.append(score_suite(scorer, suite, items[suite.name]))
        log.info(
            "suite %s (%s): %d items scored on both sides in %.1fs",
            suite.name,
            suite.metric,
            suites[-1].items,
            time.monotonic() - started,
        )
    results = EvalResults(
        gate=config.gate,
        base_model=config.base_model.uri,
        adapter=config.adapter,
        suites=suites,
        created_at=now_rfc3339(),
    )
    store.write_json(config.results, results.to_json())
    return results


def summary(results: EvalResults) -> str:
    lines = []
    for suite in results.suites:
        base = sum(suite.base) / len(suite.base) if suite.base else float("nan")
        candidate = sum(suite.candidate) / len(suite.candidate) if suite.candidate else math.nan
        lines.append(
            f"{suite.name:>24} {suite.metric:>22}  base {base:8.4f}  "
            f"candidate {candidate:8.4f}  ({suite.items} items)"
        )
    return "\n".join(lines)
