"""What a real GPU cluster needs from the pods: /dev/shm, a cache volume with its
ephemeral storage, requests, SIGTERM through torchrun, disruptions that do not use up
retries, the operator's S3 defaults, and GPU placement of the evaluation."""

from __future__ import annotations

import json
import multiprocessing
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydantic
import pytest
import torch

from tunegate_operator.api.evalgate import EvalGateSpec
from tunegate_operator.api.finetunejob import FineTuneJobSpec
from tunegate_operator.builders import jobs
from tunegate_operator.builders.eval_job import Candidate, GateRef, eval_config, eval_job
from tunegate_operator.builders.quantities import GIB, quantity_value
from tunegate_operator.builders.trainer_config import RunRef, trainer_config
from tunegate_operator.decisions.finetunejob import (
    DISRUPTED_REASON,
    CreateTrainingJob,
    FineTuneJobObserved,
    decide_finetunejob,
)
from tunegate_operator.decisions.preflight import PreflightInputs, preflight
from tunegate_operator.decisions.vocabulary import POD_CREATION_FAILED, JobView
from tunegate_operator.settings import load_settings
from tunegate_trainer.evaluate import placement
from tunegate_trainer.modeling import fetch_once

RUN = RunRef(namespace="ml", name="run", uid="uid-1")
SETTINGS = load_settings({})
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _ftj(**overrides: Any) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(
        {
            "model": {"uri": "s3://models/base"},
            "dataset": {"train": "s3://data/t.jsonl"},
            "output": {"uri": "s3://out/run"},
            **overrides,
        }
    )


def _train_pod(spec: FineTuneJobSpec, *, model_bytes: int | None = None) -> dict[str, Any]:
    job = jobs.training_job(
        spec,
        run=RUN,
        attempt=1,
        settings=SETTINGS,
        active_deadline_seconds=None,
        suspend=False,
        model_bytes=model_bytes,
    )
    pod: dict[str, Any] = job["spec"]["template"]["spec"]
    return pod


def _volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["volumes"]}


def _mounts(pod: dict[str, Any]) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}


def test_dev_shm_is_memory_backed_and_sized_from_the_memory_request() -> None:
    pod = _train_pod(_ftj(resources={"gpusPerNode": 8, "memory": "64Gi"}))
    shm = _volumes(pod)[_mounts(pod)["/dev/shm"]]["emptyDir"]
    assert shm == {"medium": "Memory", "sizeLimit": "32768Mi"}
    asked = _train_pod(_ftj(resources={"memory": "64Gi", "sharedMemory": "8Gi"}))
    assert _volumes(asked)["dshm"]["emptyDir"]["sizeLimit"] == "8Gi"


def test_the_cache_is_a_volume_sized_from_the_model_and_requested_as_ephemeral_storage() -> None:
    model = 15 * GIB
    lora = _train_pod(_ftj(method="lora"), model_bytes=model)
    full = _train_pod(_ftj(method="full"), model_bytes=model)
    sizes = {}
    for name, pod in (("lora", lora), ("full", full)):
        container = pod["containers"][0]
        cache = _volumes(pod)[_mounts(pod)["/cache"]]["emptyDir"]["sizeLimit"]
        assert container["resources"]["requests"]["ephemeral-storage"] == cache
        assert {"name": "TUNEGATE_CACHE", "value": "/cache"} in container["env"]
        sizes[name] = quantity_value(cache)
    # The base model fits; full fine-tuning also keeps optimizer-state checkpoints.
    assert model < sizes["lora"] < 2 * model < 10 * model < sizes["full"]


def test_a_claim_replaces_the_emptydir_and_an_explicit_size_wins() -> None:
    pvc = _train_pod(_ftj(resources={"cache": {"claimName": "models"}}), model_bytes=GIB)
    assert _volumes(pvc)["cache"] == {
        "name": "cache",
        "persistentVolumeClaim": {"claimName": "models"},
    }
    assert "ephemeral-storage" not in pvc["containers"][0]["resources"]["requests"]
    sized = _train_pod(_ftj(resources={"cache": {"sizeLimit": "500Gi"}}), model_bytes=GIB)
    assert sized["containers"][0]["resources"]["requests"]["ephemeral-storage"] == "500Gi"


@pytest.mark.parametrize("bad", ["two", "4GB", "-1", "1.5 Gi", ""])
def test_resource_quantities_are_validated(bad: str) -> None:
    with pytest.raises(pydantic.ValidationError, match="cpu"):
        _ftj(resources={"cpu": bad})


def test_empty_cpu_and_memory_still_request_per_process_and_cap_torch_threads() -> None:
    container = _train_pod(_ftj(resources={"gpusPerNode": 4}))["containers"][0]
    assert container["resources"]["requests"]["cpu"] == "4"
    assert quantity_value(container["resources"]["requests"]["memory"]) == 16 * GIB
    assert "memory" not in container["resources"]["limits"]  # no limit unless asked
    explicit = _train_pod(_ftj(resources={"gpusPerNode": 4, "cpu": "32"}))["containers"][0]
    assert {"name": "OMP_NUM_THREADS", "value": "8"} in explicit["env"]


def test_torchrun_gives_workers_most_of_the_grace_period_after_sigterm() -> None:
    pod = _train_pod(_ftj(resources={"gpusPerNode": 2}))
    flag = next(a for a in pod["containers"][0]["command"] if a.startswith("--shutdown-timeout"))
    timeout = int(flag.split("=")[1])
    # torchrun's own default (30 s) would SIGKILL a checkpoint in progress.
    assert 30 < timeout < pod["terminationGracePeriodSeconds"]


def test_training_jobs_fail_disrupted_pods_with_a_reason_the_operator_recognises() -> None:
    job = jobs.training_job(
        _ftj(),
        run=RUN,
        attempt=1,
        settings=SETTINGS,
        active_deadline_seconds=None,
        suspend=False,
    )
    rules = job["spec"]["podFailurePolicy"]["rules"]
    # The Job controller names the reason PodFailurePolicy only when a FailJob rule
    # matched, so the DisruptionTarget rule must be the only one.
    assert [r["action"] for r in rules] == ["FailJob"]
    assert rules[0]["onPodConditions"] == [{"type": "DisruptionTarget"}]


def _observed(train_jobs: dict[int, JobView]) -> FineTuneJobObserved:
    return FineTuneJobObserved(
        now=NOW,
        generation=1,
        status={
            "phase": "Training",
            "startTime": (NOW - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "audit": {"verdict": "Passed"},
        },
        train_jobs=train_jobs,
    )


def _failed(name: str, reason: str) -> JobView:
    return JobView(
        name=name,
        failed=1,
        finished="Failed",
        reason=reason,
        message="pod run-train-x-0 has condition DisruptionTarget",
        completion_time=NOW - timedelta(hours=1),
    )


def test_disrupted_attempts_restart_at_once_and_do_not_use_up_the_backoff_limit() -> None:
    spec = _ftj(runPolicy={"backoffLimit": 0}, audit={"mode": "off"})
    disrupted = {n: _failed(f"run-train-{n}", DISRUPTED_REASON) for n in (1, 2, 3)}
    decision = decide_finetunejob(spec, _observed(disrupted))
    assert decision.phase == "Training"
    assert decision.actions == (CreateTrainingJob(4, None, suspend=False),)
    assert decision.events[0].reason == "AttemptDisrupted"
    # One real failure still ends a run with backoffLimit 0.
    failed = {**disrupted, 4: _failed("run-train-4", "BackoffLimitExceeded")}
    assert decide_finetunejob(spec, _observed(failed)).phase == "Failed"


def test_the_operators_s3_region_applies_when_a_resource_names_none() -> None:
    settings = load_settings({"TUNEGATE_S3_REGION": "eu-west-3"})
    rendered = trainer_config(_ftj(), run=RUN, attempt=1, settings=settings)
    assert rendered.storage.region == "eu-west-3"
    own = _ftj(storage={"region": "ap-south-1"})
    assert trainer_config(own, run=RUN, attempt=1, settings=settings).storage.region == (
        "ap-south-1"
    )
    gate = _gate()
    candidate = Candidate("s3://out/run/adapter", "s3://models/base", None, "test")
    ref = GateRef("ml", "gate", "uid-2", 1)
    config = eval_config(gate, gate=ref, candidate=candidate, settings=settings)
    assert config.storage.region == "eu-west-3"


def test_the_progress_interval_setting_reaches_the_trainer() -> None:
    settings = load_settings({"TUNEGATE_PROGRESS_INTERVAL_SECONDS": "42"})
    rendered = trainer_config(_ftj(), run=RUN, attempt=1, settings=settings)
    assert rendered.progress_interval_seconds == 42.0


def _gate(**resources: Any) -> EvalGateSpec:
    return EvalGateSpec.model_validate(
        {
            "candidate": {"fineTuneJobRef": {"name": "run"}},
            "suites": [
                {
                    "name": "t",
                    "role": "target",
                    "dataset": "s3://data/t.jsonl",
                    "metric": "exactMatch",
                    "minImprovement": 0.01,
                }
            ],
            "resources": resources,
        }
    )


def test_the_eval_pod_is_not_best_effort_and_gets_shm_and_cache() -> None:
    candidate = Candidate("s3://out/run/adapter", "s3://models/base", None, "test")
    job = eval_job(
        _gate(gpus=1, memory="30Gi"),
        gate=GateRef("ml", "gate", "uid-2", 1),
        candidate=candidate,
        settings=SETTINGS,
        model_bytes=4 * GIB,
    )
    pod = job["spec"]["template"]["spec"]
    resources = pod["containers"][0]["resources"]
    assert resources["requests"]["cpu"] and resources["requests"]["memory"] == "30Gi"
    assert resources["limits"] == {"memory": "30Gi", "nvidia.com/gpu": "1"}
    assert quantity_value(resources["requests"]["ephemeral-storage"]) > 4 * GIB
    assert _volumes(pod)["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "15360Mi"}


def test_evaluation_runs_on_the_gpu_in_a_precision_the_device_has() -> None:
    assert placement("bf16", cuda=True, bf16_supported=True)[:2] == ("cuda", torch.bfloat16)
    device, dtype, warning = placement("bf16", cuda=True, bf16_supported=False)
    assert (device, dtype) == ("cuda", torch.float16) and warning
    device, dtype, warning = placement("bf16", cuda=False, bf16_supported=False)
    assert (device, dtype) == ("cpu", torch.float32) and "no GPU" in str(warning)


def _fetch(target: str, log: str) -> None:
    def download(path: Path) -> None:
        with open(log, "a") as handle:
            handle.write("download\n")
        time.sleep(0.3)  # long enough that the other ranks arrive while it runs
        path.mkdir(parents=True, exist_ok=True)
        (path / "weights").write_text("w")

    fetch_once(Path(target), download, source="s3://models/base")


def test_local_ranks_download_once_and_wait_for_the_copy(tmp_path: Path) -> None:
    target, log = tmp_path / "models" / "base", tmp_path / "downloads.log"
    context = multiprocessing.get_context("spawn")
    ranks = [context.Process(target=_fetch, args=(str(target), str(log))) for _ in range(4)]
    for rank in ranks:
        rank.start()
    for rank in ranks:
        rank.join(60)
        assert rank.exitcode == 0
    assert log.read_text().splitlines() == ["download"]
    assert (target / "weights").read_text() == "w"


def test_a_refused_pod_becomes_a_condition_quoting_the_api_server() -> None:
    refusal = 'pods "run-audit-x" is forbidden: exceeded quota: no-pods, limited: pods=0'
    spec = _ftj()
    auditing = FineTuneJobObserved(
        now=NOW,
        generation=1,
        status={"phase": "Auditing"},
        audit_job=JobView(name="run-audit", create_error=refusal),
    )
    decision = decide_finetunejob(spec, auditing)
    audited = next(c for c in decision.conditions if c.type == "Audited")
    assert (audited.reason, decision.phase) == (POD_CREATION_FAILED, "Auditing")
    assert refusal in audited.message and "run-audit" in audited.message
    assert [e.reason for e in decision.events] == [POD_CREATION_FAILED]

    training = _observed({1: JobView(name="run-train-1", create_error=refusal)})
    decision = decide_finetunejob(_ftj(audit={"mode": "off"}), training)
    trained = next(c for c in decision.conditions if c.type == "Training")
    assert (trained.status, trained.reason) == ("False", POD_CREATION_FAILED)
    assert refusal in trained.message and not decision.actions


def test_the_pod_template_adds_what_the_cluster_needs_with_the_resource_on_top() -> None:
    platform = {
        "imagePullSecrets": ["registry"],
        "env": [
            {"name": "HTTPS_PROXY", "value": "http://proxy:3128"},
            {"name": "NCCL_DEBUG", "value": "WARN"},
        ],
    }
    settings = load_settings({"TUNEGATE_POD_TEMPLATE": json.dumps(platform)})
    own = {
        "env": [
            {"name": "NCCL_DEBUG", "value": "INFO"},
            {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}},
            {"name": "OMP_NUM_THREADS", "value": "6"},
        ],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "datasets"}}],
        "volumeMounts": [{"name": "data", "mountPath": "/data", "readOnly": True}],
        "extraResources": {"vpc.amazonaws.com/efa": "4"},
    }
    spec = _ftj(podTemplate=own, resources={"gpusPerNode": 8})
    train = jobs.training_job(
        spec, run=RUN, attempt=1, settings=settings, active_deadline_seconds=None, suspend=False
    )["spec"]["template"]["spec"]
    container = train["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert train["imagePullSecrets"] == [{"name": "registry"}]
    assert env["HTTPS_PROXY"]["value"] == "http://proxy:3128"
    assert env["NCCL_DEBUG"]["value"] == "INFO"  # the resource's own wins
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "hf",
        "key": "token",
        "optional": False,
    }
    assert [e["name"] for e in container["env"]].count("OMP_NUM_THREADS") == 1
    assert env["OMP_NUM_THREADS"]["value"] == "6"
    assert {"name": "data", "mountPath": "/data", "readOnly": True} in container["volumeMounts"]
    assert {v["name"] for v in train["volumes"]} == {"dshm", "cache", "data"}
    for side in ("requests", "limits"):
        assert container["resources"][side]["vpc.amazonaws.com/efa"] == "4"
    audit = jobs.audit_job(spec, run=RUN, settings=settings)["spec"]["template"]["spec"]
    assert audit["imagePullSecrets"] == [{"name": "registry"}]
    assert "vpc.amazonaws.com/efa" not in json.dumps(audit)  # no devices on CPU nodes


def test_a_malformed_platform_pod_template_names_the_setting() -> None:
    with pytest.raises(ValueError, match="TUNEGATE_POD_TEMPLATE"):
        load_settings({"TUNEGATE_POD_TEMPLATE": '{"env": [{"value": "x"}]}'})


def test_the_audit_runs_in_its_own_slim_image_when_one_is_set() -> None:
    slim = load_settings({"TUNEGATE_AUDIT_IMAGE": "registry/tunegate/audit:1"})
    spec = _ftj(image="registry/custom-trainer:2")
    audit = jobs.audit_job(spec, run=RUN, settings=slim)["spec"]["template"]["spec"]
    assert audit["containers"][0]["image"] == "registry/tunegate/audit:1"
    fallback = jobs.audit_job(spec, run=RUN, settings=SETTINGS)["spec"]["template"]["spec"]
    assert fallback["containers"][0]["image"] == "registry/custom-trainer:2"


def test_an_hf_models_token_and_revision_reach_training_and_eval_pods_by_reference() -> None:
    model = {"uri": "hf://meta-llama/Llama-3.2-1B", "revision": "4e20de3", "tokenSecret": "hf"}
    spec = _ftj(model=model)
    container = _train_pod(spec)["containers"][0]
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"] == {
        "name": "HF_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hf", "key": "HF_TOKEN"}},
    }
    rendered = trainer_config(spec, run=RUN, attempt=1, settings=SETTINGS)
    assert (rendered.model.uri, rendered.model.revision) == (model["uri"], "4e20de3")
    candidate = Candidate(
        "s3://out/run/adapter",
        model["uri"],
        None,
        "FineTuneJob run",
        base_model_revision="4e20de3",
        base_model_token_secret="hf",
    )
    job = eval_job(
        _gate(), gate=GateRef("ml", "gate", "uid-2", 1), candidate=candidate, settings=SETTINGS
    )
    eval_env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert eval_env["HF_TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "hf"
    config = json.loads(eval_env["TUNEGATE_EVAL_CONFIG"]["value"])
    assert config["base_model"] == {"uri": model["uri"], "revision": "4e20de3"}


def test_a_missing_hub_token_secret_holds_the_run_pending_naming_the_field() -> None:
    spec = _ftj(model={"uri": "hf://org/gated", "tokenSecret": "hf"})
    missing = _token_problems(spec, PreflightInputs(secret_name=None, secret_keys=None))
    assert [(p.reason, p.waiting) for p in missing] == [("SecretNotFound", True)]
    wrong_key = PreflightInputs(
        secret_name=None, secret_keys=None, token_secret_keys=frozenset({"token"})
    )
    (problem,) = _token_problems(spec, wrong_key)
    assert problem.reason == "SecretKeyMissing" and "HF_TOKEN" in problem.message
    ok = PreflightInputs(
        secret_name=None, secret_keys=None, token_secret_keys=frozenset({"HF_TOKEN"})
    )
    assert _token_problems(spec, ok) == []


def _token_problems(spec: FineTuneJobSpec, inputs: PreflightInputs) -> list[Any]:
    # No nodes are given, so placement problems are expected too; only the token's count.
    return [p for p in preflight(spec, inputs).problems if p.field == "spec.model.tokenSecret"]
