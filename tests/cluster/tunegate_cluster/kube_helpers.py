"""Helpers for tests that drive the operator through kubectl and S3."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from tunegate_cluster.cluster import ClusterInfo
from tunegate_cluster.processes import wait_until
from tunegate_contract.run_documents import Manifest
from tunegate_operator.planner.shapes import SMOLLM2_135M

BUCKET = "tunegate"
SMALL_MODEL = SMOLLM2_135M


def put_json(s3: Any, key: str, document: dict[str, Any]) -> None:
    s3.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(document).encode())


def ftj(name: str, prefix: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": {"uri": f"s3://{BUCKET}/{prefix}/model"},
        "dataset": {"train": f"s3://{BUCKET}/{prefix}/data/train.jsonl", "format": "text"},
        "output": {"uri": f"s3://{BUCKET}/{prefix}/out/{name}"},
        "resources": {"gpusPerNode": 2, "nodeSelector": {"tunegate.dev/pool": "a100-80g"}},
        "runPolicy": {"backoffLimit": 1},
    }
    for key, value in spec.items():
        body[key] = {**body.get(key, {}), **value} if isinstance(value, dict) else value
    return {
        "apiVersion": "tunegate.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": body,
    }


def apply(cluster: ClusterInfo, namespace: str, manifest: dict[str, Any]) -> None:
    result = cluster.kubectl("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))
    assert result.returncode == 0, result.stderr


def get(cluster: ClusterInfo, namespace: str, kind: str, name: str) -> dict[str, Any]:
    result = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json")
    assert result.returncode == 0, result.stderr
    return dict(json.loads(result.stdout))


def items(
    cluster: ClusterInfo, namespace: str, kind: str, selector: str = ""
) -> list[dict[str, Any]]:
    args = ["get", kind, "-n", namespace, "-o", "json"]
    if selector:
        args += ["-l", selector]
    return list(json.loads(cluster.kubectl(*args).stdout)["items"])


def status(cluster: ClusterInfo, namespace: str, name: str) -> dict[str, Any]:
    return dict(get(cluster, namespace, "ftj", name).get("status") or {})


def condition(st: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in st.get("conditions") or [] if c["type"] == kind), {})


def wait_phase(
    cluster: ClusterInfo, namespace: str, name: str, phase: str, timeout: float = 60
) -> dict[str, Any]:
    wait_until(
        lambda: status(cluster, namespace, name).get("phase") == phase,
        timeout=timeout,
        what=lambda: f"{name} phase {phase} (now {status(cluster, namespace, name)})",
    )
    return status(cluster, namespace, name)


def wait_job(
    cluster: ClusterInfo, namespace: str, name: str, timeout: float = 60
) -> dict[str, Any]:
    wait_until(
        lambda: cluster.kubectl("get", "job", name, "-n", namespace).returncode == 0,
        timeout=timeout,
        what=f"Job {name}",
    )
    return get(cluster, namespace, "job", name)


def pass_audit(cluster: ClusterInfo, s3: Any, namespace: str, name: str, prefix: str) -> None:
    wait_job(cluster, namespace, f"{name}-audit")
    put_json(s3, f"{prefix}/out/{name}/audit/report.json", {"verdict": "Passed", "findings": []})


def manifest_document(
    adapter_uri: str, *, sha256: str, files: dict[str, str], trainable: int, loss: float
) -> dict[str, Any]:
    """A complete manifest as the trainer writes it (through the same model)."""
    document = {
        "run": {"namespace": "it", "name": "run", "uid": "uid", "attempt": 1},
        "base_model": {"uri": "s3://models/base", "sha256": "0" * 64},
        "datasets": {},
        "method": "lora",
        "hyperparameters": {},
        "trainable_parameters": trainable,
        "total_parameters": trainable * 10,
        "final_metrics": {"train_loss": loss + 0.5, "last_loss": loss},
        "code_version": "test",
        "adapter": {"uri": adapter_uri, "sha256": sha256, "size_bytes": 1234, "files": files},
        "created_at": "2026-01-01T00:00:00Z",
    }
    return Manifest.parse(document, where="the test's manifest").to_json()


def write_manifest(s3: Any, prefix: str, name: str) -> None:
    adapter = f"s3://{BUCKET}/{prefix}/out/{name}/adapter"
    document = manifest_document(adapter, sha256="ab" * 32, files={}, trainable=4194304, loss=0.42)
    put_json(s3, f"{prefix}/out/{name}/manifest.json", document)


def end_pods(
    cluster: ClusterInfo, namespace: str, job: str, exit_code: int, message: str = ""
) -> None:
    """Report the job's pods as exited with `exit_code` once they run, as a kubelet does
    when the trainer exits."""
    wait_until(
        lambda: any(
            p["status"].get("phase") == "Running"
            for p in items(cluster, namespace, "pod", f"job-name={job}")
        ),
        timeout=60,
        what=f"pods of {job} running",
    )
    for pod in items(cluster, namespace, "pod", f"job-name={job}"):
        result = end_pod(cluster, namespace, pod["metadata"]["name"], exit_code, message)
        assert result.returncode == 0, result.stderr


def end_pod(
    cluster: ClusterInfo, namespace: str, pod: str, exit_code: int, message: str = ""
) -> subprocess.CompletedProcess[str]:
    """Report the pod's container as exited with `exit_code`, as a kubelet does; kwok
    keeps a pod Running until told."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    terminated = {
        "exitCode": exit_code,
        "reason": "Completed" if exit_code == 0 else "Error",
        "message": message,
        "startedAt": now,
        "finishedAt": now,
    }
    patch = {
        "status": {
            "phase": "Succeeded" if exit_code == 0 else "Failed",
            "containerStatuses": [
                {
                    "name": "train",
                    "image": "x",
                    "imageID": "",
                    "ready": False,
                    "restartCount": 0,
                    "state": {"terminated": terminated},
                }
            ],
        }
    }
    return cluster.kubectl(
        "patch",
        "pod",
        pod,
        "-n",
        namespace,
        "--subresource=status",
        "--type=strategic",
        "-p",
        json.dumps(patch),
    )


def env_of(job: dict[str, Any]) -> dict[str, Any]:
    container = job["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
