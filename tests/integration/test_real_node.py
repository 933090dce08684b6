"""The real node: pods are real containers (kubelet, containerd, runc, CNI, CoreDNS,
a device plugin) from the images built from the project's Dockerfiles. The chart's
operator runs as its Deployment; a two-node run finds its peer through the headless
Service's DNS names; an OOM kill is explained in words; a run Kueue preempts resumes
from its checkpoint."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tiny_model import build_tiny_model, chat_rows, jsonl, upload_dir
from tunegate_cluster import chart
from tunegate_cluster.cluster import ClusterInfo
from tunegate_cluster.kube_helpers import BUCKET, apply, items, status
from tunegate_cluster.kueue import apply_cluster_scoped, close_queue, open_queue, priority_class
from tunegate_cluster.node_pools import GPU_TOLERATION, POOL_LABEL
from tunegate_cluster.processes import wait_until
from tunegate_cluster.real_node_config import REAL_POOL
from tunegate_operator.api.common import CacheSpec
from tunegate_operator.builders.job_envelope import container_security_context, pod_security_context
from tunegate_operator.builders.pod_volumes import pod_volumes

SECRET = "tunegate-s3"
ON_REAL_NODE = {"nodeSelector": {POOL_LABEL: REAL_POOL}, "tolerations": [GPU_TOLERATION]}


@pytest.fixture(scope="module")
def real(crds: ClusterInfo) -> ClusterInfo:
    if not crds.real_node:
        pytest.skip("no real node in this cluster (TUNEGATE_REAL_NODE=0)")
    return crds


def _pod(cluster: ClusterInfo, namespace: str, name: str) -> dict[str, Any]:
    result = cluster.kubectl("get", "pod", name, "-n", namespace, "-o", "json")
    return dict(json.loads(result.stdout)) if result.returncode == 0 else {}


def _phase(cluster: ClusterInfo, namespace: str, name: str) -> str:
    return str((_pod(cluster, namespace, name).get("status") or {}).get("phase", ""))


def _logs(cluster: ClusterInfo, namespace: str, name: str) -> str:
    result = cluster.kubectl("logs", name, "-n", namespace)
    assert result.returncode == 0, result.stderr
    return result.stdout


PROBE = """
import json, os, socket
out = {"uid": os.getuid(), "gid": os.getgid(), "gpus": os.environ.get("NVIDIA_VISIBLE_DEVICES")}
out["peer"] = socket.gethostbyname(os.environ["PEER"])
try:
    open("/opt/probe", "w").close()
    out["root_writable"] = True
except OSError:
    out["root_writable"] = False
with socket.create_connection(
    (os.environ["KUBERNETES_SERVICE_HOST"], int(os.environ["KUBERNETES_SERVICE_PORT"])), 5
):
    out["api_reachable"] = True
print(json.dumps(out))
"""


def test_pods_are_containers_from_the_image_with_security_dns_and_gpus(
    real: ClusterInfo, namespace: str
) -> None:
    """A GPU pod with a restricted securityContext resolves its peer's headless-Service
    name through CoreDNS and reaches the API server's Service address."""
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "peers"},
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": {"app": "peer"},
            "ports": [{"name": "p", "port": 29500}],
        },
    }

    def pod(name: str, command: str, **extra: Any) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "labels": {"app": "peer"}},
            "spec": {
                "hostname": name,
                "subdomain": "peers",
                "restartPolicy": "Never",
                **ON_REAL_NODE,
                "securityContext": {
                    "runAsNonRoot": True,
                    "runAsUser": 10001,
                    "runAsGroup": 10001,
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "containers": [
                    {
                        "name": "main",
                        "image": real.operator_image,
                        "command": ["python", "-c", command],
                        "securityContext": {
                            "readOnlyRootFilesystem": True,
                            "allowPrivilegeEscalation": False,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        **extra,
                    }
                ],
            },
        }

    apply(real, namespace, service)
    apply(real, namespace, pod("b", "import time; time.sleep(600)"))
    wait_until(lambda: _phase(real, namespace, "b") == "Running", timeout=120, what="pod b Running")
    probe = pod(
        "a",
        PROBE,
        env=[{"name": "PEER", "value": f"b.peers.{namespace}.svc.cluster.local"}],
        resources={"limits": {"nvidia.com/gpu": "1"}},
    )
    apply(real, namespace, probe)
    wait_until(
        lambda: _phase(real, namespace, "a") in ("Succeeded", "Failed"),
        timeout=120,
        what=lambda: f"pod a to finish: {json.dumps(_pod(real, namespace, 'a').get('status'))}",
    )
    pod_a, pod_b = _pod(real, namespace, "a"), _pod(real, namespace, "b")
    assert pod_a["status"]["phase"] == "Succeeded", _logs(real, namespace, "a")
    assert pod_a["spec"]["nodeName"] == real.real_node
    (container,) = pod_a["status"]["containerStatuses"]
    assert container["image"] == real.operator_image
    assert container["imageID"].startswith("sha256:") or "@sha256:" in container["imageID"]
    seen = json.loads(_logs(real, namespace, "a").strip().splitlines()[-1])
    assert seen["uid"] == 10001 and seen["gid"] == 10001
    assert seen["root_writable"] is False
    assert seen["gpus"] and seen["gpus"].startswith("fake-gpu-")  # the device plugin's
    assert seen["peer"] == pod_b["status"]["podIP"] != pod_a["status"]["podIP"]
    assert seen["api_reachable"] is True


VOLUMES_PROBE = """
import json, os
shm = os.statvfs("/dev/shm")
with open("/cache/probe", "w") as out:
    out.write("x")
with open("/proc/mounts") as mounts:
    kinds = {line.split()[1]: line.split()[2] for line in mounts}
print(json.dumps({"shm_bytes": shm.f_blocks * shm.f_frsize, "shm_fs": kinds.get("/dev/shm"),
                  "cache_owner": os.stat("/cache").st_gid}))
"""


def test_pods_as_the_operator_builds_them_get_sized_shm_and_a_writable_cache(
    real: ClusterInfo, namespace: str
) -> None:
    """The builders' security context and volumes, admitted under restricted Pod
    Security and run by the kubelet: /dev/shm is a tmpfs of the asked size (not the
    runtime's 64 MiB) and the non-root user can write the cache."""
    enforce = "pod-security.kubernetes.io/enforce=restricted"
    assert real.kubectl("label", "namespace", namespace, enforce).returncode == 0
    volumes = pod_volumes(CacheSpec(), shared_memory="256Mi", cache_bytes=2**30)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "volumes"},
        "spec": {
            "restartPolicy": "Never",
            **ON_REAL_NODE,
            "securityContext": pod_security_context(),
            "volumes": volumes.volumes,
            "containers": [
                {
                    "name": "main",
                    "image": real.trainer_image,
                    "command": ["python", "-c", VOLUMES_PROBE],
                    "securityContext": container_security_context(),
                    "volumeMounts": volumes.mounts,
                    "resources": {"requests": {"ephemeral-storage": volumes.ephemeral_storage}},
                }
            ],
        },
    }
    apply(real, namespace, pod)
    wait_until(
        lambda: _phase(real, namespace, "volumes") in ("Succeeded", "Failed"),
        timeout=180,
        what=lambda: f"the volumes probe: {json.dumps(_pod(real, namespace, 'volumes'))}",
    )
    assert _phase(real, namespace, "volumes") == "Succeeded", _logs(real, namespace, "volumes")
    seen = json.loads(_logs(real, namespace, "volumes").strip().splitlines()[-1])
    assert seen["shm_fs"] == "tmpfs" and seen["shm_bytes"] == 256 * 2**20, seen
    assert seen["cache_owner"] == 10001, seen  # fsGroup: the trainer's group owns it


@pytest.fixture(scope="module")
def chart_operator(real: ClusterInfo) -> Iterator[chart.ChartOperator]:
    with chart.ChartOperator(real, secret=SECRET, pool=REAL_POOL) as operator:
        yield operator


def test_the_charts_operator_runs_from_its_image_as_the_chart_says(
    real: ClusterInfo, chart_operator: chart.ChartOperator
) -> None:
    (pod,) = chart_operator.pods()
    assert pod["spec"]["nodeName"] == real.real_node
    (container,) = pod["status"]["containerStatuses"]
    assert container["ready"] is True and container["restartCount"] == 0, chart_operator.describe()
    assert container["image"] == real.operator_image
    exec_ = ["exec", pod["metadata"]["name"], f"--namespace={chart.NAMESPACE}", "--"]
    uid = real.kubectl(*exec_, "id", "-u")
    assert uid.returncode == 0, uid.stderr
    assert uid.stdout.strip() == "10001"
    write = real.kubectl(*exec_, "touch", "/opt/tunegate/probe")
    assert write.returncode != 0 and "Read-only file system" in write.stderr


@pytest.fixture(scope="module")
def tiny_run(real: ClusterInfo, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> str:
    root = f"real-node/{uuid.uuid4().hex[:8]}"
    upload_dir(s3, build_tiny_model(tmp_path_factory.mktemp("tiny")), f"{root}/model")
    s3.put_object(Bucket=BUCKET, Key=f"{root}/data/train.jsonl", Body=jsonl(chat_rows()))
    return root


def _finetunejob(name: str, root: str, **resources: Any) -> dict[str, Any]:
    return {
        "apiVersion": "tunegate.dev/v1alpha1",
        "kind": "FineTuneJob",
        "metadata": {"name": name},
        "spec": {
            "model": {"uri": f"s3://{BUCKET}/{root}/model"},
            "dataset": {"train": f"s3://{BUCKET}/{root}/data/train.jsonl", "format": "chat"},
            "training": {"maxSteps": 4, "batchSize": 4, "maxSeqLength": 64, "checkpointEvery": 2},
            "audit": {"mode": "warn"},
            # Half a CPU each: two pods of a pair fit the node's two cores.
            "resources": {"gpusPerNode": 1, "cpu": "500m", "nodeSelector": {POOL_LABEL: REAL_POOL}}
            | resources,
            "output": {"uri": f"s3://{BUCKET}/{root}/out/{name}"},
            "storage": {"credentialsSecret": SECRET},
            "runPolicy": {"backoffLimit": 0},
        },
    }


def _start_long_run(cluster: ClusterInfo, namespace: str, s3: Any, run: dict[str, Any]) -> str:
    """Applies a run too long to finish in a test, checkpointing every 10 steps, and
    waits for its first checkpoint; returns the key of its latest.json."""
    run["spec"]["training"] |= {"maxSteps": 100_000, "checkpointEvery": 10}
    apply(cluster, namespace, run)
    output = run["spec"]["output"]["uri"].removeprefix(f"s3://{BUCKET}/")
    latest = f"{output}/checkpoints/latest.json"

    def checkpointed() -> bool:
        try:
            s3.head_object(Bucket=BUCKET, Key=latest)
            return True
        except s3.exceptions.ClientError:
            return False

    wait_until(checkpointed, timeout=600, interval=2, what="a first checkpoint in S3")
    return latest


def _wait_phase(
    cluster: ClusterInfo, namespace: str, name: str, phases: set[str]
) -> dict[str, Any]:
    wait_until(
        lambda: status(cluster, namespace, name).get("phase") in phases,
        timeout=900,
        what=lambda: f"{name} to reach {phases}: {json.dumps(status(cluster, namespace, name))}",
        interval=2,
    )
    return status(cluster, namespace, name)


def test_two_nodes_train_together_through_headless_dns_and_publish_one_adapter(
    real: ClusterInfo,
    chart_operator: chart.ChartOperator,
    tiny_run: str,
    namespace: str,
    s3: Any,
) -> None:
    chart.apply_s3_secret(real, namespace=namespace, name=SECRET)
    apply(real, namespace, _finetunejob("pair", tiny_run, nodes=2))
    done = _wait_phase(real, namespace, "pair", {"Succeeded", "Failed"})
    assert done["phase"] == "Succeeded", done
    # The run is complete once rank 0 wrote the manifest; the pods exit right after.
    wait_until(
        lambda: (
            {p["status"]["phase"] for p in items(real, namespace, "pods", "job-name=pair-train-1")}
            == {"Succeeded"}
        ),
        timeout=180,
        what="both training pods to exit 0",
    )
    pods = items(real, namespace, "pods", "job-name=pair-train-1")
    assert len(pods) == 2
    assert {p["spec"]["nodeName"] for p in pods} == {real.real_node}
    assert all(p["spec"]["containers"][0]["image"] == real.trainer_image for p in pods)
    rank0 = next(p for p in pods if p["metadata"]["name"].startswith("pair-train-1-0-"))
    assert "world size 2" in _logs(real, namespace, rank0["metadata"]["name"])
    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{tiny_run}/out/pair/manifest.json")["Body"].read()
    )
    assert manifest["adapter"]["sha256"] == done["adapter"]["sha256"]


def test_an_oom_killed_run_says_so_and_names_its_memory_limit(
    real: ClusterInfo, chart_operator: chart.ChartOperator, tiny_run: str, namespace: str
) -> None:
    chart.apply_s3_secret(real, namespace=namespace, name=SECRET)
    # Importing torch alone needs more than this.
    apply(real, namespace, _finetunejob("small", tiny_run, memory="160Mi"))
    done = _wait_phase(real, namespace, "small", {"Succeeded", "Failed"})
    assert done["phase"] == "Failed", done
    failed = next(c for c in done["conditions"] if c["type"] == "Failed")
    assert "OOMKilled" in failed["message"], failed
    assert "160Mi" in failed["message"], failed


def test_an_evicted_training_pod_checkpoints_and_the_run_resumes_without_using_a_retry(
    real: ClusterInfo,
    chart_operator: chart.ChartOperator,
    tiny_run: str,
    namespace: str,
    kube: Any,
    s3: Any,
) -> None:
    """Eviction (as a node drain or a spot interruption handler does it) marks the pod
    DisruptionTarget and deletes it gracefully: the trainer checkpoints on SIGTERM, the
    Job fails through its podFailurePolicy, and attempt 2 resumes although
    backoffLimit is 0."""
    from kubernetes import client

    chart.apply_s3_secret(real, namespace=namespace, name=SECRET)
    latest = _start_long_run(real, namespace, s3, _finetunejob("evicted", tiny_run))
    (pod,) = items(real, namespace, "pods", "job-name=evicted-train-1")
    name = pod["metadata"]["name"]
    client.CoreV1Api(kube).create_namespaced_pod_eviction(
        name,
        namespace,
        client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=namespace)),
    )
    wait_until(
        lambda: status(real, namespace, "evicted").get("attempts") == 2,
        timeout=300,
        interval=2,
        what=lambda: f"attempt 2: {json.dumps(status(real, namespace, 'evicted'))}",
    )
    current = status(real, namespace, "evicted")
    assert current["phase"] == "Training", current
    first = json.loads(
        real.kubectl("get", "job", "evicted-train-1", "-n", namespace, "-o", "json").stdout
    )
    failed = next(c for c in first["status"]["conditions"] if c["type"] == "Failed")
    assert failed["reason"] == "PodFailurePolicy" and "DisruptionTarget" in failed["message"]
    events = real.kubectl(
        "get", "events", "-n", namespace, "--field-selector=reason=AttemptDisrupted", "-o", "name"
    )
    assert events.stdout.strip(), "no AttemptDisrupted event"
    saved = json.loads(s3.get_object(Bucket=BUCKET, Key=latest)["Body"].read())["step"]

    def resumed() -> bool:
        pods = items(real, namespace, "pods", "job-name=evicted-train-2")
        if not pods or pods[0]["status"].get("phase") not in ("Running", "Succeeded", "Failed"):
            return False
        logs = real.kubectl("logs", pods[0]["metadata"]["name"], "-n", namespace).stdout
        return "resuming from checkpoint-" in logs

    wait_until(resumed, timeout=300, interval=3, what="attempt 2 resuming from a checkpoint")
    assert saved >= 10
    real.kubectl("delete", "ftj", "evicted", "-n", namespace, "--wait=false")


def test_a_run_preempted_by_kueue_checkpoints_and_resumes_from_its_checkpoint(
    real: ClusterInfo,
    chart_operator: chart.ChartOperator,
    tiny_run: str,
    namespace: str,
    s3: Any,
) -> None:
    """One GPU of quota; a higher priority arrives while the first run trains. Kueue
    suspends the first Job (SIGTERM: the trainer checkpoints), admits the second, and
    gives the quota back when it ends; the first resumes in the same attempt."""
    if not real.kueue:
        pytest.skip("no Kueue in this cluster (TUNEGATE_KUEUE=0)")
    chart.apply_s3_secret(real, namespace=namespace, name=SECRET)
    queue = open_queue(real, namespace, local_queue_name="gpu", pool=REAL_POOL, gpus=1)
    low, high = f"{namespace}-low", f"{namespace}-high"
    for name, value in ((low, 100), (high, 1000)):
        apply_cluster_scoped(real, priority_class(name, value))
    try:
        first = _finetunejob("first", tiny_run, queueName="gpu", priorityClassName=low)
        first["spec"]["audit"] = {"mode": "off"}
        latest = _start_long_run(real, namespace, s3, first)
        second = _finetunejob("second", tiny_run, queueName="gpu", priorityClassName=high)
        second["spec"]["audit"] = {"mode": "off"}
        apply(real, namespace, second)

        def preempted() -> bool:
            queued = [
                c for c in status(real, namespace, "first").get("conditions", [])
                if c["type"] == "Queued" and c["status"] == "True"
            ]  # fmt: skip
            return bool(queued) and queued[0]["reason"] == "Preempted"

        wait_until(
            preempted, timeout=300, interval=2,
            what=lambda: f"first preempted: {json.dumps(status(real, namespace, 'first'))}",
        )  # fmt: skip
        assert status(real, namespace, "first")["phase"] == "Queued"
        done = _wait_phase(real, namespace, "second", {"Succeeded", "Failed"})
        assert done["phase"] == "Succeeded", done
        saved = json.loads(s3.get_object(Bucket=BUCKET, Key=latest)["Body"].read())["step"]

        def resumed() -> bool:
            pods = [
                p for p in items(real, namespace, "pods", "job-name=first-train-1")
                if p["status"].get("phase") in ("Running", "Succeeded", "Failed")
            ]  # fmt: skip
            logs = [_logs(real, namespace, p["metadata"]["name"]) for p in pods]
            return any("resuming from checkpoint-" in log for log in logs)

        wait_until(resumed, timeout=300, interval=3, what="first resuming from its checkpoint")
        assert saved >= 10
        current = status(real, namespace, "first")
        assert current["phase"] == "Training" and current["attempts"] == 1, current
        assert not items(real, namespace, "jobs", "tunegate.dev/attempt=2")
        events = real.kubectl(
            "get",
            "events",
            "-n",
            namespace,
            "-o",
            "name",
            "--field-selector=reason=Preempted,involvedObject.kind=FineTuneJob",
        )
        assert events.stdout.strip(), "no Preempted event"
    finally:
        real.kubectl("delete", "ftj", "--all", "-n", namespace, "--wait=false")
        real.kubectl("delete", "priorityclass", low, high, "--wait=false")
        close_queue(real, queue)
