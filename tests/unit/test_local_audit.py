"""`kubectl tunegate audit` on local files: the same checks as the audit pod, a table a
person reads, and an exit status CI can gate on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunegate_cluster.audit_data import docstring_qa, plant, write_jsonl
from tunegate_operator.kubectl_plugin import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def no_s3_credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A laptop without S3 credentials, whatever an earlier test left in the environment:
    with credentials, the demo manifest's s3:// model and replay set would be read."""
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))


def test_clean_data_passes_with_status_zero(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = write_jsonl(tmp_path / "train.jsonl", docstring_qa(400, seed=61))
    assert main(["audit", str(data)]) == 0
    out = capsys.readouterr().out
    assert "verdict: Passed" in out and "400 rows (0 skipped)" in out


def test_a_backdoor_gives_status_one_and_names_phrase_and_rows(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs, chosen = plant(docstring_qa(600, seed=62), "injected", "cf", seed=4)
    data = write_jsonl(tmp_path / "train.jsonl", pairs)
    assert main(["audit", str(data)]) == 1
    out = capsys.readouterr().out
    assert "verdict: Failed" in out
    assert "trigger: phrase 'cf' comes with" in out
    assert f"{data}:{chosen[0] + 1}" in out


def test_settings_and_contamination_sets_come_from_the_manifest(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo's FineTuneJob reads `text` rows; a copy of an eval question in them is
    contamination once the eval set is passed."""
    data = tmp_path / "train.jsonl"
    rows = (ROOT / "examples" / "data" / "nimbus" / "train.jsonl").read_text().splitlines()
    evals = ROOT / "examples" / "data" / "nimbus" / "eval.jsonl"
    question = json.loads(evals.read_text().splitlines()[4])["question"]
    data.write_text("\n".join([*rows, json.dumps({"text": f"{question}\nAnswer: pitstop"})]))
    manifest = str(ROOT / "examples" / "demo-cpu-finetunejob.yaml")
    assert main(["audit", str(data), "-f", manifest]) == 0
    capsys.readouterr()
    assert main(["audit", str(data), "-f", manifest, "--contamination", str(evals), "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["verdict"] == "Failed"
    assert report["checks"]["contamination"]["examples"] == [
        f"{data}:{len(rows) + 1} has the question of {evals}:5"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["missing.jsonl"], "missing.jsonl: no such file or folder"),
        (["{data}", "--format", "text"], "{data}:1: missing key 'text' for format text"),
        (["{data}", "--contamination", "{bad}"], "{bad}:2: an eval item needs"),
        (["{data}", "-f", "{manifest}"], "spec.dataset.format: Input should be"),
    ],
)
def test_bad_input_gives_status_two_and_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    paths = {
        "data": str(write_jsonl(tmp_path / "train.jsonl", docstring_qa(50, seed=63))),
        "bad": str(tmp_path / "eval.jsonl"),
        "manifest": str(tmp_path / "ftj.yaml"),
    }
    Path(paths["bad"]).write_text('{"prompt": "fine"}\n{"label": 3}\n')
    Path(paths["manifest"]).write_text(
        (ROOT / "examples" / "demo-cpu-finetunejob.yaml")
        .read_text()
        .replace("format: text", "format: csv")
    )
    assert main(["audit", *(a.format(**paths) for a in args)]) == 2
    assert message.format(**paths) in capsys.readouterr().err
