"""What finished EvalGates cost the operator: CPU seconds per minute with 50 gates that
have reached their verdict (25 Rejected, 25 Passed; 4 suites of 400 items, 2000
bootstrap samples), against the same operator watching no gates, measured in the same
run on the local control plane (no real node).

A settled gate should cost a timer tick and one API read, not an S3 read and a
bootstrap every 5 s.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from tunegate_cluster import chart
from tunegate_cluster.cluster import ClusterInfo, LocalCluster
from tunegate_cluster.object_store import S3Access, s3_client
from tunegate_cluster.operator_process import OperatorProcess
from tunegate_cluster.processes import wait_until
from tunegate_contract.eval_results import EvalResults

GATES = 50
WINDOW_SECONDS = 60
NAMESPACE = "bench-gates"
ROLES = (("task", "target"), ("general", "retention"), ("drift", "drift"), ("safety", "safety"))
METRICS = {
    "target": "multipleChoiceAccuracy",
    "retention": "multipleChoiceAccuracy",
    "drift": "kl",
    "safety": "refusal",
}


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process and its reaped children, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")


def _per_minute(pid: int) -> float:
    start = cpu_seconds(pid)
    time.sleep(WINDOW_SECONDS)
    return (cpu_seconds(pid) - start) * 60 / WINDOW_SECONDS


def _results(rng: np.random.Generator, index: int, bucket: str) -> dict[str, Any]:
    """The eval pod's results.json for gate-<index> (every other candidate forgets)."""
    forgets = index % 2 == 0
    suites = []
    for name, role in ROLES:
        if role == "drift":
            kl = list(rng.exponential(0.02, 400))
            drift = {"name": name, "role": role, "metric": "kl", "items": 400}
            suites.append(drift | {"base": [], "candidate": kl})
            continue
        base = (rng.random(400) < 0.6).astype(float)
        candidate = base.copy()
        if role == "target":
            candidate[rng.random(400) < 0.5] = 1.0
        elif role == "retention" and forgets:
            candidate[rng.random(400) < 0.5] = 0.0
        suites.append(
            {
                "name": name,
                "role": role,
                "metric": METRICS[role],
                "items": len(candidate),
                "base": list(base),
                "candidate": list(candidate),
            }
        )
    return EvalResults.model_validate(
        {
            "gate": {"namespace": NAMESPACE, "name": f"gate-{index}", "uid": "-", "generation": 1},
            "base_model": f"s3://{bucket}/bench/model",
            "adapter": f"s3://{bucket}/bench/a{index}/adapter",
            "suites": suites,
            "created_at": "2026-01-01T00:00:00Z",
        }
    ).to_json()


def _gate(index: int, bucket: str) -> dict[str, Any]:
    suites = []
    for name, role in ROLES:
        suite: dict[str, Any] = {
            "name": name,
            "role": role,
            "dataset": f"s3://{bucket}/bench/{name}.jsonl",
            "metric": METRICS[role],
        }
        suite.update(
            {"target": {"minImprovement": 0.1}, "drift": {"maxKL": 0.5}}.get(
                role, {"maxRegression": 0.05}
            )
        )
        suites.append(suite)
    return {
        "apiVersion": "tunegate.dev/v1alpha1",
        "kind": "EvalGate",
        "metadata": {"name": f"gate-{index}"},
        "spec": {
            "candidate": {
                "adapterUri": f"s3://{bucket}/bench/a{index}/adapter",
                "baseModel": {"uri": f"s3://{bucket}/bench/model"},
            },
            "suites": suites,
            "bootstrapSamples": 2000,
            "resources": {"gpus": 0, "nodeSelector": {"tunegate.dev/pool": "cpu"}},
        },
    }


def _settle(info: ClusterInfo) -> None:
    s3 = s3_client(
        S3Access(info.s3_endpoint, info.s3_access_key, info.s3_secret_key, info.s3_bucket)
    )
    rng = np.random.default_rng(0)
    for index in range(GATES):
        key = f"bench/a{index}/evals/gate-{index}-g1/results.json"
        body = json.dumps(_results(rng, index, info.s3_bucket)).encode()
        s3.put_object(Bucket=info.s3_bucket, Key=key, Body=body)
    gates = [_gate(i, info.s3_bucket) for i in range(GATES)]
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": gates})
    applied = info.kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=document)
    assert applied.returncode == 0, applied.stderr

    def phases() -> list[str]:
        listed = info.kubectl("get", "evalgates", "-n", NAMESPACE, "-o", "json")
        return [
            (g.get("status") or {}).get("phase", "") for g in json.loads(listed.stdout)["items"]
        ]

    wait_until(
        lambda: sorted(set(phases())) == ["Passed", "Rejected"],
        timeout=600,
        what=lambda: f"every gate to reach its verdict (now {sorted(phases())})",
    )


def run(info: ClusterInfo) -> tuple[float, float]:
    root = Path(__file__).resolve().parents[1]
    info.kubectl("apply", "--server-side", "-f", str(root / "crds"))
    info.kubectl("wait", "--for=condition=Established", "crd/evalgates.tunegate.dev")
    chart.install(info, {"operator.replicas": 0})
    info.kubectl("create", "namespace", NAMESPACE)
    operator = OperatorProcess(
        info, Path(tempfile.mkdtemp(prefix="tunegate-bench-")), verbose=False
    )
    operator.start()
    try:
        assert operator.proc is not None
        time.sleep(10)  # imports and the first list/watch
        idle = _per_minute(operator.proc.pid)
        _settle(info)
        time.sleep(10)  # the last verdicts' status writes
        settled = _per_minute(operator.proc.pid)
    finally:
        operator.stop()
    return idle, settled


def main() -> None:
    with LocalCluster(real_node=False) as info:
        idle, settled = run(info)
    print(f"operator CPU, {WINDOW_SECONDS} s windows (5 s timer per object)")
    print(f"  baseline: no EvalGates            {idle:6.2f} CPU s/min")
    print(f"  {GATES} finished EvalGates           {settled:6.2f} CPU s/min")
    print(
        f"  ratio {settled / idle:.2f}x; per finished gate "
        f"{(settled - idle) / GATES * 1000:.1f} CPU ms/min"
    )
