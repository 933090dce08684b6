"""The documents both sides share: what one side writes, the other parses, and a
malformed one is refused naming the object and the field."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tunegate_contract.base import DocumentError
from tunegate_contract.digest import tree_digest
from tunegate_contract.eval_results import EvalResults
from tunegate_contract.promotion_record import PromotionRecord
from tunegate_contract.run_documents import Manifest, Progress
from tunegate_operator.api.finetunejob import FineTuneJobSpec
from tunegate_operator.builders.trainer_config import RunRef, trainer_config
from tunegate_operator.decisions.finetunejob import ManifestSummary
from tunegate_operator.settings import Settings
from tunegate_trainer.outputs import manifest

FILES = {"adapter_model.safetensors": "1" * 64, "adapter_config.json": "2" * 64}


def test_the_tree_digest_names_the_set_of_files_and_their_bytes() -> None:
    assert tree_digest(dict(reversed(list(FILES.items())))) == tree_digest(FILES)
    renamed = {"adapter.safetensors": "1" * 64, "adapter_config.json": "2" * 64}
    altered = FILES | {"adapter_config.json": "3" * 64}
    added = FILES | {"README.md": "4" * 64}
    assert len({tree_digest(f) for f in (FILES, renamed, altered, added)}) == 4


def test_the_manifest_the_trainer_writes_is_the_one_the_operator_reads() -> None:
    spec = FineTuneJobSpec.model_validate(
        {
            "model": {"uri": "s3://models/base"},
            "dataset": {"train": "s3://data/t.jsonl"},
            "output": {"uri": "s3://out/run/"},
        }
    )
    config = trainer_config(spec, run=RunRef("ml", "run", "uid"), attempt=1, settings=Settings())
    written = manifest(
        config,
        adapter_files=FILES,
        adapter_bytes=2048,
        extra_files={},
        base_digest="b" * 64,
        dataset_digests={"s3://data/t.jsonl": "d" * 64},
        trainable=4096,
        total=135_000_000,
        metrics={"train_loss": 2.4, "last_loss": 1.25},  # the mean, the latest step's
    )
    stored = json.loads(json.dumps(written.to_json()))
    summary = ManifestSummary.of(Manifest.parse(stored, where="s3://out/run/manifest.json"))
    assert summary == ManifestSummary("s3://out/run/adapter", tree_digest(FILES), 2048, 4096, 1.25)
    assert stored["schema"] == "tunegate.dev/manifest/v1"


def test_a_malformed_manifest_names_the_object_and_the_field() -> None:
    stored: dict[str, Any] = {
        "adapter": {"uri": "s3://out/run/adapter", "size_bytes": 1, "files": {}},
    }
    with pytest.raises(DocumentError, match=r"s3://out/run/manifest\.json .*adapter\.sha256"):
        Manifest.parse(stored, where="s3://out/run/manifest.json")


def test_scores_that_do_not_pair_up_are_refused_naming_the_suite() -> None:
    suite = {"name": "t", "role": "target", "metric": "exactMatch", "items": 3}
    document = {
        "gate": {"namespace": "ml", "name": "g", "uid": "u", "generation": 1},
        "base_model": "s3://m",
        "adapter": "s3://a",
        "created_at": "2026-01-01T00:00:00Z",
        "suites": [suite | {"base": [1.0, 0.0], "candidate": [1.0, 1.0, 0.0]}],
    }
    with pytest.raises(DocumentError, match=r"results\.json is malformed: suites\.0: .*2 base"):
        EvalResults.parse(document, where="results.json")


def test_the_pointer_keeps_its_stored_names_and_what_a_newer_writer_added() -> None:
    stored = {
        "layout": 2,
        "current": {"sha256": "a" * 64, "uri": "s3://s/versions/aaa", "restoredAt": "t1"},
        "rolledBack": [{"sha256": "b" * 64, "rolledBackBy": "gate", "note": "kept"}],
        "owner": "team-a",
    }
    record = PromotionRecord.parse(stored, where="promotion.json")
    assert record.current is not None and record.current.restored_at == "t1"
    assert record.rolled_back[0].rolled_back_by == "gate"
    written = record.to_json()
    assert written["current"]["restoredAt"] == "t1" and "restored_at" not in written["current"]
    assert {"rolledBackBy": "gate", "note": "kept"}.items() <= written["rolledBack"][0].items()
    assert written["owner"] == "team-a"


def test_a_v01_pointer_reads_as_layout_1() -> None:
    record = PromotionRecord.parse({"current": {"sha256": "a" * 64}}, where="promotion.json")
    assert record.layout == 1 and record.current is not None and record.current.uri is None


def test_progress_percent_is_capped_and_absent_without_a_total() -> None:
    assert Progress(step=50, total_steps=200).percent == 25
    assert Progress(step=210, total_steps=200).percent == 100
    assert Progress(step=5).percent is None
