"""The fault suite's cases: each plays the fleet (20 FineTuneJobs, 5 EvalGates) with one
kind of fault injected while it runs, then judges the invariants. The tests in
tests/faults assert no violation; `python -m benchmarks faults` prints the table."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from tunegate_cluster.cluster import ClusterInfo
from tunegate_cluster.fault_proxy import Fault, FaultProxy
from tunegate_cluster.fleet import (
    PLANTED_SECRET,
    FleetPlan,
    Player,
    finished,
    phases,
    prepare_namespace,
    read_snapshot,
    running_jobs,
)
from tunegate_cluster.invariants import violations
from tunegate_cluster.kube_helpers import apply, end_pods
from tunegate_cluster.node_pools import FAKE_POOLS, node_manifest
from tunegate_cluster.object_store import S3Access, s3_client
from tunegate_cluster.operator_process import OperatorProcess

# Long enough for the slowest case (a minute of S3 faults) with room to recover.
FLEET_TIMEOUT_SECONDS = 420
MINUTE = 60.0


@dataclass
class Scene:
    """What a fault can reach while the fleet plays."""

    cluster: ClusterInfo
    namespace: str
    operator: OperatorProcess
    proxy: FaultProxy
    player: Player
    rng: random.Random
    done: threading.Event
    injected: int = 0
    attempts: dict[str, int] = field(default_factory=dict)  # runs a fault made retry
    cleared_at: float | None = None  # when the last fault ended (monotonic)
    notes: list[str] = field(default_factory=list)

    def wait(self, seconds: float) -> bool:
        """Sleep unless the fleet finishes first; True when it did."""
        return self.done.wait(seconds)

    def wait_for(self, predicate: Callable[[], bool], *, poll: float = 0.3) -> bool:
        """Wait until `predicate` holds; False when the fleet finished first."""
        while not self.done.is_set():
            if predicate():
                return True
            time.sleep(poll)
        return False

    def cleared(self) -> None:
        self.cleared_at = time.monotonic()

    def any_phase(self, *wanted: str) -> bool:
        now = phases(self.cluster, self.namespace) or {}
        return any(phase in wanted for phase in now.values())


@dataclass(frozen=True)
class FaultCase:
    name: str
    inject: Callable[[Scene], None]
    s3_through_proxy_for_pods: bool = False  # the server itself is faulty, not one link


@dataclass
class CaseResult:
    fault: str
    injected: int
    finished: bool
    violations: list[str]
    seconds: float
    recovery_seconds: float | None
    notes: list[str]

    @property
    def outcome(self) -> str:
        if not self.finished:
            return "did not finish"
        return "all finished" if not self.violations else "finished, invariants broken"


# -- the faults -------------------------------------------------------------------------


def no_fault(scene: Scene) -> None:
    """The baseline the recovery times are read against."""


def operator_killed(times: int) -> Callable[[Scene], None]:
    def inject(scene: Scene) -> None:
        for _ in range(times):
            if scene.wait(scene.rng.uniform(0.5, 5.0)):
                return
            scene.operator.kill()  # SIGKILL; run_case starts it again, as a Deployment would
            scene.injected += 1
            scene.cleared()

    return inject


def s3_down_during(request: str, *, seconds: float) -> Callable[[Scene], None]:
    """S3 stops the moment a request matching `request` (a regular expression over the
    HTTP request line) is under way, that request cut, and comes back after `seconds`."""

    def inject(scene: Scene) -> None:
        tripped = threading.Event()
        scene.proxy.arm(re.compile(request.encode(), re.MULTILINE), Fault.DOWN, tripped)
        if not scene.wait_for(tripped.is_set, poll=0.05):
            scene.notes.append(f"no request matched {request}")
            return
        scene.injected += 1
        scene.wait(seconds)
        scene.proxy.inject(Fault.NONE)
        scene.cleared()

    return inject


def s3_faulty_for(fault: Fault, *, seconds: float) -> Callable[[Scene], None]:
    """From the first training on, S3 is slow or resets connections for `seconds`."""

    def inject(scene: Scene) -> None:
        if not scene.wait_for(lambda: scene.any_phase("Training")):
            return
        scene.proxy.inject(fault)
        scene.injected += 1
        scene.wait(seconds)
        scene.proxy.inject(Fault.NONE)
        scene.cleared()

    return inject


def control_plane_restarted(component: str) -> Callable[[Scene], None]:
    """SIGKILL `component` (etcd, kube-apiserver) mid-run; the harness starts it again
    as a kubelet restarts a static pod."""

    def inject(scene: Scene) -> None:
        pid_file = Path(scene.cluster.state_dir) / "logs" / f"{component}.pid"
        if not scene.wait_for(lambda: scene.any_phase("Training")):
            return
        old = int(pid_file.read_text())
        os.kill(old, signal.SIGKILL)
        scene.injected += 1
        back = scene.wait_for(
            lambda: (
                int(pid_file.read_text() or 0) != old
                and scene.cluster.kubectl("get", "--raw", "/readyz").returncode == 0
            )
        )
        if not back:
            scene.notes.append(f"{component} was not back before the fleet finished")
        scene.cleared()

    return inject


def pod_killed(kind: str) -> Callable[[Scene], None]:
    """SIGKILL the first running `kind` (train, eval) pod that has not written yet, as
    the kubelet reports it: Failed, exit code 137. A training attempt fails and the
    operator starts the next; the eval Job replaces its pod (backoffLimit 1)."""

    def inject(scene: Scene) -> None:
        target: list[str] = []

        def running_unwritten() -> bool:
            for job in sorted(running_jobs(scene.cluster, scene.namespace) or ()):
                left = scene.player.seconds_to_write(job)
                if job.endswith(f"-{kind}-1") and left is not None and left > 3:
                    target.append(job)
                    return True
            return False

        if not scene.wait_for(running_unwritten):
            return
        job = target[0]
        end_pods(scene.cluster, scene.namespace, job, 137, "Killed")
        scene.injected += 1
        if kind == "train":
            scene.attempts[job.removesuffix("-train-1")] = 2
        scene.cleared()

    return inject


def _pods_by_node(scene: Scene) -> dict[str, list[dict[str, Any]]] | None:
    listed = scene.cluster.kubectl("get", "pods", "-n", scene.namespace, "-o", "json")
    if listed.returncode != 0:
        return None
    found: dict[str, list[dict[str, Any]]] = {}
    for pod in json.loads(listed.stdout)["items"]:
        if pod["status"].get("phase") in ("Pending", "Running"):
            found.setdefault(pod["spec"].get("nodeName", ""), []).append(pod)
    return found


def node_deleted(pool: str) -> Callable[[Scene], None]:
    """A `pool` node running only training pods that have yet to write is deleted (a
    cloud reclaiming it); its pods never write. The pod garbage collector fails them
    with DisruptionTarget, each attempt ends through its podFailurePolicy and the run
    retries without using its backoff. The node comes back once its pods are gone, as
    an autoscaler replaces a node."""
    (spec,) = [p for p in FAKE_POOLS if p.name == pool]

    def inject(scene: Scene) -> None:
        chosen: list[tuple[str, list[str]]] = []

        def training_node() -> bool:
            for node, pods in sorted((_pods_by_node(scene) or {}).items()):
                jobs = [p["metadata"].get("labels", {}).get("job-name", "") for p in pods]
                if node.startswith(f"{pool}-") and all(
                    "-train-" in job
                    and (left := scene.player.seconds_to_write(job)) is not None
                    and left > 3
                    for job in jobs
                ):
                    chosen.append((node, jobs))
                    return True
            return False

        if not scene.wait_for(training_node):
            return
        node, jobs = chosen[0]
        for job in jobs:
            scene.player.lose(job)
        if scene.cluster.kubectl("delete", "node", node, "--wait=false").returncode != 0:
            scene.notes.append(f"node {node} could not be deleted")
            return
        scene.injected += 1
        for job in jobs:
            run, attempt = job.rsplit("-train-", 1)
            scene.attempts[run] = int(attempt) + 1
        gone = scene.wait_for(lambda: node not in (_pods_by_node(scene) or {node: []}), poll=1)
        if not gone:
            scene.notes.append(f"the pods of node {node} were still there at the end")
        back = node_manifest(spec, node, managed_by_kwok=True)
        apply_node = scene.cluster.kubectl("apply", "-f", "-", stdin=json.dumps(back))
        if apply_node.returncode != 0:
            scene.notes.append(f"node {node} could not be recreated: {apply_node.stderr}")
        scene.cleared()

    return inject


CASES = [
    FaultCase("none", no_fault),
    FaultCase("operator SIGKILL x10", operator_killed(10)),
    FaultCase(
        "S3 stopped during a manifest write",
        s3_down_during(r"^PUT \S*/manifest\.json ", seconds=15),
        s3_through_proxy_for_pods=True,
    ),
    FaultCase(
        "S3 stopped during an eval results write",
        s3_down_during(r"^PUT \S*/results\.json ", seconds=15),
        s3_through_proxy_for_pods=True,
    ),
    FaultCase(
        "S3 stopped during a promotion",
        s3_down_during(r"^PUT \S*/serving/\S*/versions/", seconds=15),
        s3_through_proxy_for_pods=True,
    ),
    FaultCase("training pod SIGKILLed", pod_killed("train")),
    FaultCase("eval pod SIGKILLed mid-suite", pod_killed("eval")),
    FaultCase("a100 node deleted under training pods", node_deleted("a100-80g")),
    FaultCase("etcd restarted", control_plane_restarted("etcd")),
    FaultCase("kube-apiserver restarted", control_plane_restarted("kube-apiserver")),
    FaultCase("S3 slow for a minute", s3_faulty_for(Fault.SLOW, seconds=MINUTE)),
    FaultCase("S3 resets connections for a minute", s3_faulty_for(Fault.RESET, seconds=MINUTE)),
]


# -- running one --------------------------------------------------------------------------


def run_case(
    case: FaultCase,
    cluster: ClusterInfo,
    *,
    operator_kubeconfig: Path,
    log_dir: Path,
    plan: FleetPlan | None = None,
) -> CaseResult:
    plan = plan or FleetPlan()
    namespace = f"fault-{uuid.uuid4().hex[:6]}"
    prefix = f"faults/{namespace}"
    endpoint = urlparse(cluster.s3_endpoint)
    assert endpoint.hostname is not None and endpoint.port is not None
    access = S3Access(
        cluster.s3_endpoint, cluster.s3_access_key, cluster.s3_secret_key, cluster.s3_bucket
    )
    with FaultProxy(endpoint.hostname, endpoint.port, slow_seconds=5.0) as proxy:
        pods_access = access
        if case.s3_through_proxy_for_pods:
            pods_access = S3Access(
                proxy.endpoint, access.access_key, access.secret_key, access.bucket
            )
        direct, pods_s3 = s3_client(access), s3_client(pods_access)
        prepare_namespace(cluster, direct, namespace, prefix)
        operator = OperatorProcess(
            cluster,
            log_dir,
            KUBECONFIG=str(operator_kubeconfig),
            TUNEGATE_S3_ENDPOINT=proxy.endpoint,
        )
        operator.start()
        player = Player(cluster, pods_s3, namespace, prefix, plan)
        scene = Scene(
            cluster=cluster,
            namespace=namespace,
            operator=operator,
            proxy=proxy,
            player=player,
            rng=random.Random(case.name),
            done=threading.Event(),
        )
        injector = threading.Thread(target=case.inject, args=(scene,), daemon=True)
        started = time.monotonic()
        try:
            for manifest in plan.manifests(prefix):
                apply(cluster, namespace, manifest)
            injector.start()
            deadline = started + FLEET_TIMEOUT_SECONDS
            done = False
            while time.monotonic() < deadline:
                # Restarted from this thread: a child dies with the thread that started it
                # (PR_SET_PDEATHSIG), and the injector's thread ends before the case does.
                if operator.proc is not None and operator.proc.poll() is not None:
                    operator.start()
                player.step()
                expected = plan.expected(scene.attempts)
                if finished(cluster, namespace, expected) and not injector.is_alive():
                    done = True
                    break
                time.sleep(0.5)
            ended = time.monotonic()
            scene.done.set()
            injector.join(timeout=MINUTE)
        finally:
            scene.done.set()
            operator.stop()
            proxy.inject(Fault.NONE)
        snapshot = read_snapshot(
            cluster,
            direct,
            namespace,
            prefix,
            plan,
            player,
            logs={"operator": operator.log_text()},
            secrets=(cluster.s3_secret_key, PLANTED_SECRET),
        )
    found = violations(snapshot, plan.expected(scene.attempts))
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    return CaseResult(
        fault=case.name,
        injected=scene.injected,
        finished=done,
        violations=found,
        seconds=ended - started,
        recovery_seconds=None if scene.cleared_at is None else ended - scene.cleared_at,
        notes=scene.notes
        + ([f"{player.failed_writes} pod writes retried"] if player.failed_writes else []),
    )


def table(results: list[CaseResult]) -> str:
    """The reliability table, as the README carries it."""
    rows = [
        "| fault | times injected | outcome | invariant violations | recovery (s) | run (s) |",
        "|---|---|---|---|---|---|",
    ]
    for result in results:
        recovery = "" if result.recovery_seconds is None else f"{result.recovery_seconds:.0f}"
        rows.append(
            f"| {result.fault} | {result.injected} | {result.outcome} | "
            f"{len(result.violations)} | {recovery} | {result.seconds:.0f} |"
        )
    return "\n".join(rows)
