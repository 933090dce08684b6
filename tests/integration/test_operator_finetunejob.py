"""The operator against the real control plane. Pods run on kwok GPU pools (faked);
the test plays the trainer by writing its S3 documents (audit report, progress,
manifest) and, where a pod must fail, by reporting the failure as a kubelet would."""

from __future__ import annotations

import json
import time
import urllib.request
from typing import Any

import pytest

from tunegate_cluster.cluster import ClusterInfo
from tunegate_cluster.kube_helpers import (
    BUCKET,
    SMALL_MODEL,
    apply,
    condition,
    end_pods,
    env_of,
    ftj,
    get,
    items,
    pass_audit,
    put_json,
    status,
    wait_job,
    wait_phase,
    write_manifest,
)
from tunegate_cluster.operator_process import TRAINER_IDENTITY, TRAINER_SERVICE_ACCOUNT
from tunegate_cluster.processes import wait_until


def test_single_node_run_audits_on_cpu_trains_on_the_pool_and_succeeds(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    assert (
        cluster.kubectl(
            "create",
            "secret",
            "generic",
            "s3",
            "-n",
            namespace,
            "--from-literal=AWS_ACCESS_KEY_ID=AKIAEXAMPLE",
            "--from-literal=AWS_SECRET_ACCESS_KEY=do-not-leak-me",
        ).returncode
        == 0
    )
    apply(cluster, namespace, ftj("run", prefix, storage={"credentialsSecret": "s3"}))
    audit = wait_job(cluster, namespace, "run-audit")
    audit_pod = audit["spec"]["template"]["spec"]
    # Cluster-wide install: the operator made the pods' identity in this namespace.
    assert audit_pod["serviceAccountName"] == TRAINER_SERVICE_ACCOUNT
    account = get(cluster, namespace, "serviceaccount", TRAINER_SERVICE_ACCOUNT)
    assert account["metadata"]["annotations"] == TRAINER_IDENTITY
    assert account["automountServiceAccountToken"] is False
    assert "nvidia.com/gpu" not in json.dumps(audit_pod["containers"][0]["resources"])
    assert audit_pod["nodeSelector"] == {"tunegate.dev/pool": "cpu"}
    st = wait_phase(cluster, namespace, "run", "Auditing")
    assert st["estimate"]["fits"] is True and st["gpus"] == 2

    put_json(s3, f"{prefix}/out/run/audit/report.json", {"verdict": "Passed", "findings": []})
    train = wait_job(cluster, namespace, "run-train-1")
    pod_spec = train["spec"]["template"]["spec"]
    assert pod_spec["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    # The cache is sized from the base model's bytes in S3 (a config.json here) + 1 GiB.
    requested = pod_spec["containers"][0]["resources"]["requests"]["ephemeral-storage"]
    assert requested == "1025Mi", requested
    assert pod_spec["nodeSelector"] == {"tunegate.dev/pool": "a100-80g"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec[
        "tolerations"
    ]
    assert train["metadata"]["ownerReferences"][0]["kind"] == "FineTuneJob"
    env = env_of(train)
    assert env["AWS_SECRET_ACCESS_KEY"] == {
        "secretKeyRef": {"name": "s3", "key": "AWS_SECRET_ACCESS_KEY"}
    }
    assert "do-not-leak-me" not in json.dumps(train)
    config = json.loads(env["TUNEGATE_TRAINER_CONFIG"])
    assert config["run"]["attempt"] == 1 and config["method"] == "lora"
    wait_until(
        lambda: (
            [
                p["spec"].get("nodeName", "")[:8]
                for p in items(cluster, namespace, "pod", "job-name=run-train-1")
            ]
            == ["a100-80g"]
        ),
        timeout=30,
        what="training pod bound to the a100 pool",
    )
    st = wait_phase(cluster, namespace, "run", "Training")
    assert st["attempts"] == 1 and condition(st, "Audited")["status"] == "True"

    put_json(
        s3,
        f"{prefix}/out/run/progress.json",
        {
            "step": 30,
            "total_steps": 120,
            "epoch": 0.25,
            "loss": 1.5,
            "tokens_per_second": 900.0,
            "eta_seconds": 300,
        },
    )
    wait_until(
        lambda: status(cluster, namespace, "run").get("progress", {}).get("step") == 30,
        timeout=30,
        what="progress in status",
    )
    progress = status(cluster, namespace, "run")["progress"]
    assert progress["percent"] == 25 and progress["loss"] == 1.5
    assert progress["tokensPerSecond"] == 900.0 and progress["etaSeconds"] == 300

    write_manifest(s3, prefix, "run")
    st = wait_phase(cluster, namespace, "run", "Succeeded")
    assert st["adapter"]["trainableParameters"] == 4194304
    assert condition(st, "Complete")["status"] == "True"
    assert condition(st, "Complete")["observedGeneration"] == 1
    events = items(cluster, namespace, "events")
    reasons = {e["reason"] for e in events if e["involvedObject"].get("name") == "run"}
    assert {"Auditing", "TrainingScheduled", "Succeeded"} <= reasons
    everything = json.dumps(events) + json.dumps(st)
    assert "do-not-leak-me" not in everything and "do-not-leak-me" not in operator.log_tail(10000)
    metrics = _metrics(operator)
    assert 'tunegate_finetunejobs{phase="Succeeded"}' in metrics
    assert "tunegate_apply_to_pod_seconds_count" in metrics


def _metrics(operator: Any) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics") as response:
        return str(response.read().decode())


def test_multi_node_gets_indexed_job_headless_service_and_rendezvous_env(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    apply(
        cluster,
        namespace,
        ftj("dist", prefix, resources={"nodes": 2, "gpusPerNode": 8}, deepspeed={"zeroStage": 3}),
    )
    pass_audit(cluster, s3, namespace, "dist", prefix)
    job = wait_job(cluster, namespace, "dist-train-1")
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 2
    assert job["spec"]["template"]["spec"]["subdomain"] == "dist-train"
    env = env_of(job)
    assert env["MASTER_ADDR"] == f"dist-train-1-0.dist-train.{namespace}.svc"
    assert env["WORLD_SIZE"] == "16" and env["NPROC_PER_NODE"] == "8" and env["NNODES"] == "2"
    assert env["NODE_RANK"] == {
        "fieldRef": {
            "apiVersion": "v1",
            "fieldPath": "metadata.annotations['batch.kubernetes.io/job-completion-index']",
        }
    }
    command = job["spec"]["template"]["spec"]["containers"][0]["command"]
    assert "torch.distributed.run" in command and "--node-rank=$(NODE_RANK)" in command
    service = get(cluster, namespace, "service", "dist-train")
    assert service["spec"]["clusterIP"] == "None"
    wait_until(
        lambda: (
            len(
                {
                    p["spec"].get("nodeName")
                    for p in items(cluster, namespace, "pod", "job-name=dist-train-1")
                    if p["spec"].get("nodeName")
                }
            )
            == 2
        ),
        timeout=30,
        what="two pods on two a100 nodes",
    )
    hostnames = sorted(
        p["spec"]["hostname"] for p in items(cluster, namespace, "pod", "job-name=dist-train-1")
    )
    assert hostnames == ["dist-train-1-0", "dist-train-1-1"]


def test_pool_selection_and_kueue_queue(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    apply(
        cluster,
        namespace,
        ftj(
            "small",
            prefix,
            resources={"gpusPerNode": 1, "nodeSelector": {"tunegate.dev/pool": "l4-24g"}},
        ),
    )
    apply(cluster, namespace, ftj("queued", prefix, resources={"queueName": "gpu-batch"}))
    pass_audit(cluster, s3, namespace, "small", prefix)
    pass_audit(cluster, s3, namespace, "queued", prefix)
    wait_job(cluster, namespace, "small-train-1")
    wait_until(
        lambda: (
            [
                p["spec"].get("nodeName", "")[:6]
                for p in items(cluster, namespace, "pod", "job-name=small-train-1")
            ]
            == ["l4-24g"]
        ),
        timeout=30,
        what="pod on the l4 pool",
    )
    queued = wait_job(cluster, namespace, "queued-train-1")
    assert queued["metadata"]["labels"]["kueue.x-k8s.io/queue-name"] == "gpu-batch"
    assert queued["spec"]["suspend"] is True
    time.sleep(6)  # the operator must leave admission to Kueue
    assert get(cluster, namespace, "job", "queued-train-1")["spec"]["suspend"] is True
    # No LocalQueue gpu-batch exists: Kueue says so, and the run quotes it; without
    # Kueue at all the run says that instead.
    expected = ("WaitingForQuota", "gpu-batch") if cluster.kueue else ("KueueNotInstalled", "Kueue")

    def quoted() -> bool:
        queued = condition(status(cluster, namespace, "queued"), "Queued")
        return queued.get("reason") == expected[0] and expected[1] in queued.get("message", "")

    wait_until(
        quoted,
        timeout=60,
        what=lambda: f"{expected} in the Queued condition: {status(cluster, namespace, 'queued')}",
    )
    assert status(cluster, namespace, "queued")["phase"] == "Queued"


def test_infeasible_memory_is_refused_before_scheduling(
    operator: Any, crds: ClusterInfo, namespace: str, prefix: str
) -> None:
    cluster = crds
    apply(
        cluster,
        namespace,
        ftj(
            "huge",
            prefix,
            method="full",
            model={"uri": f"s3://{BUCKET}/{prefix}/model-7b"},
            resources={"gpusPerNode": 1, "nodeSelector": {"tunegate.dev/pool": "l4-24g"}},
        ),
    )
    st = wait_phase(cluster, namespace, "huge", "Failed")
    failed = condition(st, "Failed")
    assert failed["reason"] == "InsufficientGPUMemory"
    assert "over by" in failed["message"] and "would fit" in failed["message"]
    assert st["estimate"]["fits"] is False and st["estimate"]["gpuMemoryGiB"] > 50
    assert items(cluster, namespace, "jobs") == []


def test_failed_attempts_retry_with_resume_then_stop_at_backoff_limit(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    apply(cluster, namespace, ftj("flaky", prefix))
    pass_audit(cluster, s3, namespace, "flaky", prefix)
    wait_job(cluster, namespace, "flaky-train-1")
    end_pods(cluster, namespace, "flaky-train-1", 3, "CUDA error: an illegal memory access")
    second = wait_job(cluster, namespace, "flaky-train-2")
    assert json.loads(env_of(second)["TUNEGATE_TRAINER_CONFIG"])["run"]["attempt"] == 2
    # The status patch follows the Job's creation; the events follow, asynchronously.
    wait_until(
        lambda: status(cluster, namespace, "flaky").get("attempts") == 2,
        timeout=30,
        what="status.attempts 2",
    )
    wait_until(
        lambda: "AttemptFailed" in {e["reason"] for e in items(cluster, namespace, "events")},
        timeout=30,
        what="an AttemptFailed event for attempt 1",
    )
    end_pods(cluster, namespace, "flaky-train-2", 3, "CUDA error: an illegal memory access")
    st = wait_phase(cluster, namespace, "flaky", "Failed")
    failed = condition(st, "Failed")
    assert failed["reason"] == "BackoffLimitExceeded"
    assert (
        "exited with code 3" in failed["message"] and "illegal memory access" in failed["message"]
    )
    assert cluster.kubectl("get", "job", "flaky-train-3", "-n", namespace).returncode != 0


def test_deadline_fails_the_run(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    apply(cluster, namespace, ftj("slow", prefix, runPolicy={"activeDeadlineSeconds": 4}))
    pass_audit(cluster, s3, namespace, "slow", prefix)
    job = wait_job(cluster, namespace, "slow-train-1")
    assert 1 <= job["spec"]["activeDeadlineSeconds"] <= 4
    st = wait_phase(cluster, namespace, "slow", "Failed", timeout=60)
    assert condition(st, "Failed")["reason"] == "DeadlineExceeded"


def test_ttl_removes_children_but_keeps_the_finetunejob(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    apply(cluster, namespace, ftj("short", prefix, runPolicy={"ttlSecondsAfterFinished": 2}))
    pass_audit(cluster, s3, namespace, "short", prefix)
    wait_job(cluster, namespace, "short-train-1")
    write_manifest(s3, prefix, "short")
    wait_phase(cluster, namespace, "short", "Succeeded")
    wait_until(
        lambda: items(cluster, namespace, "jobs") == [],
        timeout=60,
        what="children deleted after the TTL",
    )
    assert status(cluster, namespace, "short")["phase"] == "Succeeded"


def test_suspend_and_resume(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    apply(cluster, namespace, ftj("pause", prefix))
    pass_audit(cluster, s3, namespace, "pause", prefix)
    wait_job(cluster, namespace, "pause-train-1")
    wait_phase(cluster, namespace, "pause", "Training")
    patch = {"spec": {"runPolicy": {"suspend": True}}}
    assert (
        cluster.kubectl(
            "patch", "ftj", "pause", "-n", namespace, "--type=merge", "-p", json.dumps(patch)
        ).returncode
        == 0
    )
    st = wait_phase(cluster, namespace, "pause", "Suspended")
    assert condition(st, "Suspended")["status"] == "True"
    wait_until(
        lambda: get(cluster, namespace, "job", "pause-train-1")["spec"]["suspend"] is True,
        timeout=30,
        what="Job suspended",
    )
    wait_until(
        lambda: items(cluster, namespace, "pod", "job-name=pause-train-1") == [],
        timeout=60,
        what="training pods stopped",
    )
    patch = {"spec": {"runPolicy": {"suspend": False}}}
    assert (
        cluster.kubectl(
            "patch", "ftj", "pause", "-n", namespace, "--type=merge", "-p", json.dumps(patch)
        ).returncode
        == 0
    )
    wait_phase(cluster, namespace, "pause", "Training")
    wait_until(
        lambda: get(cluster, namespace, "job", "pause-train-1")["spec"]["suspend"] is False,
        timeout=30,
        what="Job resumed",
    )
    assert len(items(cluster, namespace, "jobs", "tunegate.dev/component=train")) == 1


def test_deleting_the_finetunejob_deletes_its_children(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    apply(cluster, namespace, ftj("gone", prefix, resources={"nodes": 2, "gpusPerNode": 1}))
    pass_audit(cluster, s3, namespace, "gone", prefix)
    wait_job(cluster, namespace, "gone-train-1")
    assert cluster.kubectl("delete", "ftj", "gone", "-n", namespace, "--wait=true").returncode == 0
    wait_until(
        lambda: (
            not items(cluster, namespace, "jobs")
            and not items(cluster, namespace, "services")
            and not items(cluster, namespace, "pods")
        ),
        timeout=60,
        what="jobs, service and pods garbage-collected",
    )


def test_operator_killed_and_restarted_creates_no_duplicates(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    names = [f"k{i}" for i in range(4)]
    for name in names:
        apply(cluster, namespace, ftj(name, prefix))
    for delay in (0.3, 1.0, 0.1):
        time.sleep(delay)
        operator.kill()
        operator.start()
    for name in names:
        pass_audit(cluster, s3, namespace, name, prefix)
    for delay in (0.5, 0.2):
        time.sleep(delay)
        operator.kill()
        operator.start()
    for name in names:
        wait_phase(cluster, namespace, name, "Training", timeout=90)
    jobs = [j["metadata"]["name"] for j in items(cluster, namespace, "jobs")]
    assert sorted(jobs) == sorted([f"{n}-audit" for n in names] + [f"{n}-train-1" for n in names])
    for name in names:
        st = status(cluster, namespace, name)
        assert st["attempts"] == 1
        assert condition(st, "Training")["status"] == "True"
        # Events are at-least-once: a crash between event and status patch repeats one.
        assert any(
            e["involvedObject"].get("name") == name and e["reason"] == "TrainingScheduled"
            for e in items(cluster, namespace, "events")
        )


@pytest.mark.parametrize(
    ("case", "overrides", "phase", "reason", "field"),
    [
        (
            "secret",
            {"storage": {"credentialsSecret": "missing"}},
            "Pending",
            "SecretNotFound",
            "spec.storage.credentialsSecret",
        ),
        (
            "dataset",
            {"dataset": {"train": f"s3://{BUCKET}/nowhere/train.jsonl"}},
            "Pending",
            "ObjectNotFound",
            "spec.dataset.train",
        ),
        (
            "pool",
            {"resources": {"nodeSelector": {"tunegate.dev/pool": "h100-80g"}}},
            "Pending",
            "NoMatchingNodes",
            "spec.resources.nodeSelector",
        ),
        (
            "gpus",
            {"resources": {"gpusPerNode": 16}},
            "Failed",
            "InsufficientGPUs",
            "spec.resources.gpusPerNode",
        ),
        (
            "model",
            {"model": {"uri": f"s3://{BUCKET}/nowhere/model"}},
            "Pending",
            "ModelNotFound",
            "spec.model.uri",
        ),
    ],
)
def test_bad_input_is_reported_naming_the_field(
    operator: Any,
    crds: ClusterInfo,
    namespace: str,
    prefix: str,
    case: str,
    overrides: dict[str, Any],
    phase: str,
    reason: str,
    field: str,
) -> None:
    cluster = crds
    apply(cluster, namespace, ftj(case, prefix, **overrides))
    st = wait_phase(cluster, namespace, case, phase)
    kind = "Failed" if phase == "Failed" else "Validated"
    cond = condition(st, kind)
    assert cond["reason"] == reason and field in cond["message"], cond
    assert items(cluster, namespace, "jobs") == []
    warnings = [
        e
        for e in items(cluster, namespace, "events")
        if e["involvedObject"].get("name") == case and e["type"] == "Warning"
    ]
    assert any(field in e["message"] for e in warnings)


def test_a_model_config_that_is_not_json_waits_naming_its_line_until_mended(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    config_key = f"{prefix}/model/config.json"
    s3.put_object(Bucket=BUCKET, Key=config_key, Body=b'{"hidden_size": 64,\n "vocab_size": }')
    apply(cluster, namespace, ftj("mangled", prefix))
    st = wait_phase(cluster, namespace, "mangled", "Pending")
    cond = condition(st, "Validated")
    assert cond["reason"] == "ModelConfigInvalid", cond
    assert f"s3://{BUCKET}/{config_key}:2: not valid JSON" in cond["message"], cond
    assert items(cluster, namespace, "jobs") == []
    put_json(s3, config_key, SMALL_MODEL)
    wait_phase(cluster, namespace, "mangled", "Auditing", timeout=60)


def test_waiting_run_proceeds_once_the_secret_exists(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    apply(cluster, namespace, ftj("later", prefix, storage={"credentialsSecret": "late"}))
    wait_phase(cluster, namespace, "later", "Pending")
    assert (
        cluster.kubectl(
            "create",
            "secret",
            "generic",
            "late",
            "-n",
            namespace,
            "--from-literal=AWS_ACCESS_KEY_ID=a",
            "--from-literal=AWS_SECRET_ACCESS_KEY=b",
        ).returncode
        == 0
    )
    wait_phase(cluster, namespace, "later", "Auditing", timeout=60)


def test_two_replicas_peer_so_only_one_acts(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str, tmp_path: Any
) -> None:
    from tunegate_cluster.operator_process import OperatorProcess

    cluster = crds
    second = OperatorProcess(cluster, tmp_path)
    second.start()
    try:
        wait_until(
            lambda: "Pausing" in operator.log_tail(400) + second.log_tail(400),
            timeout=60,
            what="one replica pausing in favour of the other",
        )
        apply(cluster, namespace, ftj("peered", prefix))
        pass_audit(cluster, s3, namespace, "peered", prefix)
        wait_phase(cluster, namespace, "peered", "Training")
        assert len(items(cluster, namespace, "jobs", "tunegate.dev/component=train")) == 1
    finally:
        second.stop()


def _reconciles(operator: Any) -> float:
    for line in _metrics(operator).splitlines():
        if line.startswith('tunegate_reconciles_total{kind="FineTuneJob"}'):
            return float(line.split()[-1])
    return 0.0


def _set_peer(cluster: ClusterInfo, identity: str, entry: dict[str, Any] | None) -> None:
    patch = json.dumps({"status": {identity: entry}})
    done = cluster.kubectl("patch", "clusterkopfpeering", "tunegate", "--type=merge", "-p", patch)
    assert done.returncode == 0, done.stderr


def test_a_replica_paused_by_peering_stops_ticking_and_resumes_after(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    apply(cluster, namespace, ftj("ticking", prefix))
    pass_audit(cluster, s3, namespace, "ticking", prefix)
    wait_phase(cluster, namespace, "ticking", "Training")
    # A live replica outranking any this operator can draw: kopf pauses it.
    lastseen = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
    _set_peer(cluster, "outranking", {"priority": 2_000_000, "lifetime": 60, "lastseen": lastseen})
    try:
        wait_until(lambda: "Pausing" in operator.log_tail(400), timeout=30, what="a pause")
        time.sleep(8)  # reconciles queued before the pause finish
        paused_at = _reconciles(operator)
        time.sleep(15)  # three ticks' worth
        assert _reconciles(operator) == paused_at, "a paused replica kept reconciling"
    finally:
        _set_peer(cluster, "outranking", None)
    wait_until(
        lambda: _reconciles(operator) > paused_at + 1,
        timeout=60,
        what="reconciles again once the outranking replica is gone",
    )


def test_pods_pass_restricted_pod_security_and_a_refusal_is_quoted_in_a_condition(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    restricted = ("pod-security.kubernetes.io/enforce=restricted",)
    assert cluster.kubectl("label", "namespace", namespace, *restricted).returncode == 0
    # A quota that admits the audit pod but not the training pod's GPUs.
    quota = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": {"name": "no-gpus"},
        "spec": {"hard": {"requests.nvidia.com/gpu": "0"}},
    }
    apply(cluster, namespace, quota)
    apply(cluster, namespace, ftj("run", prefix))
    pass_audit(cluster, s3, namespace, "run", prefix)
    # The audit pod was admitted under "restricted": it ran, and its report was read.
    assert items(cluster, namespace, "pod", "job-name=run-audit")
    wait_job(cluster, namespace, "run-train-1")

    def refused() -> dict[str, Any]:
        return condition(status(cluster, namespace, "run"), "Training")

    wait_until(
        lambda: refused().get("reason") == "PodCreationFailed",
        timeout=60,
        what=lambda: f"a PodCreationFailed condition (now {refused()})",
    )
    message = refused()["message"]
    assert "run-train-1" in message and "exceeded quota: no-gpus" in message, message
    assert status(cluster, namespace, "run")["phase"] == "Training"
