"""The streaming audit in worker processes finds what the in-memory audit finds, reads
each row once per pass, and handles malformed rows as spec.dataset.onMalformedRow says."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from audit_settings import ENFORCE

from tunegate_cluster.audit_data import docstring_qa, plant, reword, write_jsonl
from tunegate_contract.trainer_config import FieldNames
from tunegate_trainer.audit import AuditRow, audit, audit_chunks
from tunegate_trainer.audit.engine import chunked
from tunegate_trainer.audit.local import RowFormat, read_lines
from tunegate_trainer.data import DataError, Row, parse_row


def poisoned_file(tmp_path: Path) -> Path:
    import random

    pairs, _ = plant(docstring_qa(1200, seed=71), "injected", "James Bond", seed=5)
    rng = random.Random(71)
    pairs += [pairs[i] for i in range(10)]  # exact repeats
    pairs += [type(p)(p.prompt, reword(p.response, rng)) for p in pairs[100:115]]
    pairs[500] = type(pairs[500])("Mail me at jane.doe@example.com", "Sure.")
    return write_jsonl(tmp_path / "train.jsonl", pairs)


def test_workers_find_what_the_in_memory_audit_finds(tmp_path: Path) -> None:
    path = poisoned_file(tmp_path)
    rows = [
        AuditRow.of(
            parse_row(
                Row(f"{path}:{n}", json.loads(line)),
                format="chat",
                fields=FieldNames(),
                source="train",
            )
        )
        for n, line in enumerate(path.read_text().splitlines(), start=1)
    ]
    in_memory = audit(rows, settings=ENFORCE)
    streamed = audit_chunks(
        lambda: chunked(read_lines(str(path)), size=97),  # chunks that cut through rows' groups
        settings=ENFORCE,
        row_format=RowFormat("chat"),
        eval_sets=None,
        workers=2,
    )
    assert streamed.checks == in_memory.checks
    assert streamed.findings == in_memory.findings
    # 10 repeats, and 15 reworded copies (one may differ only in case and punctuation)
    duplicates = streamed.checks["duplicates"]
    assert duplicates["exact"] >= 10 and duplicates["exact"] + duplicates["near"] >= 25
    assert streamed.checks["pii"]["by_kind"] == {"email": 1}
    (trigger,) = streamed.checks["triggers"]["suspected"]
    assert trigger["phrase"] == "James Bond"


def test_malformed_rows_are_skipped_and_counted_or_stop_the_audit(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "train.jsonl", docstring_qa(300, seed=72))
    lines = path.read_text().splitlines()
    lines[41] = "{not json"
    lines[99] = json.dumps({"messages": "not a list"})
    lines[150] += "\n\n"  # blank lines are not rows, as the trainer reads them
    path.write_text("\n".join(lines) + "\n")

    def run(policy: str) -> object:
        return audit_chunks(
            lambda: chunked(read_lines(str(path)), size=50),
            settings=ENFORCE,
            row_format=RowFormat("chat", on_malformed_row=policy),  # type: ignore[arg-type]
            eval_sets=None,
            workers=2,
        )

    skipped = run("skip")
    stats = skipped.checks["stats"]  # type: ignore[attr-defined]
    assert stats["rows"] == 298 and stats["skipped_rows"] == 2
    assert stats["skipped_examples"][0].startswith(f"{path}:42: not valid JSON")
    assert stats["skipped_examples"][1].startswith(f"{path}:100: ")
    with pytest.raises(DataError, match=re.escape(f"{path}:42: not valid JSON")):
        run("fail")
