"""Apply 100 FineTuneJobs at once: time from apply to training pod created (p50, p95),
against 100 bare Jobs applied the same way in the same run, plus the operator's peak RSS.

The FineTuneJobs skip the data audit (spec.audit.mode off): this measures the
operator's own scheduling path, not the audit's duration.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from tunegate_cluster import chart
from tunegate_cluster.cluster import ClusterInfo, LocalCluster
from tunegate_cluster.object_store import S3Access, s3_client
from tunegate_cluster.operator_process import OperatorProcess
from tunegate_operator.planner.shapes import SMOLLM2_135M

COUNT = 100
SMALL_MODEL = SMOLLM2_135M


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def bare_job(name: str, gpus: int = 1) -> dict[str, Any]:
    """The baseline: a Job asking what a training pod asks, with no operator between."""
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": {"annotations": {"tunegate.dev/fake-duration": "1h"}},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {"tunegate.dev/pool": "a100-80g"},
                    "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists"}],
                    "containers": [
                        {
                            "name": "train",
                            "image": "x",
                            "command": ["train"],
                            "resources": {"limits": {"nvidia.com/gpu": str(gpus)}},
                        }
                    ],
                },
            },
        },
    }


def _first_pod_times(
    *,
    api: client.CoreV1Api,
    namespace: str,
    label: str,
    expected: int,
    stop: threading.Event,
    out: dict[str, float],
) -> None:
    stream = watch.Watch().stream(api.list_namespaced_pod, namespace, timeout_seconds=300)
    for event in stream:
        pod = event["raw_object"]
        owner = (pod["metadata"].get("labels") or {}).get(label)
        if owner and owner not in out:
            out[owner] = time.monotonic()
        if len(out) >= expected or stop.is_set():
            return


def apply_and_time_pods(
    info: ClusterInfo, api: client.CoreV1Api, namespace: str, manifests: list[Any], label: str
) -> list[float]:
    times: dict[str, float] = {}
    stop = threading.Event()
    watcher = threading.Thread(
        target=_first_pod_times,
        kwargs={
            "api": api,
            "namespace": namespace,
            "label": label,
            "expected": len(manifests),
            "stop": stop,
            "out": times,
        },
    )
    watcher.start()
    time.sleep(1)
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
    started = time.monotonic()
    result = info.kubectl("apply", "-n", namespace, "-f", "-", stdin=document)
    assert result.returncode == 0, result.stderr
    watcher.join(timeout=300)
    stop.set()
    if len(times) < len(manifests):
        raise RuntimeError(f"only {len(times)} of {len(manifests)} pods appeared")
    return [t - started for t in times.values()]


def run(info: ClusterInfo) -> dict[str, float]:
    root = Path(__file__).resolve().parents[1]
    info.kubectl("apply", "--server-side", "-f", str(root / "crds"))
    info.kubectl("wait", "--for=condition=Established", "crd/finetunejobs.tunegate.dev")
    chart.install(info, {"operator.replicas": 0})  # the peering object, as in production
    s3 = s3_client(
        S3Access(info.s3_endpoint, info.s3_access_key, info.s3_secret_key, info.s3_bucket)
    )
    s3.put_object(
        Bucket=info.s3_bucket, Key="bench/model/config.json", Body=json.dumps(SMALL_MODEL).encode()
    )
    s3.put_object(Bucket=info.s3_bucket, Key="bench/train.jsonl", Body=b'{"text": "x"}\n')
    config.load_kube_config(config_file=info.kubeconfig)
    api = client.CoreV1Api()
    for namespace in ("bench-jobs", "bench-ftjs"):
        info.kubectl("create", "namespace", namespace)

    jobs = [bare_job(f"bare-{i}") for i in range(COUNT)]
    baseline = apply_and_time_pods(info, api, "bench-jobs", jobs, "job-name")

    log_dir = Path(tempfile.mkdtemp(prefix="tunegate-bench-"))
    operator = OperatorProcess(info, log_dir, verbose=False)
    operator.start()
    time.sleep(3)
    ftjs = [
        {
            "apiVersion": "tunegate.dev/v1alpha1",
            "kind": "FineTuneJob",
            "metadata": {"name": f"ftj-{i}"},
            "spec": {
                "model": {"uri": f"s3://{info.s3_bucket}/bench/model"},
                "dataset": {"train": f"s3://{info.s3_bucket}/bench/train.jsonl"},
                "output": {"uri": f"s3://{info.s3_bucket}/bench/out/{i}"},
                "audit": {"mode": "off"},
                "resources": {"gpusPerNode": 1, "nodeSelector": {"tunegate.dev/pool": "a100-80g"}},
            },
        }
        for i in range(COUNT)
    ]
    try:
        operator_times = apply_and_time_pods(
            info, api, "bench-ftjs", ftjs, "tunegate.dev/finetunejob"
        )
        assert operator.proc is not None
        rss_kib = memory_kib(operator.proc.pid)
    finally:
        operator.stop()
    return {
        "bare_job_p50_s": statistics.median(baseline),
        "bare_job_p95_s": percentile(baseline, 0.95),
        "finetunejob_p50_s": statistics.median(operator_times),
        "finetunejob_p95_s": percentile(operator_times, 0.95),
        "operator_peak_rss_mib": rss_kib / 1024,
    }


def memory_kib(pid: int, field: str = "VmHWM") -> float:
    """A /proc/<pid>/status memory field: VmHWM is the peak RSS, VmRSS the current."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return float(line.split()[1])
    return float("nan")


def main() -> None:
    with LocalCluster() as info:
        results = run(info)
    print(f"apply -> pod created, {COUNT} objects applied at once")
    print(
        f"  baseline: bare Job      p50 {results['bare_job_p50_s']:.2f}s  "
        f"p95 {results['bare_job_p95_s']:.2f}s"
    )
    print(
        f"  tunegate: FineTuneJob   p50 {results['finetunejob_p50_s']:.2f}s  "
        f"p95 {results['finetunejob_p95_s']:.2f}s"
    )
    print(
        f"  ratio p50 {results['finetunejob_p50_s'] / results['bare_job_p50_s']:.2f}x  "
        f"p95 {results['finetunejob_p95_s'] / results['bare_job_p95_s']:.2f}x  (goal <= 1.5x)"
    )
    print(f"  operator peak RSS {results['operator_peak_rss_mib']:.0f} MiB")


if __name__ == "__main__":
    main()
