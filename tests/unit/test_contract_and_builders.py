"""Operator <-> trainer contract, both ways, and the manifests the operator builds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tunegate_contract.base import ConfigError
from tunegate_contract.trainer_config import (
    TRAINER_CONFIG_ENV,
    TrainerConfig,
    load_trainer_config,
)
from tunegate_operator.api.finetunejob import FineTuneJobSpec
from tunegate_operator.builders import jobs
from tunegate_operator.builders.trainer_config import RunRef, trainer_config
from tunegate_operator.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
RUN = RunRef("ml", "run", "uid-1")
SETTINGS = Settings(s3_endpoint="http://minio:9000", credentials_secret="s3")
FTJ_EXAMPLES = [
    document["spec"]
    for path in sorted((ROOT / "examples").glob("*.yaml"))
    for document in yaml.safe_load_all(path.read_text())
    if document["kind"] == "FineTuneJob"
]


def _config_in(job: dict[str, Any]) -> dict[str, str]:
    """The env var the trainer container reads its config from, as the Job carries it."""
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e["value"] for e in container["env"] if e["name"] == TRAINER_CONFIG_ENV}


@pytest.mark.parametrize("raw", FTJ_EXAMPLES, ids=lambda s: s["method"] + "-" + s["output"]["uri"])
def test_the_trainer_loads_the_config_every_example_job_carries(raw: dict[str, Any]) -> None:
    spec = FineTuneJobSpec.model_validate(raw)
    job = jobs.training_job(
        spec, run=RUN, attempt=2, settings=SETTINGS, active_deadline_seconds=None, suspend=False
    )
    config = load_trainer_config(_config_in(job))
    assert config.run.attempt == 2 and config.method == spec.method
    assert config.data.train == spec.dataset.train
    assert config.training.learning_rate == spec.training.learning_rate
    assert config.artifacts.manifest == spec.output.uri.rstrip("/") + "/manifest.json"
    assert (config.lora is None) == (spec.method == "full")


def test_the_trainer_rejects_unknown_or_missing_fields_naming_them() -> None:
    spec = FineTuneJobSpec.model_validate(FTJ_EXAMPLES[0])
    job = jobs.training_job(
        spec, run=RUN, attempt=1, settings=SETTINGS, active_deadline_seconds=None, suspend=False
    )
    rendered = json.loads(_config_in(job)[TRAINER_CONFIG_ENV])
    rendered["training"]["learning_rte"] = 0.1
    with pytest.raises(ConfigError, match=r"training\.learning_rte"):
        load_trainer_config({TRAINER_CONFIG_ENV: json.dumps(rendered)})
    del rendered["training"]["learning_rte"], rendered["artifacts"]
    with pytest.raises(ConfigError, match="artifacts: Field required"):
        load_trainer_config({TRAINER_CONFIG_ENV: json.dumps(rendered)})
    with pytest.raises(ConfigError, match=f"{TRAINER_CONFIG_ENV} is not set"):
        load_trainer_config({})


def test_every_trainer_field_is_rendered_not_left_to_its_default() -> None:
    spec = FineTuneJobSpec.model_validate(FTJ_EXAMPLES[0])
    config = trainer_config(spec, run=RUN, attempt=1, settings=SETTINGS)
    assert config.model_fields_set == set(TrainerConfig.model_fields)
    for section in (config.data, config.training, config.audit, config.artifacts):
        assert section.model_fields_set == set(type(section).model_fields), section


def _spec(**resources: Any) -> FineTuneJobSpec:
    return FineTuneJobSpec.model_validate(
        {
            "model": {"uri": "s3://models/base"},
            "dataset": {"train": "s3://data/t.jsonl"},
            "output": {"uri": "s3://out/run"},
            "resources": resources,
            "storage": {"credentialsSecret": "creds"},
        }
    )


def test_single_node_job_requests_gpus_by_reference_only_credentials() -> None:
    job = jobs.training_job(
        _spec(gpusPerNode=4, nodeSelector={"pool": "a"}),
        run=RUN,
        attempt=1,
        settings=SETTINGS,
        active_deadline_seconds=100,
        suspend=False,
    )
    pod = job["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:4] == [
        "python",
        "-m",
        "torch.distributed.run",
        "--nnodes=$(NNODES)",
    ]
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "4"}
    assert job["spec"]["backoffLimit"] == 0 and "completionMode" not in job["spec"]
    assert job["spec"]["activeDeadlineSeconds"] == 100
    env = {e["name"]: e for e in container["env"]}
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "creds"
    assert "value" not in env["AWS_SECRET_ACCESS_KEY"]
    assert job["metadata"]["ownerReferences"][0]["uid"] == "uid-1"


def test_one_process_runs_without_torchrun_and_audit_holds_no_gpu() -> None:
    settings = load_settings({"TUNEGATE_AUDIT_NODE_SELECTOR": '{"pool": "cpu"}'})
    job = jobs.training_job(
        _spec(gpusPerNode=1),
        run=RUN,
        attempt=1,
        settings=settings,
        active_deadline_seconds=None,
        suspend=False,
    )
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "python",
        "-m",
        "tunegate_trainer",
        "train",
    ]
    audit = jobs.audit_job(_spec(gpusPerNode=8), run=RUN, settings=settings)
    assert "nvidia.com/gpu" not in json.dumps(audit)
    assert audit["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "cpu"}


def test_multi_node_job_is_indexed_with_rendezvous_env() -> None:
    job = jobs.training_job(
        _spec(nodes=4, gpusPerNode=8),
        run=RUN,
        attempt=3,
        settings=SETTINGS,
        active_deadline_seconds=None,
        suspend=False,
    )
    assert job["metadata"]["name"] == "run-train-3"
    assert job["spec"]["completionMode"] == "Indexed"
    assert job["spec"]["completions"] == job["spec"]["parallelism"] == 4
    env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["MASTER_ADDR"]["value"] == "run-train-3-0.run-train.ml.svc"
    assert env["WORLD_SIZE"]["value"] == "32"
    service = jobs.headless_service(_spec(nodes=4, gpusPerNode=8), run=RUN, settings=SETTINGS)
    assert service["spec"]["clusterIP"] == "None"
    assert job["spec"]["template"]["spec"]["subdomain"] == service["metadata"]["name"]


def test_settings_reject_malformed_json_naming_the_variable() -> None:
    with pytest.raises(ValueError, match="TUNEGATE_AUDIT_NODE_SELECTOR must be JSON"):
        load_settings({"TUNEGATE_AUDIT_NODE_SELECTOR": "{pool: cpu}"})


def test_audit_resources_come_from_the_chart_setting() -> None:
    small = '{"requests": {"cpu": "250m", "memory": "1Gi"}}'
    audit = jobs.audit_job(
        _spec(), run=RUN, settings=load_settings({"TUNEGATE_AUDIT_RESOURCES": small})
    )
    container = audit["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "250m", "memory": "1Gi"}}
    default = jobs.audit_job(_spec(), run=RUN, settings=load_settings({}))
    assert default["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"] == {
        "cpu": "2",
        "memory": "4Gi",
    }


def test_a_memory_setting_is_the_training_pods_request_and_limit() -> None:
    job = jobs.training_job(
        _spec(gpusPerNode=1, memory="12Gi"),
        run=RUN,
        attempt=1,
        settings=SETTINGS,
        active_deadline_seconds=None,
        suspend=False,
    )
    resources = job["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources["requests"]["memory"] == resources["limits"]["memory"] == "12Gi"
    assert resources["limits"]["nvidia.com/gpu"] == "1"
