"""The demo, asserted: the chart installed, the operator running with the chart's
RBAC, two real SmolLM2-135M fine-tunes on this CPU, and two gates. The gentle run
(low learning rate, replay) must Pass and be promoted; the forgetting run (high
learning rate, every layer, no replay) must Fail on retention or drift and leave
serving alone. This is also the EvalGate efficacy scenario on a real model."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tunegate_cluster.cluster import ClusterInfo
from tunegate_cluster.demo import NAMESPACE, run_demo
from tunegate_cluster.object_store import S3Access, s3_client
from tunegate_contract.digest import tree_digest

GENTLE, FORGETFUL = "demo-nimbus", "demo-nimbus-forgetful"


@pytest.fixture(scope="module")
def demo(crds: ClusterInfo, tmp_path_factory: pytest.TempPathFactory) -> Any:
    lines: list[str] = []
    workdir = tmp_path_factory.mktemp("demo")
    result = run_demo(crds, workdir, say=lines.append, timeout=3000)
    print("\n".join(lines))
    return result, lines, workdir


def _s3(cluster: ClusterInfo) -> Any:
    return s3_client(
        S3Access(
            cluster.s3_endpoint, cluster.s3_access_key, cluster.s3_secret_key, cluster.s3_bucket
        )
    )


@pytest.mark.timeout(3600)
def test_real_training_ran_and_published_a_verified_adapter(demo: Any, crds: ClusterInfo) -> None:
    result, _, _ = demo
    s3 = _s3(crds)
    for name in (GENTLE, FORGETFUL):
        status = result.finetunejobs[name]
        assert status["phase"] == "Succeeded", status
        assert status["audit"]["verdict"] == "Passed"
        assert status["progress"]["step"] == status["progress"]["totalSteps"] > 0
        adapter = status["adapter"]
        key = adapter["uri"].removeprefix(f"s3://{crds.s3_bucket}/").rsplit("/", 1)[0]
        manifest = json.loads(
            s3.get_object(Bucket=crds.s3_bucket, Key=f"{key}/manifest.json")["Body"].read()
        )
        # The bytes in S3 are the ones the manifest vouches for.
        prefix = adapter["uri"].removeprefix(f"s3://{crds.s3_bucket}/") + "/"
        listed = s3.list_objects_v2(Bucket=crds.s3_bucket, Prefix=prefix)["Contents"]
        digests = {
            o["Key"][len(prefix) :]: hashlib.sha256(
                s3.get_object(Bucket=crds.s3_bucket, Key=o["Key"])["Body"].read()
            ).hexdigest()
            for o in listed
        }
        assert digests == manifest["adapter"]["files"]
        assert tree_digest(digests) == manifest["adapter"]["sha256"] == adapter["sha256"]
        assert manifest["trainable_parameters"] > 0
        assert set(manifest["adapter"]["files"]) >= {
            "adapter_config.json",
            "adapter_model.safetensors",
        }


@pytest.mark.timeout(3600)
def test_the_gentle_run_passes_and_only_it_is_promoted(demo: Any, crds: ClusterInfo) -> None:
    result, lines, workdir = demo
    gentle = result.evalgates[GENTLE]
    assert gentle["phase"] == "Promoted", gentle
    assert gentle["decision"]["verdict"] == "Pass"
    rows = {r["role"]: r for r in gentle["results"]}
    assert rows["target"]["interval"]["low"] >= rows["target"]["threshold"]
    assert rows["retention"]["verdict"] == "Pass"
    serving = gentle["promoted"]["uri"]
    pointer = "serving/nimbus-router/promotion.json"  # examples/demo-cpu-evalgate.yaml
    record = json.loads(_s3(crds).get_object(Bucket=crds.s3_bucket, Key=pointer)["Body"].read())
    assert record["current"]["sha256"] == result.finetunejobs[GENTLE]["adapter"]["sha256"]
    assert record["current"]["uri"] == serving  # the version folder the pointer names

    forgetful = result.evalgates[FORGETFUL]
    assert forgetful["phase"] == "Rejected", forgetful
    assert forgetful["decision"]["verdict"] == "Fail"
    failed = {r["role"] for r in forgetful["results"] if r["verdict"] == "Fail"}
    assert failed & {"retention", "drift"}, forgetful["results"]
    assert not (forgetful.get("promoted") or {}).get("uri")
    # The demo's closing output: verdict tables, the promoted URI, local reports.
    text = "\n".join(lines)
    assert f"promoted: {serving}" in text
    assert "promoted: nothing (the serving version is unchanged)" in text
    assert (workdir / "reports" / GENTLE / "index.html").exists()


@pytest.mark.timeout(3600)
def test_no_secret_value_leaks_into_status_events_or_logs(demo: Any, crds: ClusterInfo) -> None:
    result, lines, _ = demo
    secret = crds.s3_secret_key
    events = crds.kubectl("get", "events", "-n", NAMESPACE, "-o", "json").stdout
    objects = crds.kubectl("get", "ftj,evg", "-n", NAMESPACE, "-o", "json").stdout
    for where, text in (
        ("events", events),
        ("statuses", objects),
        ("operator log", result.operator_log),
        ("demo output", "\n".join(lines)),
    ):
        assert secret not in text, f"the S3 secret key appears in the {where}"
    assert json.loads(events)["items"], "the operator posted no events"


@pytest.mark.timeout(600)
def test_kubectl_plugin_shows_a_runs_logs(demo: Any, crds: ClusterInfo) -> None:
    env = {**os.environ, **crds.env()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    shown = subprocess.run(
        [f"{crds.bin_dir}/kubectl", "tunegate", "logs", GENTLE, "-n", NAMESPACE],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    assert f"==> pod {GENTLE}-train-1" in shown.stdout
    assert "train_loss" in shown.stdout  # the trainer's own log lines, not a stub


@pytest.mark.timeout(600)
def test_the_demo_ran_in_containers_from_the_project_images_on_the_real_node(
    demo: Any, crds: ClusterInfo
) -> None:
    """What the runtime was told to run, read back from containerd: the image, the
    uid, no privilege escalation, no capabilities."""
    if not crds.real_node:
        pytest.skip("no real node in this cluster (TUNEGATE_REAL_NODE=0)")
    pods = json.loads(crds.kubectl("get", "pods", "-n", NAMESPACE, "-o", "json").stdout)["items"]
    components = {p["metadata"]["labels"].get("tunegate.dev/component") for p in pods}
    assert {"audit", "train"} <= components and any(
        p["metadata"]["labels"].get("tunegate.dev/evalgate") for p in pods
    )
    crictl = [
        f"{crds.bin_dir}/crictl",
        f"--runtime-endpoint=unix://{crds.state_dir}/node/containerd/containerd.sock",
    ]
    for pod in pods:
        assert pod["spec"]["nodeName"] == crds.real_node
        (status,) = pod["status"]["containerStatuses"]
        audit = pod["metadata"]["labels"].get("tunegate.dev/component") == "audit"
        # The audit runs in its own image, without torch.
        assert status["image"] == (crds.audit_image if audit else crds.trainer_image)
        assert status["state"]["terminated"]["exitCode"] == 0
        container_id = status["containerID"].removeprefix("containerd://")
        inspected = subprocess.run(
            [*crictl, "inspect", container_id], capture_output=True, text=True, check=True
        )
        spec = json.loads(inspected.stdout)["info"]["runtimeSpec"]
        assert spec["process"]["user"]["uid"] == 10001
        assert spec["process"]["noNewPrivileges"] is True
        assert not spec["process"]["capabilities"].get("effective")
