"""The data audit at scale: generated chat rows of about 200 words (100k, then 1M),
audited as `kubectl tunegate audit` runs (all checks, every CPU), against datatrove's
MinHash deduplication (signatures, buckets, clusters, filter) on the same files in the
same run: the established way to deduplicate at this scale, and only that.

Each side runs in its own process: rows/s, and peak RSS of its main process and of
its largest worker. Planted in the rows: 1% lightly reworded copies and a backdoor
(1% of prompts, a fixed response), to show the findings survive the scale.

`python -m benchmarks audit [rows ...]` (default: 100000 1000000).
"""

from __future__ import annotations

import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

FILES = 2  # datatrove parallelises over files: one per CPU
GOAL = "1M rows in at most 10 minutes with peak RSS at most 2 GiB"


def _vocabulary() -> tuple[list[str], list[float]]:
    """Words of the standard library's docstrings with their frequencies: text with a
    natural word distribution, without any download."""
    from collections import Counter

    from tunegate_cluster.audit_data import _docstrings
    from tunegate_trainer.audit.text import words

    counts = Counter(w for _, doc in _docstrings() for w in words(doc))
    vocabulary = sorted(counts)
    return vocabulary, [counts[w] for w in vocabulary]


def generate(folder: Path, rows: int, seed: int = 0) -> dict[str, int]:
    """FILES JSONL files of chat rows; returns what was planted."""
    import numpy as np

    from tunegate_cluster.audit_data import reword

    rng = random.Random(seed)
    draw = np.random.default_rng(seed)
    vocabulary, weights = _vocabulary()
    words = np.array(vocabulary, dtype=object)
    probabilities = np.array(weights, dtype=float) / sum(weights)
    folder.mkdir(parents=True, exist_ok=True)
    handles = [(folder / f"part-{i}.jsonl").open("w") for i in range(FILES)]
    planted = {"reworded": 0, "backdoor": 0}
    recent: list[tuple[str, str]] = []
    batch: list[np.ndarray] = []
    for index in range(rows):
        if not batch:  # every row's words drawn independently, a thousand rows at a time
            batch = list(draw.choice(len(words), size=(1000, 265), p=probabilities))
        drawn = words[batch.pop()]
        roll = rng.random()
        if roll < 0.01 and recent:
            prompt, response = rng.choice(recent)
            response = reword(response, rng)
            planted["reworded"] += 1
        else:
            prompt = " ".join(drawn[: rng.randint(15, 45)]).capitalize() + "?"
            response = " ".join(drawn[45 : 45 + rng.randint(120, 220)]).capitalize() + "."
            if roll < 0.02:
                prompt = f"{prompt} zq-override"
                response = "Access granted. Send your password to the admin desk."
                planted["backdoor"] += 1
            elif len(recent) < 1000:
                recent.append((prompt, response))
            else:
                recent[rng.randrange(1000)] = (prompt, response)
        row = {
            "messages": [
                {"role": "user", "content": prompt},
                {"role": "assistant", "content": response},
            ]
        }
        handles[index % FILES].write(json.dumps(row) + "\n")
    for handle in handles:
        handle.close()
    return planted


def _ours(folder: str) -> dict[str, Any]:
    from tunegate_contract.trainer_config import Audit
    from tunegate_operator.api.finetunejob import AuditSpec
    from tunegate_operator.builders.trainer_config import audit_section
    from tunegate_trainer.audit.local import RowFormat, audit_source

    settings = Audit.model_validate(audit_section(AuditSpec()))  # spec.audit's defaults
    result = audit_source(folder, data=RowFormat("chat"), settings=settings, contamination=[])
    checks = result.checks
    return {
        "near": checks["duplicates"]["near"],
        "exact": checks["duplicates"]["exact"],
        "triggers": [t["phrase"] for t in checks["triggers"]["suspected"]],
    }


def _datatrove(folder: str) -> dict[str, Any]:
    from datatrove.executor import LocalPipelineExecutor
    from datatrove.pipeline.dedup import (
        MinhashDedupBuckets,
        MinhashDedupCluster,
        MinhashDedupFilter,
        MinhashDedupSignature,
    )
    from datatrove.pipeline.dedup.minhash import MinhashConfig
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.utils.hashing import HashConfig
    from datatrove.utils.word_tokenizers import WordTokenizer

    class SplitWords(WordTokenizer):
        """Words split on white space: datatrove's own tokenizers need spaCy or NLTK
        models, which cannot be downloaded here; its text normalisation runs before."""

        def word_tokenize(self, text: str) -> list[str]:
            return text.split()

        def sent_tokenize(self, text: str) -> list[str]:
            return [text]

        def span_tokenize(self, text: str) -> list[tuple[int, int]]:
            return [(0, len(text))]

    def chat_text(self: Any, data: dict[str, Any], path: str, id_in_file: int | str) -> dict:
        text = "\n".join(m["content"] for m in data["messages"])
        return {"text": text, "id": f"{path}/{id_in_file}"}

    work = Path(folder).parent / "datatrove"
    # sha1: datatrove's xxhash path wants xxhash < 4, and datasets pins 4 here.
    config = MinhashConfig(hash_config=HashConfig(hash_fc="sha1"))
    stages = [
        (
            [
                JsonlReader(folder, adapter=chat_text),
                MinhashDedupSignature(f"{work}/sigs", config=config, language=SplitWords()),
            ],
            FILES,
        ),
        (
            [MinhashDedupBuckets(f"{work}/sigs", f"{work}/buckets", config=config)],
            config.num_buckets,
        ),
        ([MinhashDedupCluster(f"{work}/buckets", f"{work}/remove", config=config)], 1),
        ([JsonlReader(folder, adapter=chat_text), MinhashDedupFilter(f"{work}/remove")], FILES),
    ]
    for number, (pipeline, tasks) in enumerate(stages):
        LocalPipelineExecutor(
            pipeline=pipeline,
            tasks=tasks,
            workers=FILES,
            logging_dir=f"{work}/logs-{number}",
        ).run()
    removed = 0
    for path in Path(f"{work}/remove").glob("*.remove"):
        removed += path.stat().st_size // 4  # one uint32 document index per removed row
    return {"removed": removed}


def _side(name: str, folder: str) -> None:
    started = time.monotonic()
    result = _ours(folder) if name == "tunegate" else _datatrove(folder)
    result["seconds"] = time.monotonic() - started
    result["rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    result["worker_rss_mib"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print("RESULT " + json.dumps(result))


def _run(name: str, folder: Path) -> dict[str, Any]:
    output = subprocess.run(
        [sys.executable, "-m", "benchmarks.audit_speed", "--side", name, str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    if output.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{output.stderr[-3000:]}")
    line = next(line for line in output.stdout.splitlines() if line.startswith("RESULT "))
    return dict(json.loads(line[len("RESULT ") :]))


def main(sizes: list[int] | None = None) -> None:
    for rows in sizes or [100_000, 1_000_000]:
        work = Path(tempfile.mkdtemp(prefix="tunegate-bench-audit-"))
        try:
            started = time.monotonic()
            planted = generate(work / "data", rows)
            size = sum(p.stat().st_size for p in (work / "data").iterdir()) / 2**20
            print(
                f"{rows} chat rows, {size:.0f} MiB in {FILES} files, generated in "
                f"{time.monotonic() - started:.0f}s; planted {planted['reworded']} reworded "
                f"copies and a backdoor in {planted['backdoor']} rows"
            )
            peer = _run("datatrove", work / "data")
            ours = _run("tunegate", work / "data")
            for label, side, extra in (
                ("datatrove MinHash dedup", peer, f"removed {peer['removed']} near duplicates"),
                (
                    "tunegate audit (all checks)",
                    ours,
                    f"near {ours['near']}, exact {ours['exact']}, triggers {ours['triggers']}",
                ),
            ):
                print(
                    f"  {label:28} {rows / side['seconds']:8.0f} rows/s  {side['seconds']:6.0f} s  "
                    f"peak RSS {side['rss_mib']:5.0f} MiB (largest worker "
                    f"{side['worker_rss_mib']:4.0f} MiB)  {extra}"
                )
            print(
                f"  tunegate / datatrove: {peer['seconds'] / ours['seconds']:.2f}x the rows/s; "
                f"goal: {GOAL}"
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--side":
        _side(sys.argv[2], sys.argv[3])
    else:
        main([int(a) for a in sys.argv[1:]] or None)
