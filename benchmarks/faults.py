"""The reliability table: every case of the fault suite (tests/faults) run once on a
fresh local cluster, printed as fault, times injected, outcome, invariant violations
(must be 0) and recovery time (from the fault's end until the whole fleet finished).
The `none` row is the baseline: the same fleet with nothing injected."""

from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

from tunegate_cluster import chart
from tunegate_cluster.cluster import LocalCluster
from tunegate_cluster.fault_cases import CASES, CaseResult, run_case, table

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    results: list[CaseResult] = []
    with LocalCluster(real_node=False) as info:  # the fleet's pods are kwok's
        info.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
        for crd in ("finetunejobs.tunegate.dev", "evalgates.tunegate.dev"):
            info.kubectl("wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s")
        chart.install(info, chart.process_operator_values(info, secret="tunegate-s3"))
        work = Path(tempfile.mkdtemp(prefix="tunegate-bench-faults-"))
        kubeconfig = chart.service_account_kubeconfig(info, work / "kubeconfig")
        for case in CASES:
            log_dir = work / case.name.replace(" ", "-")
            log_dir.mkdir()
            result = run_case(case, info, operator_kubeconfig=kubeconfig, log_dir=log_dir)
            results.append(result)
            print(f"  {case.name}: {result.outcome} in {result.seconds:.0f}s", flush=True)
            for line in result.violations:
                print(f"    violation: {line}")
    print(f"reliability, {time.strftime('%Y-%m-%d')}, {platform.node()} ({_cores()} cores)")
    print(table(results))
    baseline = next(r for r in results if r.fault == "none")
    print(f"baseline (no fault): the fleet finished in {baseline.seconds:.0f}s")
    print(f"invariant violations in all: {sum(len(r.violations) for r in results)}")


def _cores() -> int:
    return len(os.sched_getaffinity(0))
