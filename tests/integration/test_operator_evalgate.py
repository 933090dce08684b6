"""EvalGate on the real control plane: the eval pod is faked on kwok and the test plays
it by writing results.json; promotion really copies objects in the S3 server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import pytest
import yaml

from tunegate_cluster.cluster import ClusterInfo
from tunegate_cluster.gate_play import (
    FORGETFUL,
    GOOD,
    gate,
    play_eval_pod,
    served_bytes,
    source_bytes,
    succeeded_run,
    wait_phase_of,
)
from tunegate_cluster.kube_helpers import (
    BUCKET,
    apply,
    condition,
    get,
    items,
    wait_job,
)
from tunegate_cluster.processes import wait_until
from tunegate_operator.promotion import promote


def test_passing_gate_promotes_with_verified_copy_history_and_configmap(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str, tmp_path: Path
) -> None:
    cluster = crds
    adapter = succeeded_run(cluster, s3, namespace, prefix, "good")
    promotion = f"s3://{BUCKET}/{prefix}/serving"
    apply(cluster, namespace, gate("g1", "good", promotion))
    config = play_eval_pod(cluster, s3, namespace, "g1", GOOD)
    assert config["adapter"] == adapter
    st = wait_phase_of(cluster, namespace, "g1", "Promoted")
    assert st["decision"]["verdict"] == "Pass"
    rows = {r["suite"]: r for r in st["results"]}
    assert rows["task"]["verdict"] == "Pass" and rows["task"]["interval"]["low"] >= 0.1
    assert rows["drift"]["delta"] < 0.2 and st["summary"]["kl"] < 0.2
    assert condition(st, "Promoted")["status"] == "True"
    record = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{prefix}/serving/promotion.json")["Body"].read()
    )
    assert record["current"]["source"] == adapter and record["previous"] == []
    assert served_bytes(s3, promotion) == source_bytes(s3, adapter)
    assert st["promoted"]["sha256"] == record["current"]["sha256"]
    assert st["promoted"]["uri"] == record["current"]["uri"]
    serving = get(cluster, namespace, "configmap", "g1-serving")["data"]
    assert serving["sha256"] == record["current"]["sha256"]
    assert serving["adapterUri"] == record["current"]["uri"]
    st = wait_until_handed_off(cluster, namespace, "g1")
    assert st["handoff"]["targets"] == ["v1 ConfigMap/g1-serving"]
    index = st["report"].removeprefix(f"s3://{BUCKET}/")
    page = s3.get_object(Bucket=BUCKET, Key=index)["Body"].read().decode()
    assert "general" in page and "Pass" in page and 'src="task.svg"' in page
    plot = s3.get_object(Bucket=BUCKET, Key=index.replace("index.html", "task.svg"))
    assert plot["ContentType"] == "image/svg+xml"
    assert ElementTree.fromstring(plot["Body"].read()).tag.endswith("svg")
    fetched = plugin(cluster, "report", "g1", "-n", namespace, "-o", str(tmp_path / "report"))
    assert fetched.returncode == 0, fetched.stderr
    assert "decision: Pass" in fetched.stdout and "general" in fetched.stdout
    assert (tmp_path / "report" / "index.html").read_text() == page
    assert ElementTree.parse(tmp_path / "report" / "task.svg").getroot().tag.endswith("svg")
    described = cluster.kubectl("describe", "evalgate", "g1", "-n", namespace).stdout
    assert "Verdict" in described and "general" in described

    # A second passing run replaces it; the first is kept in the history.
    second = succeeded_run(cluster, s3, namespace, prefix, "better")
    apply(cluster, namespace, gate("g2", "better", promotion))
    play_eval_pod(cluster, s3, namespace, "g2", GOOD)
    st2 = wait_phase_of(cluster, namespace, "g2", "Promoted")
    record2 = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{prefix}/serving/promotion.json")["Body"].read()
    )
    assert record2["current"]["source"] == second
    assert record2["previous"][0] == record["current"]
    assert st2["promoted"]["previous"] == record["current"]["sha256"]
    assert served_bytes(s3, promotion) == source_bytes(s3, second)
    # Both versions stay, each in its own folder; nothing was copied over the first.
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/serving/versions/")
    assert sorted({o["Key"].split("/")[-2] for o in listed["Contents"]}) == sorted(
        [record["current"]["sha256"][:12], record2["current"]["sha256"][:12]]
    )
    # The first gate sees it was replaced and does not take the URI back.
    st1 = wait_phase_of(cluster, namespace, "g1", "Superseded")
    assert second in condition(st1, "Promoted")["message"]
    time.sleep(6)
    assert (
        json.loads(
            s3.get_object(Bucket=BUCKET, Key=f"{prefix}/serving/promotion.json")["Body"].read()
        )["current"]["source"]
        == second
    )


def test_promotion_hands_off_to_a_deployment_that_rolls_out(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    succeeded_run(cluster, s3, namespace, prefix, "run")
    apply(cluster, namespace, deployment("server"))
    wait_until(
        lambda: replica_set_annotations(cluster, namespace, "server") == [""],
        timeout=30,
        what="the server's first ReplicaSet",
    )
    body = gate("g", "run", f"s3://{BUCKET}/{prefix}/serving")
    body["spec"]["promotion"]["handoff"] = [
        ADAPTER_ANNOTATIONS | {"name": "server"},
        ADAPTER_ANNOTATIONS | {"name": "later"},
    ]
    apply(cluster, namespace, body)
    play_eval_pod(cluster, s3, namespace, "g", GOOD)
    st = wait_phase_of(cluster, namespace, "g", "Promoted")
    sha = st["promoted"]["sha256"]

    # The second target does not exist yet: said once, in a condition and an event;
    # the pointer has moved regardless, and the hand-off is retried.
    def handed_off() -> dict[str, Any]:
        conditions = get(cluster, namespace, "evalgate", "g")["status"].get("conditions", [])
        return next((c for c in conditions if c["type"] == "HandedOff"), {})

    wait_until(
        lambda: handed_off().get("reason") == "HandoffFailed",
        timeout=30,
        what=lambda: f"a failed hand-off (now {handed_off()})",
    )
    message = handed_off()["message"]
    assert "apps/v1 Deployment/later: not found in namespace" in message
    time.sleep(8)
    failures = [e for e in items(cluster, namespace, "events") if e["reason"] == "HandoffFailed"]
    assert len(failures) == 1 and failures[0].get("count", 1) == 1
    assert "handoff" not in get(cluster, namespace, "evalgate", "g")["status"]

    apply(cluster, namespace, deployment("later"))
    st = wait_until_handed_off(cluster, namespace, "g")
    assert st["handoff"]["targets"] == [
        "v1 ConfigMap/g-serving",
        "apps/v1 Deployment/server",
        "apps/v1 Deployment/later",
    ]
    # A real rollout: the Deployment controller made a ReplicaSet for the new template,
    # whose init container fetches the version the pointer names.
    wait_until(
        lambda: replica_set_annotations(cluster, namespace, "server") == ["", sha],
        timeout=30,
        what=lambda: (
            f"a rollout to {sha[:12]} ({replica_set_annotations(cluster, namespace, 'server')})"
        ),
    )
    assert (
        pod_annotations(cluster, namespace, "server")["tunegate.dev/adapter-uri"]
        == (st["promoted"]["uri"])
    )
    # Handed off once: not patched again on later passes.
    generation = get(cluster, namespace, "deployment", "server")["metadata"]["generation"]
    time.sleep(8)
    assert get(cluster, namespace, "deployment", "server")["metadata"]["generation"] == generation

    # The verdict where Argo Rollouts reads it (examples/serving/argo-rollouts-analysis.yaml).
    assert argo_web_metric(cluster, namespace, "g") == "Successful"
    assert argo_job_metric(cluster, namespace, "g") == 0


def test_an_operator_killed_after_moving_the_pointer_finishes_on_restart(
    operator: Any, crds: ClusterInfo, s3: Any, store: Any, namespace: str, prefix: str
) -> None:
    """Killed between the pointer write and the status write: the restarted operator
    reads the pointer, reports Promoted from it, hands off, and copies nothing again
    (each S3 step of the promotion itself is a kill point in test_promotion.py)."""
    cluster = crds
    adapter = succeeded_run(cluster, s3, namespace, prefix, "run")
    promotion = f"s3://{BUCKET}/{prefix}/serving"
    apply(cluster, namespace, gate("g", "run", promotion))
    wait_job(cluster, namespace, "g-eval-1")
    operator.kill()
    play_eval_pod(cluster, s3, namespace, "g", GOOD)
    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{prefix}/out/run/manifest.json")["Body"].read()
    )
    done = promote(  # what the killed operator had done
        store,
        adapter_uri=adapter,
        promotion_uri=promotion,
        expected_files=manifest["adapter"]["files"],
        expected_sha256=manifest["adapter"]["sha256"],
        gate=f"{namespace}/g",
    )
    operator.start()
    st = wait_phase_of(cluster, namespace, "g", "Promoted", timeout=90)
    assert st["promoted"]["uri"] == done.uri and st["promoted"]["sha256"] == done.sha256
    wait_until_handed_off(cluster, namespace, "g")
    assert get(cluster, namespace, "configmap", "g-serving")["data"]["adapterUri"] == done.uri
    record = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{prefix}/serving/promotion.json")["Body"].read()
    )
    assert record["previous"] == [] and record["current"]["at"] == done.at  # not redone
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/serving/versions/")
    assert {o["Key"].split("/")[-2] for o in listed["Contents"]} == {done.sha256[:12]}


def test_forgetful_candidate_is_rejected_and_never_promoted(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    succeeded_run(cluster, s3, namespace, prefix, "narrow")
    apply(cluster, namespace, gate("g", "narrow", f"s3://{BUCKET}/{prefix}/serving"))
    play_eval_pod(cluster, s3, namespace, "g", FORGETFUL)
    st = wait_phase_of(cluster, namespace, "g", "Rejected")
    assert st["decision"]["verdict"] == "Fail" and "general (retention)" in st["decision"]["reason"]
    assert {r["suite"]: r["verdict"] for r in st["results"]}["general"] == "Fail"
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/serving/").get("KeyCount") == 0
    assert cluster.kubectl("get", "configmap", "g-serving", "-n", namespace).returncode != 0
    assert argo_web_metric(cluster, namespace, "g") == "Failed"
    assert argo_job_metric(cluster, namespace, "g") != 0


def test_manual_mode_waits_for_approval(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    succeeded_run(cluster, s3, namespace, prefix, "run")
    apply(cluster, namespace, gate("g", "run", f"s3://{BUCKET}/{prefix}/serving", mode="manual"))
    play_eval_pod(cluster, s3, namespace, "g", GOOD)
    st = wait_phase_of(cluster, namespace, "g", "AwaitingApproval")
    assert "tunegate.dev/approve=true" in condition(st, "Promoted")["message"]
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/serving/").get("KeyCount") == 0
    # Through the kubectl plugin, found on PATH as kubectl-tunegate.
    approved = plugin(cluster, "approve", "g", "-n", namespace)
    assert approved.returncode == 0, approved.stderr
    assert "approved; the operator promotes it now" in approved.stdout
    wait_phase_of(cluster, namespace, "g", "Promoted")


def test_gate_waits_for_its_finetunejob_and_reports_a_missing_one(
    operator: Any, crds: ClusterInfo, namespace: str, prefix: str
) -> None:
    cluster = crds
    apply(cluster, namespace, gate("g", "nope", f"s3://{BUCKET}/{prefix}/serving"))
    st = wait_phase_of(cluster, namespace, "g", "WaitingForCandidate")
    assert "spec.candidate.fineTuneJobRef.name" in condition(st, "CandidateReady")["message"]
    assert items(cluster, namespace, "jobs") == []


def test_tampered_adapter_is_not_promoted(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    adapter = succeeded_run(cluster, s3, namespace, prefix, "run")
    s3.put_object(
        Bucket=BUCKET,
        Key=f"{adapter.removeprefix(f's3://{BUCKET}/')}/adapter_model.safetensors",
        Body=b"swapped after training",
    )
    apply(cluster, namespace, gate("g", "run", f"s3://{BUCKET}/{prefix}/serving"))
    play_eval_pod(cluster, s3, namespace, "g", GOOD)
    wait_phase_of(cluster, namespace, "g", "Failed")
    events = [e for e in items(cluster, namespace, "events") if e["reason"] == "PromotionFailed"]
    assert events and "manifest says" in events[0]["message"]
    st = get(cluster, namespace, "evalgate", "g")["status"]
    assert condition(st, "Promoted")["reason"] == "PromotionFailed"
    time.sleep(8)  # a refused promotion is not retried until the spec changes
    again = [e for e in items(cluster, namespace, "events") if e["reason"] == "PromotionFailed"]
    assert sum(e.get("count", 1) for e in again) == sum(e.get("count", 1) for e in events)
    # Serving has nothing to load: no pointer, and no byte of the refused version.
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=BUCKET, Key=f"{prefix}/serving/promotion.json")
    assert s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/serving/").get("KeyCount") == 0
    assert cluster.kubectl("get", "configmap", "g-serving", "-n", namespace).returncode != 0


def test_scheduled_reevaluation_that_fails_restores_the_previous_version(
    operator: Any, crds: ClusterInfo, s3: Any, namespace: str, prefix: str
) -> None:
    cluster = crds
    promotion = f"s3://{BUCKET}/{prefix}/serving"
    first = succeeded_run(cluster, s3, namespace, prefix, "first")
    apply(cluster, namespace, gate("g1", "first", promotion))
    play_eval_pod(cluster, s3, namespace, "g1", GOOD)
    first_sha = wait_phase_of(cluster, namespace, "g1", "Promoted")["promoted"]["sha256"]
    succeeded_run(cluster, s3, namespace, prefix, "second")
    apply(cluster, namespace, deployment("server"))
    reevaluate = {"schedule": "* * * * *", "rollbackOnFail": True}
    g2 = gate("g2", "second", promotion, reevaluate=reevaluate)
    g2["spec"]["promotion"]["handoff"] = [ADAPTER_ANNOTATIONS | {"name": "server"}]
    apply(cluster, namespace, g2)
    play_eval_pod(cluster, s3, namespace, "g2", GOOD)
    st = wait_phase_of(cluster, namespace, "g2", "Promoted")
    second_sha = st["promoted"]["sha256"]
    assert st["reevaluation"]["nextAt"] > st["promoted"]["at"]
    wait_until(
        lambda: pod_annotations(cluster, namespace, "server").get(SHA_KEY) == second_sha,
        timeout=30,
        what="the server's pod template to name the promoted version",
    )

    # At the next minute the served adapter is judged again and still passes; the
    # condition saying so stays between rounds.
    config = play_eval_pod(cluster, s3, namespace, "g2", GOOD, job_name="g2-eval-1-r1", timeout=90)
    assert config["adapter"] == f"{promotion}/versions/{second_sha[:12]}"
    assert config["results"].endswith("/evals/g2-g1-r1/results.json")

    def reevaluation() -> dict[str, Any]:
        return dict(get(cluster, namespace, "evalgate", "g2")["status"].get("reevaluation") or {})

    wait_until(
        lambda: reevaluation().get("lastVerdict") == "Pass",
        timeout=60,
        what=lambda: f"round 1 to pass (now {reevaluation()})",
    )
    time.sleep(6)
    st = get(cluster, namespace, "evalgate", "g2")["status"]
    assert st["phase"] == "Promoted" and condition(st, "Reevaluated")["reason"] == "Pass"

    # The minute after, it forgets (say the suites were refreshed): rolled back.
    play_eval_pod(cluster, s3, namespace, "g2", FORGETFUL, job_name="g2-eval-1-r2", timeout=90)
    st = wait_phase_of(cluster, namespace, "g2", "RolledBack")
    assert st["reevaluation"]["lastVerdict"] == "Fail" and st["reevaluation"]["round"] == 2
    assert st["promoted"]["sha256"] == first_sha and st["promoted"]["previous"] == second_sha
    assert condition(st, "Promoted")["reason"] == "RolledBack"
    record = json.loads(
        s3.get_object(Bucket=BUCKET, Key=f"{prefix}/serving/promotion.json")["Body"].read()
    )
    assert record["current"]["sha256"] == first_sha
    assert record["rolledBack"][0]["sha256"] == second_sha
    assert served_bytes(s3, promotion) == source_bytes(s3, first)
    kept = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/serving/versions/{second_sha[:12]}/")
    assert kept.get("KeyCount") == 2
    st = wait_until_handed_off(cluster, namespace, "g2", first_sha)
    assert get(cluster, namespace, "configmap", "g2-serving")["data"]["sha256"] == first_sha
    assert pod_annotations(cluster, namespace, "server")[SHA_KEY] == first_sha
    reasons = [e["reason"] for e in items(cluster, namespace, "events")]
    assert "RolledBack" in reasons and "ReevaluationFail" in reasons
    time.sleep(8)  # the rolled-back candidate is not promoted again
    again = get(cluster, namespace, "evalgate", "g2")["status"]
    assert again["phase"] == "RolledBack" and again["promoted"]["sha256"] == first_sha


SHA_KEY = "tunegate.dev/adapter-sha256"
# The vLLM filesystem-resolver recipe: the pod template's annotations change, the
# Deployment rolls out, and the init container fetches ADAPTER_URI (downward API).
ADAPTER_ANNOTATIONS = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "patch": {
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {"tunegate.dev/adapter-uri": "${uri}", SHA_KEY: "${sha256}"}
                }
            }
        }
    },
}


def deployment(name: str) -> dict[str, Any]:
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "nodeSelector": {"tunegate.dev/pool": "cpu"},
                    "tolerations": [{"operator": "Exists"}],
                    "initContainers": [
                        {
                            "name": "fetch-adapter",
                            "image": "amazon/aws-cli:2.22.0",
                            "args": ["s3", "sync", "$(ADAPTER_URI)", "/adapters/router"],
                            "env": [
                                {
                                    "name": "ADAPTER_URI",
                                    "valueFrom": {
                                        "fieldRef": {
                                            "fieldPath": (
                                                "metadata.annotations['tunegate.dev/adapter-uri']"
                                            )
                                        }
                                    },
                                }
                            ],
                        }
                    ],
                    "containers": [{"name": "vllm", "image": "vllm/vllm-openai:v0.11.0"}],
                },
            },
        },
    }


def pod_annotations(cluster: ClusterInfo, namespace: str, name: str) -> dict[str, str]:
    template = get(cluster, namespace, "deployment", name)["spec"]["template"]
    return dict(template["metadata"].get("annotations") or {})


def replica_set_annotations(cluster: ClusterInfo, namespace: str, app: str) -> list[str]:
    """The adapter digest in each ReplicaSet's pod template: one per rollout."""
    return sorted(
        rs["spec"]["template"]["metadata"].get("annotations", {}).get(SHA_KEY, "")
        for rs in items(cluster, namespace, "replicasets", f"app={app}")
    )


def wait_until_handed_off(
    cluster: ClusterInfo, namespace: str, name: str, sha256: str | None = None
) -> dict[str, Any]:
    def status() -> dict[str, Any]:
        return dict(get(cluster, namespace, "evalgate", name).get("status") or {})

    def done() -> bool:
        st = status()
        want = sha256 or (st.get("promoted") or {}).get("sha256")
        return want is not None and (st.get("handoff") or {}).get("sha256") == want

    wait_until(done, timeout=30, what=lambda: f"evalgate {name} hand-off (now {status()})")
    st = status()
    assert condition(st, "HandedOff")["status"] == "True"
    return st


ANALYSIS = Path(__file__).resolve().parents[2] / "examples/serving/argo-rollouts-analysis.yaml"


def argo_web_metric(cluster: ClusterInfo, namespace: str, gate_name: str) -> str:
    """The web metric's outcome: the template's URL fetched from the API server, its
    jsonPath evaluated by client-go's JSONPath (kubectl's, as the rollouts controller
    uses), and its success/failure conditions applied."""
    template = next(d for d in yaml.safe_load_all(ANALYSIS.read_text()) if d)
    metric = template["spec"]["metrics"][0]
    web = metric["provider"]["web"]
    url = web["url"].replace("{{args.namespace}}", namespace)
    path = url.replace("{{args.evalgate}}", gate_name).removeprefix(
        "https://kubernetes.default.svc"
    )
    raw = cluster.kubectl("get", "--raw", path)
    assert raw.returncode == 0, raw.stderr
    picked = cluster.kubectl(
        "get", "evalgate", gate_name, "-n", namespace, "-o", f"jsonpath={web['jsonPath']}"
    )
    assert picked.returncode == 0, picked.stderr
    result = picked.stdout
    assert result == json.loads(raw.stdout)["status"]["phase"]
    success = re.fullmatch(r'result == "(\w+)"', metric["successCondition"])
    failure = re.fullmatch(r"result in (\[.*\])", metric["failureCondition"])
    assert success and failure, "the example's conditions changed shape"
    if result == success.group(1):
        return "Successful"
    return "Failed" if result in json.loads(failure.group(1)) else "Inconclusive"


def argo_job_metric(cluster: ClusterInfo, namespace: str, gate_name: str) -> int:
    """The job metric's container (`kubectl wait ...`), run here: its exit status."""
    job = [d for d in yaml.safe_load_all(ANALYSIS.read_text()) if d][1]
    container = job["spec"]["metrics"][0]["provider"]["job"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    args = [a.replace("{{args.evalgate}}", gate_name) for a in container["args"]]
    args = [a if not a.startswith("--timeout=") else "--timeout=5s" for a in args]
    return cluster.kubectl(*args, "-n", namespace).returncode


def plugin(cluster: ClusterInfo, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl tunegate ...`: kubectl finds the plugin on PATH (the venv's bin)."""
    env = {**os.environ, **cluster.env()}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    return subprocess.run(
        [f"{cluster.bin_dir}/kubectl", "tunegate", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
