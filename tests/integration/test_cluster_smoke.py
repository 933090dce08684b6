"""The local test environment behaves like a real cluster with GPU pools and S3."""

from __future__ import annotations

import hashlib
import io
import os
from typing import Any

from kubernetes import client

from tunegate_cluster.node_pools import GPU_RESOURCE, GPU_TAINT, LOCAL_NODE_NAME, POOL_LABEL
from tunegate_cluster.processes import wait_until

GPU_TOLERATION = {"key": GPU_TAINT["key"], "operator": "Exists", "effect": "NoSchedule"}


def _job(
    name: str,
    *,
    command: list[str],
    pool: str,
    gpus: int = 0,
    annotations: dict[str, str] | None = None,
    backoff_limit: int = 0,
) -> dict[str, Any]:
    resources = {"limits": {GPU_RESOURCE: str(gpus)}} if gpus else {}
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": backoff_limit,
            "template": {
                "metadata": {"annotations": annotations or {}},
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": {POOL_LABEL: pool},
                    "tolerations": [GPU_TOLERATION],
                    "containers": [
                        {
                            "name": "main",
                            "image": "busybox",
                            "command": command,
                            "resources": resources,
                        }
                    ],
                },
            },
        },
    }


def _job_condition(batch: client.BatchV1Api, namespace: str, name: str) -> str | None:
    job = batch.read_namespaced_job_status(name, namespace)
    for condition in job.status.conditions or []:
        if condition.type in ("Complete", "Failed") and condition.status == "True":
            return str(condition.type)
    return None


def _job_pods(core: client.CoreV1Api, namespace: str, name: str) -> list[client.V1Pod]:
    return list(core.list_namespaced_pod(namespace, label_selector=f"job-name={name}").items)


def test_gpu_job_lands_on_requested_pool_and_completes(
    kube: client.ApiClient, namespace: str
) -> None:
    batch, core = client.BatchV1Api(kube), client.CoreV1Api(kube)
    batch.create_namespaced_job(
        namespace, _job("train", command=["train"], pool="a100-80g", gpus=2)
    )
    wait_until(
        lambda: _job_condition(batch, namespace, "train") == "Complete",
        timeout=60,
        what="Job Complete",
    )
    (pod,) = _job_pods(core, namespace, "train")
    node = core.read_node(pod.spec.node_name)
    assert node.metadata.labels[POOL_LABEL] == "a100-80g"
    assert node.metadata.labels["nvidia.com/gpu.product"] == "NVIDIA-A100-SXM4-80GB"
    assert pod.status.phase == "Succeeded"


def test_pod_asking_for_more_gpus_than_any_node_stays_unschedulable(
    kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "too-big"},
            "spec": {
                "tolerations": [GPU_TOLERATION],
                "containers": [
                    {
                        "name": "main",
                        "image": "busybox",
                        "command": ["x"],
                        "resources": {"limits": {GPU_RESOURCE: "16"}},
                    }
                ],
            },
        },
    )

    def unschedulable() -> bool:
        pod = core.read_namespaced_pod_status("too-big", namespace)
        return any(
            c.type == "PodScheduled" and c.status == "False" and c.reason == "Unschedulable"
            for c in pod.status.conditions or []
        )

    wait_until(unschedulable, timeout=30, what="PodScheduled=False/Unschedulable")
    pod = core.read_namespaced_pod_status("too-big", namespace)
    assert pod.status.phase == "Pending"
    assert pod.spec.node_name is None


def test_local_node_runs_the_real_command_with_resolved_env(
    kube: client.ApiClient, namespace: str
) -> None:
    core = client.CoreV1Api(kube)
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"token": "s3cr3t-value"}}
    )
    core.create_namespaced_config_map(
        namespace, {"metadata": {"name": "settings"}, "data": {"mode": "fast"}}
    )
    script = (
        'test "$TOKEN" = s3cr3t-value || exit 11; test "$MODE" = fast || exit 12; '
        'test "$POD" = runner-env || exit 13; test "$GREETING" = "hello fast" || exit 14; '
        "echo ran; exit 7"
    )
    core.create_namespaced_pod(
        namespace,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "runner-env"},
            "spec": {
                "restartPolicy": "Never",
                "nodeSelector": {POOL_LABEL: "local"},
                "tolerations": [GPU_TOLERATION],
                "containers": [
                    {
                        "name": "main",
                        "image": "busybox",
                        "command": ["sh", "-c", script],
                        "terminationMessagePolicy": "FallbackToLogsOnError",
                        "env": [
                            {
                                "name": "TOKEN",
                                "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}},
                            },
                            {
                                "name": "MODE",
                                "valueFrom": {
                                    "configMapKeyRef": {"name": "settings", "key": "mode"}
                                },
                            },
                            {
                                "name": "POD",
                                "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}},
                            },
                            {"name": "GREETING", "value": "hello $(MODE)"},
                        ],
                    }
                ],
            },
        },
    )
    wait_until(
        lambda: (
            core.read_namespaced_pod_status("runner-env", namespace).status.phase
            in ("Succeeded", "Failed")
        ),
        timeout=60,
        what="local pod to finish",
    )
    pod = core.read_namespaced_pod_status("runner-env", namespace)
    assert pod.spec.node_name == LOCAL_NODE_NAME
    assert pod.status.phase == "Failed"
    terminated = pod.status.container_statuses[0].state.terminated
    assert terminated.exit_code == 7, terminated
    assert terminated.message.strip() == "ran"


def test_job_whose_pod_exits_3_is_failed(kube: client.ApiClient, namespace: str) -> None:
    batch, core = client.BatchV1Api(kube), client.CoreV1Api(kube)
    batch.create_namespaced_job(
        namespace, _job("real", command=["sh", "-c", "exit 3"], pool="local")
    )
    batch.create_namespaced_job(
        namespace,
        _job(
            "fake",
            command=["train"],
            pool="l4-24g",
            gpus=1,
            annotations={"tunegate.dev/fake-exit-code": "3"},
        ),
    )
    for name in ("real", "fake"):
        wait_until(
            lambda name=name: _job_condition(batch, namespace, name) == "Failed",
            timeout=60,
            what=f"Job {name} Failed",
        )
        (pod,) = _job_pods(core, namespace, name)
        assert pod.status.phase == "Failed"
        assert pod.status.container_statuses[0].state.terminated.exit_code == 3


def test_object_reads_back_byte_identical(s3: Any, s3_access: Any) -> None:
    payload = os.urandom(12 * 1024 * 1024 + 17)  # large enough for a multipart upload
    s3.upload_fileobj(io.BytesIO(payload), s3_access.bucket, "smoke/blob.bin")
    body = s3.get_object(Bucket=s3_access.bucket, Key="smoke/blob.bin")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == hashlib.sha256(payload).hexdigest()


def test_deleting_a_job_garbage_collects_its_pods(kube: client.ApiClient, namespace: str) -> None:
    batch, core = client.BatchV1Api(kube), client.CoreV1Api(kube)
    batch.create_namespaced_job(
        namespace,
        _job(
            "long",
            command=["train"],
            pool="a100-80g",
            gpus=1,
            annotations={"tunegate.dev/fake-duration": "1h"},
        ),
    )
    wait_until(
        lambda: [p.status.phase for p in _job_pods(core, namespace, "long")] == ["Running"],
        timeout=60,
        what="Job pod Running",
    )
    batch.delete_namespaced_job("long", namespace, propagation_policy="Background")
    wait_until(
        lambda: not _job_pods(core, namespace, "long"),
        timeout=60,
        what="garbage collector to delete the Job's pods",
    )
