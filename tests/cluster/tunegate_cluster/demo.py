"""The demo: install the chart and run its operator on the real node, fine-tune
SmolLM2-135M for real on this machine's CPU in the trainer image, and let two
EvalGates judge a gentle and a forgetting fine-tune. Without the real node
(TUNEGATE_REAL_NODE=0) the operator runs as a local process with the chart's RBAC and
the pods run through the local pod runner.

`make demo` runs it on a local cluster it starts (or on the one TUNEGATE_CLUSTER
names); tests/e2e asserts what it prints.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tunegate_cluster import chart
from tunegate_cluster.cluster import ClusterInfo
from tunegate_cluster.node_pools import GPU_TOLERATION, LOCAL_POOL, POOL_LABEL
from tunegate_cluster.object_store import S3Access, s3_client
from tunegate_cluster.operator_process import OperatorProcess
from tunegate_cluster.real_node_config import REAL_POOL

REPO_ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = REPO_ROOT / "examples"
NAMESPACE = "tunegate-demo"
MODEL_PREFIX = "models/smollm2-135m-instruct"
DATA_PREFIX = "demo"
SECRET = "tunegate-s3"
# The gentle pair promotes; the forgetting pair must be refused.
MANIFESTS = (
    "demo-cpu-finetunejob.yaml",
    "demo-cpu-evalgate.yaml",
    "demo-cpu-forgetting-finetunejob.yaml",
    "demo-cpu-forgetting-evalgate.yaml",
)
GATE_DONE = {"Promoted", "Passed", "Held", "Rejected", "Failed", "AwaitingApproval"}


@dataclass
class DemoResult:
    finetunejobs: dict[str, dict[str, Any]] = field(default_factory=dict)
    evalgates: dict[str, dict[str, Any]] = field(default_factory=dict)
    operator_log: str = ""
    seconds: float = 0.0


def documents(pool: str = REAL_POOL) -> list[dict[str, Any]]:
    """The example manifests, placed on `pool` (they name the real node's pool)."""
    loaded = [
        d for name in MANIFESTS for d in yaml.safe_load_all((EXAMPLES / name).read_text()) if d
    ]
    for document in loaded:
        selector = document["spec"].get("resources", {}).get("nodeSelector", {})
        if POOL_LABEL in selector:
            selector[POOL_LABEL] = pool
    return loaded


def demo_pool(cluster: ClusterInfo) -> str:
    return REAL_POOL if cluster.real_node else LOCAL_POOL


def upload_inputs(cluster: ClusterInfo, say: Callable[[str], None]) -> None:
    from tunegate_trainer.smollm2 import prepare

    s3 = _s3(cluster)
    checkpoint = prepare()
    for path in sorted(checkpoint.rglob("*")):
        if path.is_file() and not path.name.startswith("."):
            key = f"{MODEL_PREFIX}/{path.relative_to(checkpoint)}"
            s3.upload_file(str(path), cluster.s3_bucket, key)
    for path in sorted((EXAMPLES / "data").rglob("*.jsonl")):
        key = f"{DATA_PREFIX}/{path.relative_to(EXAMPLES / 'data')}"
        s3.upload_file(str(path), cluster.s3_bucket, key)
    say(f"uploaded SmolLM2-135M-Instruct and the example datasets to s3://{cluster.s3_bucket}")


def _kubectl(cluster: ClusterInfo, *args: str, stdin: str | None = None) -> str:
    result = cluster.kubectl(*args, stdin=stdin)
    if result.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args[:3])}: {result.stderr.strip()}")
    return result.stdout


def prepare_namespace(cluster: ClusterInfo) -> None:
    chart.apply_s3_secret(cluster, namespace=NAMESPACE, name=SECRET)


def reset(cluster: ClusterInfo, say: Callable[[str], None]) -> None:
    """A second demo run starts from scratch: earlier objects and their S3 outputs go
    (a FineTuneJob would otherwise resume from the old run's checkpoints)."""
    cluster.kubectl("delete", "evalgates,finetunejobs", "--all", "-n", NAMESPACE, "--timeout=120s")
    s3 = _s3(cluster)
    removed = 0
    for document in documents():
        spec = document["spec"]
        uri = (spec.get("output") or spec.get("promotion") or {}).get("uri")
        if not uri:
            continue
        prefix = uri.removeprefix(f"s3://{cluster.s3_bucket}/").rstrip("/") + "/"
        listed = s3.list_objects_v2(Bucket=cluster.s3_bucket, Prefix=prefix)
        for item in listed.get("Contents", []):
            s3.delete_object(Bucket=cluster.s3_bucket, Key=item["Key"])
            removed += 1
    if removed:
        say(f"removed {removed} objects of an earlier demo run")


def start_operator(cluster: ClusterInfo, workdir: Path) -> OperatorProcess | chart.ChartOperator:
    """The chart's operator Deployment on the real node, or without one the operator as
    a local process authenticated as the chart's ServiceAccount."""
    if cluster.real_node:
        in_cluster = chart.ChartOperator(cluster, secret=SECRET, pool=REAL_POOL)
        in_cluster.start()
        return in_cluster
    chart.install(cluster, chart.process_operator_values(cluster, secret=SECRET))
    kubeconfig = chart.service_account_kubeconfig(cluster, workdir / "operator.kubeconfig")
    local = {POOL_LABEL: LOCAL_POOL}
    operator = OperatorProcess(
        cluster,
        workdir,
        KUBECONFIG=str(kubeconfig),
        # The local pod runner runs a pod's command on this machine: the trainer is
        # this interpreter rather than an image.
        TUNEGATE_TRAINER_PYTHON=sys.executable,
        TUNEGATE_S3_CREDENTIALS_SECRET=SECRET,
        TUNEGATE_AUDIT_NODE_SELECTOR=json.dumps(local),
        TUNEGATE_AUDIT_TOLERATIONS=json.dumps([GPU_TOLERATION]),
        TUNEGATE_POD_ANNOTATIONS="{}",
        TUNEGATE_PROGRESS_INTERVAL_SECONDS="5",
    )
    operator.start()
    return operator


def _objects(cluster: ClusterInfo, kind: str) -> dict[str, dict[str, Any]]:
    listed = json.loads(_kubectl(cluster, "get", kind, "-n", NAMESPACE, "-o", "json"))
    return {o["metadata"]["name"]: o for o in listed["items"]}


def _line(kind: str, obj: dict[str, Any]) -> str:
    status = obj.get("status") or {}
    phase = status.get("phase", "-")
    detail = ""
    progress = status.get("progress") or {}
    if kind == "ftj" and progress.get("step"):
        detail = f" step {progress['step']}/{progress.get('totalSteps', '?')}"
        if progress.get("loss") is not None:
            detail += f" loss {progress['loss']:.3f}"
    if kind == "evg" and status.get("decision"):
        detail = f" {status['decision']['verdict']}: {status['decision'].get('reason', '')}"
    return f"{kind} {obj['metadata']['name']:<18} {phase}{detail}"


def watch(
    cluster: ClusterInfo, gates: list[str], say: Callable[[str], None], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    shown: dict[str, str] = {}
    while time.monotonic() < deadline:
        jobs, evgs = _objects(cluster, "finetunejobs"), _objects(cluster, "evalgates")
        for kind, objects in (("ftj", jobs), ("evg", evgs)):
            for name, obj in sorted(objects.items()):
                line = _line(kind, obj)
                if shown.get(f"{kind}/{name}") != line:
                    shown[f"{kind}/{name}"] = line
                    say(f"  {time.strftime('%H:%M:%S')}  {line}")
        if all((evgs.get(g, {}).get("status") or {}).get("phase") in GATE_DONE for g in gates):
            return
        time.sleep(3)
    raise TimeoutError(f"the demo did not finish within {timeout:.0f}s")


def download_report(cluster: ClusterInfo, status: dict[str, Any], target: Path) -> Path | None:
    """Copy a gate's report folder here: the local S3 stops with the demo's cluster."""
    uri = str(status.get("report") or "")
    if not uri:
        return None
    s3 = _s3(cluster)
    folder = uri.removeprefix(f"s3://{cluster.s3_bucket}/").rsplit("/", 1)[0] + "/"
    for item in s3.list_objects_v2(Bucket=cluster.s3_bucket, Prefix=folder).get("Contents", []):
        path = target / item["Key"][len(folder) :]
        path.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(cluster.s3_bucket, item["Key"], str(path))
    return target / uri.rsplit("/", 1)[1]


def _s3(cluster: ClusterInfo) -> Any:
    return s3_client(
        S3Access(
            cluster.s3_endpoint, cluster.s3_access_key, cluster.s3_secret_key, cluster.s3_bucket
        )
    )


def verdict_table(name: str, status: dict[str, Any], local_report: Path | None) -> str:
    from tunegate_operator.kubectl_plugin import verdict_table as table

    lines = [f"EvalGate {name}: {status.get('phase')}", table(status)]
    promoted = status.get("promoted") or {}
    if promoted.get("uri") and status.get("phase") == "Promoted":
        lines.append(f"promoted: {promoted['uri']} (sha256 {promoted['sha256'][:12]})")
    else:
        lines.append("promoted: nothing (the serving version is unchanged)")
    lines.append(f"report:   {status.get('report')}")
    if local_report is not None:
        lines.append(f"          copied to {local_report}")
    return "\n".join(lines)


def run_demo(
    cluster: ClusterInfo,
    workdir: Path,
    *,
    say: Callable[[str], None] = print,
    timeout: float = 3600,
) -> DemoResult:
    started = time.monotonic()
    upload_inputs(cluster, say)
    prepare_namespace(cluster)
    operator = start_operator(cluster, workdir)
    where = (
        f"as the chart's Deployment on node {cluster.real_node} ({cluster.operator_image})"
        if cluster.real_node
        else "as a local process"
    )
    say(f"chart installed; operator running {where} with ServiceAccount tunegate-operator")
    result = DemoResult()
    try:
        reset(cluster, say)  # with the operator up: it removes its finalizers
        manifests = documents(demo_pool(cluster))
        for document in manifests:
            _kubectl(cluster, "apply", "-n", NAMESPACE, "-f", "-", stdin=json.dumps(document))
            say(f"applied {document['kind']} {document['metadata']['name']}")
        gates = [d["metadata"]["name"] for d in manifests if d["kind"] == "EvalGate"]
        watch(cluster, gates, say, timeout)
    finally:
        result.operator_log = operator.log_text()
        operator.stop()
    result.finetunejobs = {n: o.get("status") or {} for n, o in _objects(cluster, "ftj").items()}
    result.evalgates = {n: o.get("status") or {} for n, o in _objects(cluster, "evg").items()}
    for name, status in sorted(result.evalgates.items()):
        say("")
        local = download_report(cluster, status, workdir / "reports" / name)
        say(verdict_table(name, status, local))
    result.seconds = time.monotonic() - started
    say(f"\ndemo finished in {result.seconds / 60:.1f} min")
    return result
