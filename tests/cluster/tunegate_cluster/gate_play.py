"""Playing an EvalGate's world on the control plane: a FineTuneJob that Succeeded with
a real adapter in S3, gate manifests, the eval pod's per-item scores, and what serving
reads after a promotion."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from tunegate_cluster.cluster import ClusterInfo
from tunegate_cluster.kube_helpers import (
    BUCKET,
    apply,
    ftj,
    get,
    manifest_document,
    put_json,
    wait_job,
    wait_phase,
)
from tunegate_cluster.processes import wait_until
from tunegate_contract.digest import tree_digest
from tunegate_contract.eval_results import EvalResults

# role -> (base rate, shift): the candidate is the base's per-item scores with a
# `shift` fraction flipped towards better (+) or worse (-), plus 1% noise: paired data.
GOOD = {"target": (0.3, 0.6), "retention": (0.8, 0.0), "safety": (0.9, 0.0)}
FORGETFUL = {"target": (0.3, 0.6), "retention": (0.8, -0.6), "safety": (0.9, 0.0)}


def succeeded_run(cluster: ClusterInfo, s3: Any, namespace: str, prefix: str, name: str) -> str:
    """A FineTuneJob that Succeeded with a real adapter and manifest in S3."""
    apply(cluster, namespace, ftj(name, prefix, audit={"mode": "off"}))
    wait_job(cluster, namespace, f"{name}-train-1")
    adapter, _ = write_trained_adapter(s3, prefix, name)
    wait_phase(cluster, namespace, name, "Succeeded")
    return adapter


def write_trained_adapter(s3: Any, prefix: str, name: str) -> tuple[str, str]:
    """What a training pod leaves: adapter files, then the manifest naming their digests
    (written last, as the trainer does). Returns the adapter's URI and digest."""
    out = f"{prefix}/out/{name}"
    files = {
        "adapter_config.json": json.dumps({"r": 8, "name": name}).encode(),
        "adapter_model.safetensors": os.urandom(4096),
    }
    for file, body in files.items():
        s3.put_object(Bucket=BUCKET, Key=f"{out}/adapter/{file}", Body=body)
    digests = {f: hashlib.sha256(b).hexdigest() for f, b in files.items()}
    adapter = f"s3://{BUCKET}/{out}/adapter"
    sha256 = tree_digest(digests)
    document = manifest_document(adapter, sha256=sha256, files=digests, trainable=4096, loss=0.5)
    put_json(s3, f"{out}/manifest.json", document)
    return adapter, sha256


def gate(
    name: str, run: str, promotion: str, *, mode: str = "auto", **extra: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": "tunegate.dev/v1alpha1",
        "kind": "EvalGate",
        "metadata": {"name": name},
        "spec": {
            "candidate": {"fineTuneJobRef": {"name": run}},
            "suites": [
                {
                    "name": "task",
                    "role": "target",
                    "dataset": "s3://data/t.jsonl",
                    "metric": "multipleChoiceAccuracy",
                    "minImprovement": 0.1,
                },
                {
                    "name": "general",
                    "role": "retention",
                    "dataset": "s3://data/g.jsonl",
                    "metric": "multipleChoiceAccuracy",
                    "maxRegression": 0.05,
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
                    "maxRegression": 0.05,
                },
            ],
            "bootstrapSamples": 500,
            "promotion": {"mode": mode, "uri": promotion, "configMap": f"{name}-serving"},
            "resources": {"gpus": 0, "nodeSelector": {"tunegate.dev/pool": "cpu"}},
        },
    }
    body["spec"].update(extra)
    return body


def play_eval_pod(
    cluster: ClusterInfo,
    s3: Any,
    namespace: str,
    name: str,
    rates: dict[str, tuple[float, float]],
    *,
    job_name: str | None = None,
    timeout: float = 60,
) -> dict[str, Any]:
    """Write the per-item scores the eval pod would have written."""
    job = wait_job(cluster, namespace, job_name or f"{name}-eval-1", timeout=timeout)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1] == "eval"
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    return write_eval_results(s3, job, rates)


def eval_config(job: dict[str, Any]) -> dict[str, Any]:
    """The eval pod's config, as the operator passed it."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    value = next(e["value"] for e in container["env"] if e["name"] == "TUNEGATE_EVAL_CONFIG")
    return dict(json.loads(value))


def write_eval_results(
    s3: Any, job: dict[str, Any], rates: dict[str, tuple[float, float]]
) -> dict[str, Any]:
    """The per-item scores the eval pod of `job` would write; returns its config."""
    import numpy as np

    config = eval_config(job)
    rng = np.random.default_rng(0)
    suites = []
    for suite in config["suites"]:
        if suite["metric"] == "kl":
            suites.append(
                {
                    "name": suite["name"],
                    "role": suite["role"],
                    "metric": "kl",
                    "items": 300,
                    "base": [],
                    "candidate": list(rng.exponential(0.02, 300)),
                }
            )
            continue
        base_rate, shift = rates[suite["role"]]
        base = (rng.random(400) < base_rate).astype(float)
        candidate = base.copy()
        flip = rng.random(400) < abs(shift)
        candidate[flip & (base == (0.0 if shift > 0 else 1.0))] = 1.0 if shift > 0 else 0.0
        noise = rng.random(400) < 0.01
        candidate[noise] = 1.0 - candidate[noise]
        suites.append(
            {
                "name": suite["name"],
                "role": suite["role"],
                "metric": suite["metric"],
                "items": 400,
                "base": list(base),
                "candidate": list(candidate),
            }
        )
    key = config["results"].removeprefix(f"s3://{BUCKET}/")
    document = {
        "gate": config["gate"],
        "base_model": config["base_model"]["uri"],
        "adapter": config["adapter"],
        "suites": suites,
        "created_at": "2026-01-01T00:00:00Z",
    }
    results = EvalResults.parse(document, where="the test's eval results")
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(results.to_json()).encode())
    return dict(config)


def source_bytes(s3: Any, adapter: str) -> dict[str, bytes]:
    prefix = adapter.removeprefix(f"s3://{BUCKET}/") + "/"
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]
    return {
        o["Key"][len(prefix) :]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
        for o in listed
    }


def served_bytes(s3: Any, promotion: str) -> dict[str, bytes]:
    """What a server loads: the version promotion.json names, and only its files."""
    key = f"{promotion.removeprefix(f's3://{BUCKET}/')}/promotion.json"
    pointer = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())["current"]
    return source_bytes(s3, pointer["uri"])


def wait_phase_of(
    cluster: ClusterInfo, namespace: str, name: str, phase: str, timeout: float = 60
) -> dict[str, Any]:
    def status() -> dict[str, Any]:
        return dict(get(cluster, namespace, "evalgate", name).get("status") or {})

    wait_until(
        lambda: status().get("phase") == phase,
        timeout=timeout,
        what=lambda: f"evalgate {name} phase {phase} (now {status()})",
    )
    return status()
