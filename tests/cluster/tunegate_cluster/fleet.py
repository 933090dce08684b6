"""A fleet of FineTuneJobs and EvalGates played to the end on the control plane, for
the fault suite: the operator runs for real, the pods are kwok's, and a player writes
what each pod would write to S3 (audit report, adapter and manifest, eval scores) after
a pod-like while. Faults are injected around it; `read_snapshot` reads back everything
the invariants judge."""

from __future__ import annotations

import hashlib
import json
import random
import re
import time
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from tunegate_cluster.cluster import ClusterInfo
from tunegate_cluster.gate_play import (
    FORGETFUL,
    GOOD,
    gate,
    write_eval_results,
    write_trained_adapter,
)
from tunegate_cluster.invariants import Expected, Snapshot
from tunegate_cluster.kube_helpers import BUCKET, apply, end_pod, ftj, put_json
from tunegate_operator.planner.shapes import SMOLLM2_135M

# A planted credential: it must never surface in a status, an event or a log.
CREDENTIALS_SECRET = "fleet-s3"
PLANTED_SECRET = "fleet-secret-value-do-not-print"

_JOB = re.compile(r"^(?P<owner>.+)-(?P<kind>audit|train|eval)(-(?P<attempt>\d+))?$")


@dataclass(frozen=True)
class FleetPlan:
    runs: int = 20
    gates: int = 5
    rejected: frozenset[int] = frozenset({4})  # gates whose candidate forgets
    train_seconds: tuple[float, float] = (3.0, 12.0)
    eval_seconds: tuple[float, float] = (2.0, 6.0)
    audit_seconds: tuple[float, float] = (1.0, 3.0)
    seed: int = 0

    def run_names(self) -> list[str]:
        return [f"run-{i:02d}" for i in range(self.runs)]

    def gate_names(self) -> list[str]:
        return [f"gate-{i}" for i in range(self.gates)]

    def audited(self) -> frozenset[str]:
        """Every other run goes through the data audit; the rest skip it."""
        return frozenset(self.run_names()[::2])

    def judged_run(self, gate_name: str) -> str:
        return self.run_names()[self.gate_names().index(gate_name)]

    def rates(self, gate_name: str) -> dict[str, tuple[float, float]]:
        return FORGETFUL if self.gate_names().index(gate_name) in self.rejected else GOOD

    def promotion_uri(self, prefix: str, gate_name: str) -> str:
        return f"s3://{BUCKET}/{prefix}/serving/{gate_name}"

    def expected(self, attempts: dict[str, int] | None = None) -> Expected:
        return Expected(
            runs=dict.fromkeys(self.run_names(), "Succeeded"),
            gates={
                name: "Rejected" if i in self.rejected else "Promoted"
                for i, name in enumerate(self.gate_names())
            },
            audited=self.audited(),
            attempts=attempts or {},
        )

    def manifests(self, prefix: str) -> list[dict[str, Any]]:
        runs = [
            ftj(
                name,
                prefix,
                storage={"credentialsSecret": CREDENTIALS_SECRET},
                **({} if name in self.audited() else {"audit": {"mode": "off"}}),
            )
            for name in self.run_names()
        ]
        gates = [
            gate(name, self.judged_run(name), self.promotion_uri(prefix, name))
            for name in self.gate_names()
        ]
        return [*runs, *gates]


def prepare_namespace(cluster: ClusterInfo, s3: Any, namespace: str, prefix: str) -> None:
    """The namespace, its S3 credentials Secret, and the model config and data the
    fleet's FineTuneJobs name."""
    created = cluster.kubectl("create", "namespace", namespace)
    if created.returncode != 0:
        raise RuntimeError(f"creating namespace {namespace}: {created.stderr.strip()}")
    apply(cluster, namespace, credentials_secret())
    put_json(s3, f"{prefix}/model/config.json", SMOLLM2_135M)
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}/data/train.jsonl", Body=b'{"text": "hi"}\n')


def credentials_secret() -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": CREDENTIALS_SECRET},
        "stringData": {
            "AWS_ACCESS_KEY_ID": "AKIAFLEETEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": PLANTED_SECRET,
        },
    }


@dataclass
class Player:
    """Plays every pod of the fleet: once a Job has run for its pod's while, writes what
    that pod writes. A write S3 refuses is tried again on the next step, as the
    trainer's own retries would."""

    cluster: ClusterInfo
    s3: Any
    namespace: str
    prefix: str
    plan: FleetPlan
    written_adapters: dict[str, str] = field(default_factory=dict)
    failed_writes: int = 0
    _due: dict[str, float] = field(default_factory=dict)
    _played: set[str] = field(default_factory=set)
    _exiting: set[str] = field(default_factory=set)  # pods that have written, not yet ended

    def __post_init__(self) -> None:
        self._rng = random.Random(self.plan.seed)

    def step(self) -> None:
        listed = self.cluster.kubectl("get", "jobs", "-n", self.namespace, "-o", "json")
        running = running_jobs(self.cluster, self.namespace)
        if listed.returncode != 0 or running is None:
            return  # the API server is away; pods keep working, the player waits
        now = time.monotonic()
        for job in json.loads(listed.stdout)["items"]:
            name = job["metadata"]["name"]
            parsed = _JOB.match(name)
            # Only a running pod writes: not a pending one, nor a failed attempt's.
            if name in self._played or parsed is None or name not in running:
                continue
            due = self._due.setdefault(name, now + self._duration(parsed["kind"]))
            if now < due:
                continue
            try:
                self._play(job, parsed["owner"], parsed["kind"])
            except (BotoCoreError, ClientError):
                self.failed_writes += 1
                continue
            self._played.add(name)
            self._exiting.update(running[name])
        self._end_exiting_pods()

    def _end_exiting_pods(self) -> None:
        """A pod exits 0 once it has written, freeing its node's GPUs for the next."""
        for pod in sorted(self._exiting):
            ended = end_pod(self.cluster, self.namespace, pod, 0)
            if ended.returncode == 0 or "NotFound" in ended.stderr:
                self._exiting.discard(pod)

    def lose(self, job_name: str) -> None:
        """The Job's pod is gone with its node: it never writes."""
        self._played.add(job_name)

    def seconds_to_write(self, job_name: str) -> float | None:
        """How long until the player writes for this Job; None once written or unseen."""
        if job_name in self._played or job_name not in self._due:
            return None
        return self._due[job_name] - time.monotonic()

    def _duration(self, kind: str) -> float:
        low, high = {
            "audit": self.plan.audit_seconds,
            "train": self.plan.train_seconds,
            "eval": self.plan.eval_seconds,
        }[kind]
        return self._rng.uniform(low, high)

    def _play(self, job: dict[str, Any], owner: str, kind: str) -> None:
        if kind == "audit":
            report = {"verdict": "Passed", "findings": []}
            put_json(self.s3, f"{self.prefix}/out/{owner}/audit/report.json", report)
        elif kind == "train":
            _, sha256 = write_trained_adapter(self.s3, self.prefix, owner)
            self.written_adapters[owner] = sha256
        else:
            write_eval_results(self.s3, job, self.plan.rates(owner))


def running_jobs(cluster: ClusterInfo, namespace: str) -> dict[str, list[str]] | None:
    """Jobs with a pod Running now, each with those pods' names, or None while the API
    cannot say."""
    listed = cluster.kubectl("get", "pods", "-n", namespace, "-o", "json")
    if listed.returncode != 0:
        return None
    running: dict[str, list[str]] = {}
    for pod in json.loads(listed.stdout)["items"]:
        meta = pod["metadata"]
        if pod["status"].get("phase") == "Running" and not meta.get("deletionTimestamp"):
            job = meta.get("labels", {}).get("job-name", "")
            running.setdefault(job, []).append(meta["name"])
    return running


def phases(cluster: ClusterInfo, namespace: str) -> dict[str, str | None] | None:
    """Each FineTuneJob's and EvalGate's phase, or None while the API cannot say."""
    found: dict[str, str | None] = {}
    for kind in ("finetunejobs", "evalgates"):
        listed = cluster.kubectl("get", kind, "-n", namespace, "-o", "json")
        if listed.returncode != 0:
            return None
        for item in json.loads(listed.stdout)["items"]:
            found[item["metadata"]["name"]] = (item.get("status") or {}).get("phase")
    return found


def finished(cluster: ClusterInfo, namespace: str, expected: Expected) -> bool:
    now = phases(cluster, namespace)
    return now is not None and all(
        now.get(name) == phase for name, phase in {**expected.runs, **expected.gates}.items()
    )


def read_snapshot(
    cluster: ClusterInfo,
    s3: Any,
    namespace: str,
    prefix: str,
    plan: FleetPlan,
    player: Player,
    *,
    logs: dict[str, str],
    secrets: tuple[str, ...],
) -> Snapshot:
    objects = {
        kind: {
            item["metadata"]["name"]: item.get("status") or {}
            for item in _items(cluster, namespace, kind)
        }
        for kind in ("finetunejobs", "evalgates")
    }
    pointers: dict[str, dict[str, Any]] = {}
    served: dict[str, dict[str, str]] = {}
    for name in plan.gate_names():
        key = f"{plan.promotion_uri(prefix, name).removeprefix(f's3://{BUCKET}/')}/promotion.json"
        try:
            pointer = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        except ClientError:
            continue
        pointers[name] = pointer
        served[name] = _digests_under(s3, str((pointer.get("current") or {}).get("uri", "")))
    events = json.dumps(_items(cluster, namespace, "events"))
    texts = {
        **{f"FineTuneJob {n} status": json.dumps(s) for n, s in objects["finetunejobs"].items()},
        **{f"EvalGate {n} status": json.dumps(s) for n, s in objects["evalgates"].items()},
        "events": events,
        **{f"log {where}": text for where, text in logs.items()},
    }
    return Snapshot(
        runs=objects["finetunejobs"],
        gates=objects["evalgates"],
        gate_runs={name: plan.judged_run(name) for name in plan.gate_names()},
        jobs=[job["metadata"]["name"] for job in _items(cluster, namespace, "jobs")],
        written_adapters=dict(player.written_adapters),
        pointers=pointers,
        served=served,
        texts=texts,
        secrets=secrets,
    )


def _items(cluster: ClusterInfo, namespace: str, kind: str) -> list[dict[str, Any]]:
    listed = cluster.kubectl("get", kind, "-n", namespace, "-o", "json")
    if listed.returncode != 0:
        raise RuntimeError(f"listing {kind} in {namespace}: {listed.stderr.strip()}")
    return list(json.loads(listed.stdout)["items"])


def _digests_under(s3: Any, uri: str) -> dict[str, str]:
    """{file: sha256 of its bytes} of every object under an s3:// prefix."""
    if not uri.startswith(f"s3://{BUCKET}/"):
        return {}
    prefix = uri.removeprefix(f"s3://{BUCKET}/").rstrip("/") + "/"
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    return {
        o["Key"][len(prefix) :]: hashlib.sha256(
            s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
        ).hexdigest()
        for o in listed
    }
