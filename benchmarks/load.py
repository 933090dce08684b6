"""Load: 1,000 FineTuneJobs and 200 EvalGates applied at once on kwok pools and played
to the end (every other run audited; each gate judges one run, one in five rejects it),
against as many bare Jobs applied the same way in the same run.

Reports the operator's peak RSS and its growth per object, its CPU seconds, apply ->
first pod and apply -> terminal phase (p50, p95), and the Kubernetes API requests its
reconcilers sent per reconcile. Goals: RSS <= 250 MiB at 1,000 objects, time-to-pod p95
<= 1.2x a bare Job's.

    python -m benchmarks load [RUNS GATES]
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.finished_gates import cpu_seconds
from benchmarks.operator_latency import apply_and_time_pods, bare_job, memory_kib, percentile
from tunegate_cluster import chart
from tunegate_cluster.cluster import ClusterInfo, LocalCluster
from tunegate_cluster.fleet import FleetPlan, Player, finished, prepare_namespace
from tunegate_cluster.node_pools import FAKE_POOLS, node_manifest
from tunegate_cluster.object_store import S3Access, s3_client
from tunegate_cluster.operator_process import OperatorProcess

ROOT = Path(__file__).resolve().parents[1]
RUNS, GATES = 1000, 200
QUICK = (40, 8)  # TUNEGATE_BENCH_QUICK: the suite's check that it runs
NAMESPACE, BARE_NAMESPACE = "load", "load-bare"
TIMEOUT_SECONDS = 3600
TERMINAL = {"Succeeded", "Failed", "Promoted", "Rejected", "Passed"}
RSS_GOAL_MIB, POD_P95_GOAL = 250, 1.2


@dataclass
class FirstSeen:
    """When each object was first seen in a state, from a watch (no polling delay)."""

    out: dict[str, float] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def follow(self, list_call: Callable[..., Any], *args: Any, key: Callable[[Any], Any]) -> None:
        def loop() -> None:
            while not self.stop.is_set():
                try:
                    for event in watch.Watch().stream(list_call, *args, timeout_seconds=30):
                        name = key(event["raw_object"])
                        if name and name not in self.out:
                            self.out[name] = time.monotonic()
                        if self.stop.is_set():
                            return
                except (client.ApiException, urllib3.exceptions.HTTPError):
                    time.sleep(1)  # the stream broke (or the cluster is going): watch again

        threading.Thread(target=loop, daemon=True).start()


def _first_pod_owner(pod: dict[str, Any]) -> str | None:
    job = (pod["metadata"].get("labels") or {}).get("job-name", "")
    for kind in ("-audit", "-train-1", "-eval-1"):
        if job.endswith(kind):
            return job.removesuffix(kind)
    return None


def _terminal_name(item: dict[str, Any]) -> str | None:
    phase = (item.get("status") or {}).get("phase")
    return item["metadata"]["name"] if phase in TERMINAL else None


def _add_nodes(info: ClusterInfo, runs: int, gates: int) -> None:
    """Enough GPU nodes that every run trains at once, and CPU nodes for the audit and
    eval pods: terminal times then measure the operator, not a GPU queue."""
    pools = {pool.name: pool for pool in FAKE_POOLS}
    a100, cpu = pools["a100-80g"], pools["cpu"]
    nodes = [
        node_manifest(a100, f"{a100.name}-load-{i}", managed_by_kwok=True)
        for i in range(math.ceil(runs / a100.gpus))
    ] + [
        node_manifest(cpu, f"{cpu.name}-load-{i}", managed_by_kwok=True)
        for i in range(math.ceil((runs / 2 + gates) / 100))
    ]
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": nodes})
    created = info.kubectl("apply", "-f", "-", stdin=document)
    assert created.returncode == 0, created.stderr


def _metric_totals(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_total"):
                totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
    return totals


def _bare_jobs_to_pod(info: ClusterInfo, core: client.CoreV1Api, count: int) -> list[float]:
    """The baseline, then gone: its pods would hold the GPUs the fleet needs."""
    info.kubectl("create", "namespace", BARE_NAMESPACE)
    bare = [bare_job(f"bare-{i}") for i in range(count)]
    baseline = apply_and_time_pods(info, core, BARE_NAMESPACE, bare, "job-name")
    info.kubectl("delete", "namespace", BARE_NAMESPACE, "--wait=true", "--timeout=300s")
    return baseline


def run(info: ClusterInfo, runs: int, gates: int) -> dict[str, Any]:
    info.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    for crd in ("finetunejobs.tunegate.dev", "evalgates.tunegate.dev"):
        info.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
    chart.install(info, {"operator.replicas": 0})  # the peering object, as in production
    _add_nodes(info, runs, gates)
    config.load_kube_config(config_file=info.kubeconfig)
    core, custom = client.CoreV1Api(), client.CustomObjectsApi()
    baseline = _bare_jobs_to_pod(info, core, runs)

    s3 = s3_client(
        S3Access(info.s3_endpoint, info.s3_access_key, info.s3_secret_key, info.s3_bucket)
    )
    prefix = f"load/{NAMESPACE}"
    prepare_namespace(info, s3, NAMESPACE, prefix)
    plan = FleetPlan(
        runs=runs,
        gates=gates,
        rejected=frozenset(range(4, gates, 5)),
        train_seconds=(5.0, 20.0),
        eval_seconds=(3.0, 10.0),
        audit_seconds=(2.0, 5.0),
    )
    manifests = plan.manifests(prefix)
    for manifest in manifests:
        if manifest["kind"] == "FineTuneJob":  # one GPU, as the bare Job asks
            manifest["spec"]["resources"]["gpusPerNode"] = 1
    player = Player(info, s3, NAMESPACE, prefix, plan)

    operator = OperatorProcess(
        info, Path(tempfile.mkdtemp(prefix="tunegate-bench-load-")), verbose=False
    )
    operator.start()
    assert operator.proc is not None
    pid = operator.proc.pid
    time.sleep(15)  # imports, the first list and watch
    idle_rss, idle_cpu = memory_kib(pid, "VmRSS"), cpu_seconds(pid)

    pods, terminal = FirstSeen(), FirstSeen()
    pods.follow(core.list_namespaced_pod, NAMESPACE, key=_first_pod_owner)
    for plural in ("finetunejobs", "evalgates"):
        terminal.follow(
            custom.list_namespaced_custom_object,
            "tunegate.dev",
            "v1alpha1",
            NAMESPACE,
            plural,
            key=_terminal_name,
        )
    time.sleep(2)
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
    applied_at = time.monotonic()
    applied = info.kubectl("apply", "-n", NAMESPACE, "-f", "-", stdin=document)
    assert applied.returncode == 0, applied.stderr
    try:
        while time.monotonic() < applied_at + TIMEOUT_SECONDS:
            player.step()
            if finished(info, NAMESPACE, plan.expected()):
                break
            time.sleep(1)
        else:
            raise RuntimeError(f"the fleet did not finish in {TIMEOUT_SECONDS}s")
        ended = time.monotonic()
        time.sleep(10)  # the last status writes
        totals = _metric_totals(operator.metrics_port)
        cpu = cpu_seconds(pid) - idle_cpu
        peak = memory_kib(pid)
    finally:
        pods.stop.set()
        terminal.stop.set()
        operator.stop()
    run_names = set(plan.run_names())
    to_pod = [t - applied_at for name, t in pods.out.items() if name in run_names]
    to_end = [t - applied_at for t in terminal.out.values()]
    objects = runs + gates
    return {
        "bare_p50": statistics.median(baseline),
        "bare_p95": percentile(baseline, 0.95),
        "pod_p50": statistics.median(to_pod),
        "pod_p95": percentile(to_pod, 0.95),
        "end_p50": statistics.median(to_end),
        "end_p95": percentile(to_end, 0.95),
        "fleet_seconds": ended - applied_at,
        "idle_rss_mib": idle_rss / 1024,
        "peak_rss_mib": peak / 1024,
        "rss_kib_per_object": (peak - idle_rss) / objects,
        "cpu_seconds": cpu,
        "reconciles": totals.get("tunegate_reconciles_total", 0.0),
        "api_requests": totals.get("tunegate_api_requests_total", 0.0),
        "objects": objects,
    }


def main(sizes: list[int] | None = None) -> None:
    runs, gates = sizes or (QUICK if os.environ.get("TUNEGATE_BENCH_QUICK") else (RUNS, GATES))
    with LocalCluster(real_node=False) as info:
        r = run(info, runs, gates)
    print(f"{runs} FineTuneJobs and {gates} EvalGates applied at once, played to the end")
    for label, key in (("baseline: bare Job", "bare"), ("FineTuneJob", "pod")):
        print(f"  apply -> pod, {label:<20} p50 {r[key + '_p50']:.2f}s  p95 {r[key + '_p95']:.2f}s")
    print(
        f"  ratio p50 {r['pod_p50'] / r['bare_p50']:.2f}x  "
        f"p95 {r['pod_p95'] / r['bare_p95']:.2f}x  (goal <= {POD_P95_GOAL}x)"
    )
    print(
        f"  apply -> terminal phase  p50 {r['end_p50']:.0f}s  p95 {r['end_p95']:.0f}s  "
        f"(whole fleet {r['fleet_seconds']:.0f}s)"
    )
    print(
        f"  operator peak RSS {r['peak_rss_mib']:.0f} MiB (goal <= {RSS_GOAL_MIB}); idle "
        f"{r['idle_rss_mib']:.0f} MiB, {r['rss_kib_per_object']:.0f} KiB per object"
    )
    print(
        f"  operator CPU {r['cpu_seconds']:.0f} s; {r['reconciles']:.0f} reconciles, "
        f"{r['api_requests'] / max(r['reconciles'], 1):.2f} API requests per reconcile"
    )
