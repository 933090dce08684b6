"""EvalGate on the real control plane: the eval pod is faked on kwok and the test plays
it by writing results.json; promotion really copies objects in the S3 server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from kube_helpers import (
    BUCKET,
    apply,
    condition,
    ftj,
    get,
    items,
    put_json,
    wait_job,
    wait_phase,
)
from tunegate_cluster.cluster import ClusterInfo
from tunegate_cluster.processes import wait_until
from tunegate_operator.promotion import tree_digest

# role -> (base rate, shift): the candidate is the base's per-item scores with a
# `shift` fraction flipped towards better (+) or worse (-), plus 1% noise: paired data.
GOOD = {"target": (0.3, 0.6), "retention": (0.8, 0.0), "safety": (0.9, 0.0)}
FORGETFUL = {"target": (0.3, 0.6), "retention": (0.8, -0.6), "safety": (0.9, 0.0)}


def succeeded_run(cluster: ClusterInfo, s3: Any, namespace: str, prefix: str, name: str) -> str:
    """A FineTuneJob that Succeeded with a real adapter and manifest in S3."""
    apply(cluster, namespace, ftj(name, prefix, audit={"mode": "off"}))
    wait_job(cluster, namespace, f"{name}-train-1")
    out = f"{prefix}/out/{name}"
    files = {
        "adapter_config.json": json.dumps({"r": 8, "name": name}).encode(),
        "adapter_model.safetensors": os.urandom(4096),
    }
    for file, body in files.items():
        s3.put_object(Bucket=BUCKET, Key=f"{out}/adapter/{file}", Body=body)
    digests = {f: hashlib.sha256(b).hexdigest() for f, b in files.items()}
    put_json(
        s3,
        f"{out}/manifest.json",
        {
            "adapter": {
                "uri": f"s3://{BUCKET}/{out}/adapter",
                "sha256": tree_digest(digests),
                "size_bytes": 4200,
                "files": digests,
            },
            "trainable_parameters": 4096,
            "final_metrics": {"train_loss": 0.5},
        },
    )
    wait_phase(cluster, namespace, name, "Succeeded")
    return f"s3://{BUCKET}/{out}/adapter"


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
    import numpy as np

    job = wait_job(cluster, namespace, job_name or f"{name}-eval-1", timeout=timeout)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][-1] == "eval"
    assert "nvidia.com/gpu" not in json.dumps(container["resources"])
    config = json.loads(
        next(e["value"] for e in container["env"] if e["name"] == "TUNEGATE_EVAL_CONFIG")
    )
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
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps({"suites": suites}).encode())
    return config


def test_passing_gate_promotes_with_verified_copy_history_and_configmap(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str, tmp_path: Path
) -> None:
    cluster = crds
    adapter = succeeded_run(cluster, s3, namespace, prefix, "good")
    promotion = f"s3://{BUCKET}/{prefix}/serving"
    apply(cluster, namespace, gate("g1", "good", promotion))
    config = play_eval_pod(cluster, s3, namespace, "g1", GOOD)
    assert config["adapter"] == adapter
    st = wait_phase_of(cluster, namespace, "g1", "Promoted")
    assert st["decision"]["verdict"] == "Pass"
    rows = {r["suite"]: r for r in st["results"]}
    assert rows["task"]["verdict"] == "Pass" and rows["task"]["interval"]["low"] >= 0.1
    assert rows["drift"]["delta"] < 0.2 and st["summary"]["kl"] < 0.2
    assert condition(st, "Promoted")["status"] == "True"
    for file in ("adapter_config.json", "adapter_model.safetensors"):
        source = s3.get_object(
            Bucket=BUCKET, Key=f"{adapter.removeprefix(f's3://{BUCKET}/')}/{file}"
        )
        served = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/serving/{file}")
        assert served["Body"].read() == source["Body"].read()
    record = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{prefix}/serving/promotion.json")["Body"].read()
    )
    assert record["current"]["source"] == adapter and record["previous"] == []
    assert st["promoted"]["sha256"] == record["current"]["sha256"]
    serving = get(cluster, namespace, "configmap", "g1-serving")["data"]
    assert serving["sha256"] == record["current"]["sha256"]
    index = st["report"].removeprefix(f"s3://{BUCKET}/")
    page = s3.get_object(Bucket=BUCKET, Key=index)["Body"].read().decode()
    assert "general" in page and "Pass" in page and 'src="task.png"' in page
    plot = s3.get_object(Bucket=BUCKET, Key=index.replace("index.html", "task.png"))
    assert plot["Body"].read().startswith(b"\x89PNG")
    fetched = plugin(cluster, "report", "g1", "-n", namespace, "-o", str(tmp_path / "report"))
    assert fetched.returncode == 0, fetched.stderr
    assert "decision: Pass" in fetched.stdout and "general" in fetched.stdout
    assert (tmp_path / "report" / "index.html").read_text() == page
    assert (tmp_path / "report" / "task.png").read_bytes().startswith(b"\x89PNG")
    described = cluster.kubectl("describe", "evalgate", "g1", "-n", namespace).stdout
    assert "Verdict" in described and "general" in described

    # A second passing run replaces it; the first is kept in the history.
    second = succeeded_run(cluster, s3, namespace, prefix, "better")
    apply(cluster, namespace, gate("g2", "better", promotion))
    play_eval_pod(cluster, s3, namespace, "g2", GOOD)
    st2 = wait_phase_of(cluster, namespace, "g2", "Promoted")
    record2 = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{prefix}/serving/promotion.json")["Body"].read()
    )
    assert record2["current"]["source"] == second
    assert record2["previous"][0]["sha256"] == record["current"]["sha256"]
    assert st2["promoted"]["previous"] == record["current"]["sha256"]
    archived = s3.list_objects_v2(
        Bucket=BUCKET, Prefix=f"{prefix}/serving/.history/{record['current']['sha256'][:12]}/"
    )
    assert archived.get("KeyCount") == 2
    # The first gate sees it was replaced and does not take the URI back.
    st1 = wait_phase_of(cluster, namespace, "g1", "Superseded")
    assert second in condition(st1, "Promoted")["message"]
    time.sleep(6)
    assert (
        json.loads(
            s3.get_object(Bucket=BUCKET, Key=f"{prefix}/serving/promotion.json")["Body"].read()
        )["current"]["source"]
        == second
    )


def test_forgetful_candidate_is_rejected_and_never_promoted(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    succeeded_run(cluster, s3, namespace, prefix, "narrow")
    apply(cluster, namespace, gate("g", "narrow", f"s3://{BUCKET}/{prefix}/serving"))
    play_eval_pod(cluster, s3, namespace, "g", FORGETFUL)
    st = wait_phase_of(cluster, namespace, "g", "Rejected")
    assert st["decision"]["verdict"] == "Fail" and "general (retention)" in st["decision"]["reason"]
    assert {r["suite"]: r["verdict"] for r in st["results"]}["general"] == "Fail"
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/serving/").get("KeyCount") == 0
    assert cluster.kubectl("get", "configmap", "g-serving", "-n", namespace).returncode != 0


def test_manual_mode_waits_for_approval(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    succeeded_run(cluster, s3, namespace, prefix, "run")
    apply(cluster, namespace, gate("g", "run", f"s3://{BUCKET}/{prefix}/serving", mode="manual"))
    play_eval_pod(cluster, s3, namespace, "g", GOOD)
    st = wait_phase_of(cluster, namespace, "g", "AwaitingApproval")
    assert "tunegate.dev/approve=true" in condition(st, "Promoted")["message"]
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/serving/").get("KeyCount") == 0
    # Through the kubectl plugin, found on PATH as kubectl-tunegate.
    approved = plugin(cluster, "approve", "g", "-n", namespace)
    assert approved.returncode == 0, approved.stderr
    assert "approved; the operator promotes it now" in approved.stdout
    wait_phase_of(cluster, namespace, "g", "Promoted")


def test_gate_waits_for_its_finetunejob_and_reports_a_missing_one(
    operator: Any, crds: ClusterInfo, namespace: str, prefix: str
) -> None:
    cluster = crds
    apply(cluster, namespace, gate("g", "nope", f"s3://{BUCKET}/{prefix}/serving"))
    st = wait_phase_of(cluster, namespace, "g", "WaitingForCandidate")
    assert "spec.candidate.fineTuneJobRef.name" in condition(st, "CandidateReady")["message"]
    assert items(cluster, namespace, "jobs") == []


def test_tampered_adapter_is_not_promoted(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    adapter = succeeded_run(cluster, s3, namespace, prefix, "run")
    s3.put_object(
        Bucket=BUCKET,
        Key=f"{adapter.removeprefix(f's3://{BUCKET}/')}/adapter_model.safetensors",
        Body=b"swapped after training",
    )
    apply(cluster, namespace, gate("g", "run", f"s3://{BUCKET}/{prefix}/serving"))
    play_eval_pod(cluster, s3, namespace, "g", GOOD)
    wait_phase_of(cluster, namespace, "g", "Failed")
    events = [e for e in items(cluster, namespace, "events") if e["reason"] == "PromotionFailed"]
    assert events and "manifest says" in events[0]["message"]
    st = get(cluster, namespace, "evalgate", "g")["status"]
    assert condition(st, "Promoted")["reason"] == "PromotionFailed"
    time.sleep(8)  # a refused promotion is not retried until the spec changes
    again = [e for e in items(cluster, namespace, "events") if e["reason"] == "PromotionFailed"]
    assert sum(e.get("count", 1) for e in again) == sum(e.get("count", 1) for e in events)
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=BUCKET, Key=f"{prefix}/serving/promotion.json")


def test_scheduled_reevaluation_that_fails_restores_the_previous_version(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    promotion = f"s3://{BUCKET}/{prefix}/serving"
    first = succeeded_run(cluster, s3, namespace, prefix, "first")
    apply(cluster, namespace, gate("g1", "first", promotion))
    play_eval_pod(cluster, s3, namespace, "g1", GOOD)
    first_sha = wait_phase_of(cluster, namespace, "g1", "Promoted")["promoted"]["sha256"]
    succeeded_run(cluster, s3, namespace, prefix, "second")
    reevaluate = {"schedule": "* * * * *", "rollbackOnFail": True}
    apply(cluster, namespace, gate("g2", "second", promotion, reevaluate=reevaluate))
    play_eval_pod(cluster, s3, namespace, "g2", GOOD)
    st = wait_phase_of(cluster, namespace, "g2", "Promoted")
    second_sha = st["promoted"]["sha256"]
    assert st["reevaluation"]["nextAt"] > st["promoted"]["at"]

    # At the next minute the served adapter is judged again and still passes; the
    # condition saying so stays between rounds.
    config = play_eval_pod(cluster, s3, namespace, "g2", GOOD, job_name="g2-eval-1-r1", timeout=90)
    assert config["adapter"] == promotion
    assert config["results"].endswith("/evals/g2-g1-r1/results.json")

    def reevaluation() -> dict[str, Any]:
        return dict(get(cluster, namespace, "evalgate", "g2")["status"].get("reevaluation") or {})

    wait_until(
        lambda: reevaluation().get("lastVerdict") == "Pass",
        timeout=60,
        what=lambda: f"round 1 to pass (now {reevaluation()})",
    )
    time.sleep(6)
    st = get(cluster, namespace, "evalgate", "g2")["status"]
    assert st["phase"] == "Promoted" and condition(st, "Reevaluated")["reason"] == "Pass"

    # The minute after, it forgets (say the suites were refreshed): rolled back.
    play_eval_pod(cluster, s3, namespace, "g2", FORGETFUL, job_name="g2-eval-1-r2", timeout=90)
    st = wait_phase_of(cluster, namespace, "g2", "RolledBack")
    assert st["reevaluation"]["lastVerdict"] == "Fail" and st["reevaluation"]["round"] == 2
    assert st["promoted"]["sha256"] == first_sha and st["promoted"]["previous"] == second_sha
    assert condition(st, "Promoted")["reason"] == "RolledBack"
    record = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{prefix}/serving/promotion.json")["Body"].read()
    )
    assert record["current"]["sha256"] == first_sha
    assert record["rolledBack"][0]["sha256"] == second_sha
    for file in ("adapter_config.json", "adapter_model.safetensors"):
        original = s3.get_object(
            Bucket=BUCKET, Key=f"{first.removeprefix(f's3://{BUCKET}/')}/{file}"
        )["Body"].read()
        served = s3.get_object(Bucket=BUCKET, Key=f"{prefix}/serving/{file}")["Body"].read()
        assert served == original
    kept = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/serving/.history/{second_sha[:12]}/")
    assert kept.get("KeyCount") == 2
    assert get(cluster, namespace, "configmap", "g2-serving")["data"]["sha256"] == first_sha
    reasons = [e["reason"] for e in items(cluster, namespace, "events")]
    assert "RolledBack" in reasons and "ReevaluationFail" in reasons
    time.sleep(8)  # the rolled-back candidate is not promoted again
    again = get(cluster, namespace, "evalgate", "g2")["status"]
    assert again["phase"] == "RolledBack" and again["promoted"]["sha256"] == first_sha


def plugin(cluster: ClusterInfo, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl tunegate ...`: kubectl finds the plugin on PATH (the venv's bin)."""
    env = {**os.environ, **cluster.env()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [f"{cluster.bin_dir}/kubectl", "tunegate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


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
