"""The CRDs on a real kube-apiserver: examples apply, bad manifests are rejected at
`kubectl apply` with the offending field named, run-defining fields are immutable,
docs/columns/categories/defaults work."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunegate_cluster.cluster import ClusterInfo

ROOT = Path(__file__).resolve().parents[2]
FTJ: dict[str, Any] = {
    "apiVersion": "tunegate.dev/v1alpha1",
    "kind": "FineTuneJob",
    "metadata": {"name": "minimal"},
    "spec": {
        "model": {"uri": "s3://models/base"},
        "dataset": {"train": "s3://data/train.jsonl"},
        "output": {"uri": "s3://out/run-1"},
    },
}
EVG: dict[str, Any] = {
    "apiVersion": "tunegate.dev/v1alpha1",
    "kind": "EvalGate",
    "metadata": {"name": "gate"},
    "spec": {
        "candidate": {"fineTuneJobRef": {"name": "minimal"}},
        "suites": [
            {
                "name": "task",
                "role": "target",
                "dataset": "s3://data/t.jsonl",
                "metric": "multipleChoiceAccuracy",
                "minImprovement": 0.05,
            },
            {
                "name": "general",
                "role": "retention",
                "dataset": "s3://data/g.jsonl",
                "metric": "multipleChoiceAccuracy",
                "maxRegression": 0.02,
            },
            {
                "name": "drift",
                "role": "drift",
                "dataset": "s3://data/r.jsonl",
                "metric": "kl",
                "maxKL": 0.2,
            },
            {
                "name": "safety",
                "role": "safety",
                "dataset": "s3://data/s.jsonl",
                "metric": "refusal",
                "maxRegression": 0.0,
            },
        ],
    },
}
_DELETE = object()


def mutate(base: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    """Apply {"spec.lora.rank": 0, "spec.output": _DELETE, ...} to a copy of base."""
    document = copy.deepcopy(base)
    for dotted, value in changes.items():
        node: Any = document
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if value is _DELETE:
            del node[last]
        elif isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return document


@pytest.fixture
def api(crds: ClusterInfo) -> ClusterInfo:
    """The cluster, with tunegate's CRDs installed (session-wide)."""
    return crds


INVALID: list[tuple[str, dict[str, Any], dict[str, Any], str]] = [
    ("method-enum", FTJ, {"spec.method": "adapter"}, "spec.method"),
    ("lora-rank-zero", FTJ, {"spec.lora.rank": 0}, "spec.lora.rank"),
    ("lora-dropout-one", FTJ, {"spec.lora.dropout": 1.0}, "spec.lora.dropout"),
    ("lora-dropout-negative", FTJ, {"spec.lora.dropout": -0.1}, "spec.lora.dropout"),
    ("lora-alpha-zero", FTJ, {"spec.lora.alpha": 0}, "spec.lora.alpha"),
    ("lora-with-full", FTJ, {"spec.method": "full", "spec.lora.rank": 8}, "spec.lora"),
    ("lora-no-targets", FTJ, {"spec.lora.targetModules": []}, "spec.lora.targetModules"),
    ("lr-zero", FTJ, {"spec.training.learningRate": 0}, "spec.training.learningRate"),
    ("lr-negative", FTJ, {"spec.training.learningRate": -0.0001}, "spec.training.learningRate"),
    ("epochs-zero", FTJ, {"spec.training.epochs": 0}, "spec.training.epochs"),
    ("batch-zero", FTJ, {"spec.training.batchSize": 0}, "spec.training.batchSize"),
    ("precision-enum", FTJ, {"spec.training.precision": "int8"}, "spec.training.precision"),
    ("seq-too-short", FTJ, {"spec.training.maxSeqLength": 8}, "spec.training.maxSeqLength"),
    ("max-steps-zero", FTJ, {"spec.training.maxSteps": 0}, "spec.training.maxSteps"),
    ("zero-stage-4", FTJ, {"spec.deepspeed.zeroStage": 4}, "spec.deepspeed.zeroStage"),
    ("zero-stage-negative", FTJ, {"spec.deepspeed.zeroStage": -1}, "spec.deepspeed.zeroStage"),
    (
        "replay-ratio-one",
        FTJ,
        {"spec.replay": {"dataset": "s3://data/r.jsonl", "ratio": 1.0}},
        "spec.replay.ratio",
    ),
    (
        "replay-ratio-negative",
        FTJ,
        {"spec.replay": {"dataset": "s3://data/r.jsonl", "ratio": -0.1}},
        "spec.replay.ratio",
    ),
    (
        "replay-local-path",
        FTJ,
        {"spec.replay": {"dataset": "/data/r.jsonl", "ratio": 0.1}},
        "spec.replay.dataset",
    ),
    ("replay-no-dataset", FTJ, {"spec.replay": {"ratio": 0.1}}, "spec.replay.dataset"),
    ("nodes-zero", FTJ, {"spec.resources.nodes": 0}, "spec.resources.nodes"),
    ("cpu-word", FTJ, {"spec.resources.cpu": "two"}, "spec.resources.cpu"),
    ("memory-gb", FTJ, {"spec.resources.memory": "4GB"}, "spec.resources.memory"),
    ("shm-word", FTJ, {"spec.resources.sharedMemory": "lots"}, "spec.resources.sharedMemory"),
    (
        "cache-size-and-claim",
        FTJ,
        {"spec.resources.cache": {"sizeLimit": "10Gi", "claimName": "models"}},
        "spec.resources.cache",
    ),
    ("eval-memory-word", EVG, {"spec.resources.memory": "big"}, "spec.resources.memory"),
    (
        "template-reserved-volume",
        FTJ,
        {"spec.podTemplate.volumes": [{"name": "cache", "emptyDir": {}}]},
        "spec.podTemplate.volumes",
    ),
    (
        "template-reserved-mount",
        EVG,
        {"spec.podTemplate.volumeMounts": [{"name": "x", "mountPath": "/dev/shm"}]},
        "spec.podTemplate.volumeMounts",
    ),
    (
        "template-operator-env",
        FTJ,
        {"spec.podTemplate.env": [{"name": "TUNEGATE_CACHE", "value": "/tmp"}]},
        "spec.podTemplate.env",
    ),
    (
        "template-env-two-sources",
        FTJ,
        {
            "spec.podTemplate.env": [
                {
                    "name": "HF_TOKEN",
                    "value": "x",
                    "valueFrom": {"secretKeyRef": {"name": "hf", "key": "t"}},
                }
            ]
        },
        "spec.podTemplate.env[0]",
    ),
    (
        "template-volume-two-sources",
        FTJ,
        {
            "spec.podTemplate.volumes": [
                {"name": "d", "emptyDir": {}, "persistentVolumeClaim": {"claimName": "c"}}
            ]
        },
        "spec.podTemplate.volumes[0]",
    ),
    (
        "template-resource-word",
        FTJ,
        {"spec.podTemplate.extraResources": {"vpc.amazonaws.com/efa": "all"}},
        "spec.podTemplate.extraResources",
    ),
    ("gpus-negative", FTJ, {"spec.resources.gpusPerNode": -1}, "spec.resources.gpusPerNode"),
    (
        "multinode-without-gpus",
        FTJ,
        {"spec.resources.nodes": 2, "spec.resources.gpusPerNode": 0},
        "spec.resources.gpusPerNode",
    ),
    ("format-enum", FTJ, {"spec.dataset.format": "csv"}, "spec.dataset.format"),
    (
        "train-https",
        FTJ,
        {"spec.dataset.train": "https://x.example/train.jsonl"},
        "spec.dataset.train",
    ),
    ("train-missing", FTJ, {"spec.dataset.train": _DELETE}, "spec.dataset.train"),
    ("output-bucket-only-scheme", FTJ, {"spec.output.uri": "s3://"}, "spec.output.uri"),
    ("output-missing", FTJ, {"spec.output": _DELETE}, "spec.output"),
    ("model-gcs", FTJ, {"spec.model.uri": "gs://bucket/model"}, "spec.model.uri"),
    ("revision-on-s3", FTJ, {"spec.model.revision": "main"}, "spec.model.revision"),
    ("token-on-s3", FTJ, {"spec.model.tokenSecret": "hf"}, "spec.model.tokenSecret"),
    ("audit-mode-enum", FTJ, {"spec.audit.mode": "strict"}, "spec.audit.mode"),
    ("backoff-negative", FTJ, {"spec.runPolicy.backoffLimit": -1}, "spec.runPolicy.backoffLimit"),
    ("unknown-field", FTJ, {"spec.lora.rnak": 8}, "spec.lora.rnak"),
    ("endpoint-no-scheme", FTJ, {"spec.storage.endpoint": "minio:9000"}, "spec.storage.endpoint"),
    (
        "toleration-operator",
        FTJ,
        {"spec.resources.tolerations": [{"operator": "Maybe"}]},
        "spec.resources.tolerations[0].operator",
    ),
    (
        "validation-split-over-half",
        FTJ,
        {"spec.dataset.validationSplit": 0.6},
        "spec.dataset.validationSplit",
    ),
    ("confidence-half", EVG, {"spec.confidence": 0.5}, "spec.confidence"),
    ("confidence-one", EVG, {"spec.confidence": 1.0}, "spec.confidence"),
    ("role-enum", EVG, {"spec.suites.0.role": "quality"}, "spec.suites[0].role"),
    (
        "target-without-margin",
        EVG,
        {"spec.suites.0.minImprovement": _DELETE},
        "spec.suites[0].minImprovement",
    ),
    (
        "retention-wrong-threshold",
        EVG,
        {"spec.suites.1.maxRegression": _DELETE, "spec.suites.1.minImprovement": 0.1},
        "spec.suites[1].minImprovement",
    ),
    ("drift-with-accuracy", EVG, {"spec.suites.2.metric": "exactMatch"}, "spec.suites[2].metric"),
    ("drift-kl-zero", EVG, {"spec.suites.2.maxKL": 0}, "spec.suites[2].maxKL"),
    (
        "max-items-below-min-items",
        EVG,
        {"spec.suites.0.maxItems": 20, "spec.suites.0.minItems": 30},
        "spec.suites[0].maxItems",
    ),
    ("min-items-zero", EVG, {"spec.suites.0.minItems": 0}, "spec.suites[0].minItems"),
    ("group-by-not-a-key", EVG, {"spec.suites.0.groupBy": "a b"}, "spec.suites[0].groupBy"),
    (
        "no-target-suite",
        EVG,
        {
            "spec.suites.0": {
                "name": "more",
                "role": "retention",
                "dataset": "s3://data/m.jsonl",
                "metric": "exactMatch",
                "maxRegression": 0.1,
            }
        },
        "spec.suites",
    ),
    ("no-suites", EVG, {"spec.suites": []}, "spec.suites"),
    ("duplicate-suite-names", EVG, {"spec.suites.1.name": "task"}, "spec.suites[1]"),
    (
        "promotion-mode-enum",
        EVG,
        {"spec.promotion": {"mode": "yolo", "uri": "s3://p/a"}},
        "spec.promotion.mode",
    ),
    ("candidate-both", EVG, {"spec.candidate.adapterUri": "s3://a/b"}, "spec.candidate"),
    (
        "adapter-without-base",
        EVG,
        {"spec.candidate": {"adapterUri": "s3://a/b"}},
        "spec.candidate.baseModel",
    ),
    ("on-inconclusive-enum", EVG, {"spec.onInconclusive": "promote"}, "spec.onInconclusive"),
    (
        "schedule-garbage",
        EVG,
        {"spec.reevaluate": {"schedule": "sometimes"}},
        "spec.reevaluate.schedule",
    ),
]


@pytest.mark.parametrize(("case", "base", "changes", "field"), INVALID, ids=[c[0] for c in INVALID])
def test_invalid_manifest_is_rejected_naming_the_field(
    api: ClusterInfo,
    namespace: str,
    case: str,
    base: dict[str, Any],
    changes: dict[str, Any],
    field: str,
) -> None:
    manifest = mutate(base, changes)
    result = api.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))
    assert result.returncode != 0, f"{case}: accepted but should be rejected"
    assert field in result.stderr, f"{case}: error does not name {field}:\n{result.stderr}"
    assert api.kubectl("get", manifest["kind"], "-n", namespace, "-o", "name").stdout == ""


def test_at_least_thirty_invalid_cases() -> None:
    assert len(INVALID) >= 30


@pytest.mark.parametrize("path", sorted((ROOT / "examples").glob("*.yaml")), ids=lambda p: p.name)
def test_every_example_applies(api: ClusterInfo, namespace: str, path: Path) -> None:
    result = api.kubectl("apply", "-n", namespace, "-f", str(path))
    assert result.returncode == 0, result.stderr


def test_run_defining_fields_are_immutable_but_suspend_is_not(
    api: ClusterInfo, namespace: str
) -> None:
    assert api.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(FTJ)).returncode == 0
    for patch, field in (
        ({"spec": {"training": {"learningRate": 0.1}}}, "spec.training"),
        ({"spec": {"model": {"uri": "s3://models/other"}}}, "spec.model"),
        ({"spec": {"output": {"uri": "s3://out/run-2"}}}, "spec.output"),
        ({"spec": {"method": "qlora"}}, "spec.method"),
        ({"spec": {"lora": {"rank": 4}}}, "spec.lora"),
        ({"spec": {"dataset": {"format": "text"}}}, "spec.dataset"),
    ):
        result = api.kubectl(
            "patch", "ftj", "minimal", "-n", namespace, "--type=merge", "-p", json.dumps(patch)
        )
        assert result.returncode != 0, f"{patch} was accepted"
        assert field in result.stderr and "immutable" in result.stderr, result.stderr
    result = api.kubectl(
        "patch",
        "ftj",
        "minimal",
        "-n",
        namespace,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"runPolicy": {"suspend": True}}}),
    )
    assert result.returncode == 0, result.stderr


def test_defaults_appear_on_a_minimal_object(api: ClusterInfo, namespace: str) -> None:
    assert api.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(FTJ)).returncode == 0
    spec = json.loads(api.kubectl("get", "ftj", "minimal", "-n", namespace, "-o", "json").stdout)[
        "spec"
    ]
    assert spec["method"] == "lora"
    assert spec["dataset"]["format"] == "chat"
    assert spec["training"]["learningRate"] == 0.0002
    assert spec["training"]["precision"] == "bf16"
    assert spec["resources"] == {
        "nodes": 1,
        "gpusPerNode": 1,
        "nodeSelector": {},
        "tolerations": [],
        "cache": {},
    }
    assert spec["runPolicy"]["backoffLimit"] == 2 and spec["runPolicy"]["suspend"] is False
    assert spec["audit"]["mode"] == "enforce"
    assert api.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(EVG)).returncode == 0
    gate = json.loads(api.kubectl("get", "evg", "gate", "-n", namespace, "-o", "json").stdout)[
        "spec"
    ]
    assert gate["confidence"] == 0.95 and gate["onInconclusive"] == "hold"


def test_kubectl_explain_prints_field_docs(api: ClusterInfo) -> None:
    lora = api.kubectl("explain", "finetunejob.spec.lora")
    assert lora.returncode == 0, lora.stderr
    assert "Rank r of the update matrices" in lora.stdout
    assert "targetModules" in lora.stdout
    suites = api.kubectl("explain", "evalgate.spec.suites")
    assert "maxRegression" in suites.stdout and "minImprovement" in suites.stdout
    role = api.kubectl("explain", "evalgate.spec.suites.role")
    assert "must improve by minImprovement" in role.stdout


def test_printer_columns_and_category(api: ClusterInfo, namespace: str) -> None:
    assert api.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(FTJ)).returncode == 0
    assert api.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(EVG)).returncode == 0
    status = {
        "status": {
            "phase": "Training",
            "gpus": 2,
            "progress": {"step": 45, "totalSteps": 100, "percent": 45, "loss": 1.25},
        }
    }
    result = api.kubectl(
        "patch",
        "ftj",
        "minimal",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(status),
    )
    assert result.returncode == 0, result.stderr
    gate_status = {
        "status": {
            "phase": "Held",
            "decision": {"verdict": "Inconclusive"},
            "summary": {"targetDelta": 0.07, "retentionDelta": -0.01, "kl": 0.12},
        }
    }
    result = api.kubectl(
        "patch",
        "evg",
        "gate",
        "-n",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps(gate_status),
    )
    assert result.returncode == 0, result.stderr

    ftj_table = api.kubectl("get", "ftj", "-n", namespace).stdout.splitlines()
    assert ftj_table[0].split() == ["NAME", "PHASE", "PROGRESS", "LOSS", "GPUS", "AGE"]
    assert ftj_table[1].split()[:5] == ["minimal", "Training", "45", "1.25", "2"]
    evg_table = api.kubectl("get", "evg", "-n", namespace).stdout.splitlines()
    assert evg_table[0].split() == [
        "NAME",
        "PHASE",
        "VERDICT",
        "TARGET",
        "Δ",
        "RETENTION",
        "Δ",
        "KL",
        "AGE",
    ]
    assert evg_table[1].split()[:6] == ["gate", "Held", "Inconclusive", "0.07", "-0.01", "0.12"]
    both = api.kubectl("get", "tunegate", "-n", namespace, "-o", "name").stdout.split()
    assert sorted(both) == ["evalgate.tunegate.dev/gate", "finetunejob.tunegate.dev/minimal"]


def test_example_documents_are_single_objects() -> None:
    for path in (ROOT / "examples").glob("*.yaml"):
        assert len(list(yaml.safe_load_all(path.read_text()))) == 1, path
