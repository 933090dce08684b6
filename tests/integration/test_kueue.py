"""Queued runs under a real Kueue (v0.17, built from source): GPU quota on the a100
kwok pool, admission in priority order, quota released by finishing, deleting and
suspending. Pods run on kwok; the test plays the trainer by writing the manifest and
ending the pods, as a kubelet would report them."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tunegate_cluster.cluster import ClusterInfo
from tunegate_cluster.kube_helpers import (
    apply,
    condition,
    end_pods,
    ftj,
    items,
    status,
    wait_phase,
    write_manifest,
)
from tunegate_cluster.kueue import (
    apply_cluster_scoped,
    close_queue,
    open_queue,
    priority_class,
)
from tunegate_cluster.node_pools import GPU_RESOURCE
from tunegate_cluster.processes import wait_until

QUEUE = "gpu-batch"
GPUS_PER_RUN = 8
QUOTA = 16  # two runs at a time


@pytest.fixture
def queues(crds: ClusterInfo, namespace: str) -> Iterator[str]:
    """16 GPUs of the a100 pool for the namespace's LocalQueue, held (admitting nothing)
    until the test releases them."""
    if not crds.kueue:
        pytest.skip("no Kueue in this cluster (TUNEGATE_KUEUE=0 or not root)")
    name = open_queue(
        crds, namespace, local_queue_name=QUEUE, pool="a100-80g", gpus=QUOTA, hold=True
    )
    yield name
    close_queue(crds, name)


@pytest.fixture
def priorities(crds: ClusterInfo, namespace: str) -> Iterator[list[str]]:
    """Ten PriorityClasses, lowest first."""
    names = [f"{namespace}-p{rank}" for rank in range(10)]
    for rank, name in enumerate(names):
        apply_cluster_scoped(crds, priority_class(name, 1000 + 10 * rank))
    yield names
    crds.kubectl("delete", "priorityclass", *names, "--wait=false")


def training_jobs(cluster: ClusterInfo, namespace: str) -> list[dict[str, Any]]:
    return items(cluster, namespace, "jobs", "tunegate.dev/component=train")


def running_runs(jobs: list[dict[str, Any]]) -> set[str]:
    """Runs whose training Job runs now: unsuspended and not finished."""
    return {
        job["metadata"]["labels"]["tunegate.dev/finetunejob"]
        for job in jobs
        if not job["spec"].get("suspend") and not (job.get("status") or {}).get("completionTime")
    }


def started(cluster: ClusterInfo, namespace: str) -> set[str]:
    return running_runs(training_jobs(cluster, namespace))


def pod_gpus(pod: dict[str, Any]) -> int:
    return sum(
        int(c["resources"].get("limits", {}).get(GPU_RESOURCE, 0))
        for c in pod["spec"]["containers"]
    )


def quota_holders(jobs: list[dict[str, Any]], pods: list[dict[str, Any]]) -> dict[str, int]:
    """GPUs per pod that Kueue counts against the quota: a live pod of a Job that is not
    being deleted. Kueue releases a deleted Job's quota at once (its default release
    strategy); that Job's pods then wait for the garbage collector, and count no longer."""
    live_jobs = {
        job["metadata"]["name"] for job in jobs if not job["metadata"].get("deletionTimestamp")
    }
    return {
        pod["metadata"]["name"]: pod_gpus(pod)
        for pod in pods
        if pod["status"].get("phase") in ("Pending", "Running")
        and not pod["metadata"].get("deletionTimestamp")
        and any(
            owner.get("kind") == "Job" and owner.get("name") in live_jobs
            for owner in pod["metadata"].get("ownerReferences", [])
        )
    }


class QuotaWatch:
    """Samples the started runs and the GPUs their pods hold for as long as the test runs:
    nothing may start beyond the quota, even for a moment between two checks."""

    def __init__(self, cluster: ClusterInfo, namespace: str) -> None:
        self.cluster, self.namespace = cluster, namespace
        self.most_started: set[str] = set()
        self.most_gpus = 0
        self.pods_at_most: dict[str, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            # Jobs listed before pods: a Job deleted in between still counts (erring
            # high); one created in between counts from the next sample on.
            jobs = training_jobs(self.cluster, self.namespace)
            now = running_runs(jobs)
            if len(now) > len(self.most_started):
                self.most_started = now
            holders = quota_holders(jobs, items(self.cluster, self.namespace, "pods"))
            gpus = sum(holders.values())
            if gpus > self.most_gpus:
                self.most_gpus, self.pods_at_most = gpus, holders

    def __enter__(self) -> QuotaWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def finish(cluster: ClusterInfo, s3: Any, namespace: str, prefix: str, run: str) -> None:
    """The trainer's end: the manifest written, then the pod exits 0."""
    write_manifest(s3, prefix, run)
    end_pods(cluster, namespace, f"{run}-train-1", 0)
    wait_phase(cluster, namespace, run, "Succeeded", timeout=90)


def set_suspend(cluster: ClusterInfo, namespace: str, run: str, suspend: bool) -> None:
    patch = json.dumps({"spec": {"runPolicy": {"suspend": suspend}}})
    result = cluster.kubectl("patch", "ftj", run, "-n", namespace, "--type=merge", "-p", patch)
    assert result.returncode == 0, result.stderr


def admitted_next(cluster: ClusterInfo, namespace: str, expected: set[str]) -> None:
    wait_until(
        lambda: started(cluster, namespace) == expected,
        timeout=90,
        what=lambda: (
            f"{sorted(expected)} admitted (started: {sorted(started(cluster, namespace))})"
        ),
    )
    for run in expected:
        wait_phase(cluster, namespace, run, "Training")


def test_ten_runs_of_8_gpus_are_admitted_two_at_a_time_in_priority_order(
    operator: Any,
    crds: ClusterInfo,
    s3: Any,
    namespace: str,
    prefix: str,
    queues: str,
    priorities: list[str],
) -> None:
    cluster = crds
    # Applied in an order unrelated to priority: Kueue must order them, not the clock.
    ranks = [3, 7, 0, 9, 5, 1, 8, 2, 6, 4]
    for rank in ranks:
        apply(
            cluster,
            namespace,
            ftj(
                f"r{rank}",
                prefix,
                audit={"mode": "off"},
                resources={
                    "gpusPerNode": GPUS_PER_RUN,
                    "queueName": QUEUE,
                    "priorityClassName": priorities[rank],
                },
            ),
        )
    with QuotaWatch(cluster, namespace) as watch:
        for rank in ranks:
            wait_phase(cluster, namespace, f"r{rank}", "Queued")
        wait_until(
            lambda: all(
                condition(status(cluster, namespace, f"r{rank}"), "Queued")["reason"]
                == "WaitingForQuota"
                for rank in ranks
            ),
            timeout=60,
            what="every run waiting for quota, with Kueue's reason",
        )
        queued = condition(status(cluster, namespace, "r0"), "Queued")
        assert f"LocalQueue {QUEUE}" in queued["message"], queued
        assert started(cluster, namespace) == set()

        # The queue opens: the two highest priorities first, and so on down.
        assert (
            cluster.kubectl(
                "patch",
                "clusterqueue",
                queues,
                "--type=merge",
                "-p",
                '{"spec":{"stopPolicy":"None"}}',
            ).returncode
            == 0
        )
        admitted_next(cluster, namespace, {"r9", "r8"})
        admitted = condition(status(cluster, namespace, "r9"), "Queued")
        assert admitted["status"] == "False" and queues in admitted["message"], admitted
        for run in ("r9", "r8"):
            finish(cluster, s3, namespace, prefix, run)
        admitted_next(cluster, namespace, {"r7", "r6"})

        # Deleting one run and suspending the other each give their quota back.
        assert cluster.kubectl("delete", "ftj", "r7", "-n", namespace).returncode == 0
        set_suspend(cluster, namespace, "r6", True)
        admitted_next(cluster, namespace, {"r5", "r4"})
        suspended = wait_phase(cluster, namespace, "r6", "Suspended")
        assert "releases the quota" in condition(suspended, "Suspended")["message"]
        for run in ("r5", "r4"):
            finish(cluster, s3, namespace, prefix, run)
        admitted_next(cluster, namespace, {"r3", "r2"})

        # Resumed, r6 outranks what is left and takes the next free slot.
        set_suspend(cluster, namespace, "r6", False)
        wait_phase(cluster, namespace, "r6", "Queued")
        finish(cluster, s3, namespace, prefix, "r3")
        admitted_next(cluster, namespace, {"r2", "r6"})
        for run in ("r2", "r6"):
            finish(cluster, s3, namespace, prefix, run)
        admitted_next(cluster, namespace, {"r1", "r0"})
        for run in ("r1", "r0"):
            finish(cluster, s3, namespace, prefix, run)

    assert len(watch.most_started) <= QUOTA // GPUS_PER_RUN, watch.most_started
    assert 0 < watch.most_gpus <= QUOTA, watch.pods_at_most
    # Every run kept its one attempt: waiting, suspension and resumption cost none.
    for run in ("r0", "r1", "r2", "r3", "r4", "r5", "r6", "r8", "r9"):
        assert status(cluster, namespace, run)["attempts"] == 1, run
    assert len(training_jobs(cluster, namespace)) == 9
