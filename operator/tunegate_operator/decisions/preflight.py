"""Checks made before anything is scheduled (pure): references, placement, memory.

Each problem names the spec field and the cause. `waiting` problems may resolve by
themselves (a Secret created later, a pool scaled up from zero); the others are
final for this spec.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunegate_operator.api.common import GPU_RESOURCE
from tunegate_operator.api.finetunejob import FineTuneJobSpec
from tunegate_operator.planner.memory import GIB, Plan, RunShape, plan
from tunegate_operator.planner.shapes import ConfigError, shape_from_hf_config

GPU_MEMORY_LABEL = "nvidia.com/gpu.memory"
REQUIRED_SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")


@dataclass(frozen=True)
class Problem:
    field: str
    reason: str
    message: str
    waiting: bool


@dataclass(frozen=True)
class NodeView:
    name: str
    labels: Mapping[str, str]
    gpus: int
    taints: Sequence[Mapping[str, Any]]


@dataclass(frozen=True)
class PreflightInputs:
    """What the I/O layer looked up; None where a check does not apply."""

    secret_name: str | None
    secret_keys: frozenset[str] | None  # None: the Secret does not exist
    token_secret_keys: frozenset[str] | None = None  # spec.model.tokenSecret's, likewise
    missing_objects: Mapping[str, str] = field(default_factory=dict)  # spec field -> URI
    model_config_uri: str | None = None  # the model's config.json; None: not on S3
    model_config: Mapping[str, Any] | None = None  # None: it does not exist
    model_config_error: str | None = None  # it exists but is not a JSON object
    nodes: Sequence[NodeView] = ()


@dataclass(frozen=True)
class PreflightResult:
    problems: tuple[Problem, ...]
    plan: Plan | None
    pool: str

    @property
    def blocking(self) -> Problem | None:
        """The first final problem, else the first waiting one."""
        final = [p for p in self.problems if not p.waiting]
        ordered = final or list(self.problems)
        return ordered[0] if ordered else None


def _tolerates(taints: Sequence[Mapping[str, Any]], spec: FineTuneJobSpec) -> bool:
    tolerations = [t.model_dump(exclude_none=True) for t in spec.resources.tolerations]
    if spec.resources.gpus_per_node:
        tolerations.append({"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"})
    for taint in taints:
        if taint.get("effect") not in ("NoSchedule", "NoExecute"):
            continue
        if not any(
            (t.get("key") in (None, taint.get("key")))
            and (t.get("operator") == "Exists" or t.get("value") == taint.get("value"))
            and t.get("effect") in (None, taint.get("effect"))
            for t in tolerations
        ):
            return False
    return True


def _pool_name(spec: FineTuneJobSpec) -> str:
    selector = spec.resources.node_selector
    return ",".join(f"{k}={v}" for k, v in sorted(selector.items())) or "any node"


def run_shape(spec: FineTuneJobSpec) -> RunShape:
    lora_targets = tuple(spec.lora.target_modules) if spec.lora else ("q_proj", "v_proj")
    return RunShape(
        method=spec.method,
        precision=spec.training.precision,
        lora_rank=spec.lora.rank if spec.lora else 16,
        lora_targets=lora_targets,
        seq_length=spec.training.max_seq_length,
        micro_batch=spec.training.batch_size,
        gradient_checkpointing=spec.training.gradient_checkpointing,
        zero_stage=spec.deepspeed.zero_stage if spec.deepspeed else 0,
        offload_optimizer=bool(spec.deepspeed and spec.deepspeed.offload_optimizer),
        gpus=spec.resources.nodes * max(spec.resources.gpus_per_node, 1),
    )


def _secret_problems(
    field_name: str, name: str, keys: frozenset[str] | None, required: Sequence[str]
) -> list[Problem]:
    """A referenced Secret that is missing, or lacks a key: both can be fixed later."""
    if keys is None:
        return [
            Problem(
                field_name,
                "SecretNotFound",
                f"Secret {name!r} ({field_name}) does not exist in this namespace; create it "
                f"with key(s) {', '.join(required)}",
                waiting=True,
            )
        ]
    missing = [k for k in required if k not in keys]
    if not missing:
        return []
    return [
        Problem(
            field_name,
            "SecretKeyMissing",
            f"Secret {name!r} ({field_name}) lacks key(s) {', '.join(missing)}",
            waiting=True,
        )
    ]


def preflight(spec: FineTuneJobSpec, inputs: PreflightInputs) -> PreflightResult:
    pool = _pool_name(spec)
    problems = _reference_problems(spec, inputs)
    matching = [
        n
        for n in inputs.nodes
        if all(n.labels.get(k) == v for k, v in spec.resources.node_selector.items())
        and _tolerates(n.taints, spec)
    ]
    problems += _placement_problems(spec, matching, pool)
    memory_plan: Plan | None = None
    model_problem = _model_config_problem(inputs)
    if model_problem:
        problems.append(model_problem)
    elif inputs.model_config is not None and spec.resources.gpus_per_node and matching:
        memory_plan, problem = _memory_plan(spec, inputs.model_config, matching, pool)
        if problem:
            problems.append(problem)
    return PreflightResult(tuple(problems), memory_plan, pool)


def _model_config_problem(inputs: PreflightInputs) -> Problem | None:
    """Both wait: the checkpoint may still be uploading, or be uploaded again."""
    if inputs.model_config_uri is None:
        return None
    if inputs.model_config_error:
        message = f"spec.model.uri: {inputs.model_config_error}"
        return Problem("spec.model.uri", "ModelConfigInvalid", message, waiting=True)
    if inputs.model_config is None:
        message = (
            f"spec.model.uri: {inputs.model_config_uri} does not exist; the model must be "
            "a Hugging Face checkpoint directory"
        )
        return Problem("spec.model.uri", "ModelNotFound", message, waiting=True)
    return None


def _reference_problems(spec: FineTuneJobSpec, inputs: PreflightInputs) -> list[Problem]:
    """Secrets and S3 objects the spec names."""
    problems: list[Problem] = []
    if inputs.secret_name:
        problems += _secret_problems(
            "spec.storage.credentialsSecret",
            inputs.secret_name,
            inputs.secret_keys,
            REQUIRED_SECRET_KEYS,
        )
    if spec.model.token_secret:
        problems += _secret_problems(
            "spec.model.tokenSecret",
            spec.model.token_secret,
            inputs.token_secret_keys,
            ("HF_TOKEN",),
        )
    for field_name, uri in sorted(inputs.missing_objects.items()):
        message = f"{field_name}: {uri} does not exist in S3"
        problems.append(Problem(field_name, "ObjectNotFound", message, waiting=True))
    return problems


def _placement_problems(
    spec: FineTuneJobSpec, matching: Sequence[NodeView], pool: str
) -> list[Problem]:
    """Whether the pool the spec selects can ever hold the run's pods."""
    wanted = spec.resources.gpus_per_node
    if not matching:
        message = (
            f"no node matches spec.resources.nodeSelector ({pool}) and tolerates its taints; "
            "waiting for the pool to have nodes"
        )
        return [Problem("spec.resources.nodeSelector", "NoMatchingNodes", message, waiting=True)]
    if wanted and max(n.gpus for n in matching) < wanted:
        message = (
            f"spec.resources.gpusPerNode is {wanted} but nodes of {pool} have at most "
            f"{max(n.gpus for n in matching)} {GPU_RESOURCE}"
        )
        return [Problem("spec.resources.gpusPerNode", "InsufficientGPUs", message, waiting=False)]
    if wanted and (slots := sum(n.gpus // wanted for n in matching)) < spec.resources.nodes:
        # Each of the run's pods needs gpusPerNode GPUs on one node; several pods may
        # share a node that has room for them (the scheduler packs them as it can).
        message = (
            f"spec.resources.nodes is {spec.resources.nodes} but {pool} has room for only "
            f"{slots} pod(s) of {wanted} {GPU_RESOURCE}; waiting for the pool to grow"
        )
        return [Problem("spec.resources.nodes", "InsufficientNodes", message, waiting=True)]
    return []


def _memory_plan(
    spec: FineTuneJobSpec, config: Mapping[str, Any], nodes: Sequence[NodeView], pool: str
) -> tuple[Plan | None, Problem | None]:
    try:
        shape = shape_from_hf_config(config)
        memories = [int(n.labels[GPU_MEMORY_LABEL]) for n in nodes if GPU_MEMORY_LABEL in n.labels]
        if not memories:
            return None, None  # pool does not publish GPU_RESOURCE memory: nothing to compare with
        gpu_bytes = min(memories) * 1024 * 1024
        max_gpus = sum(n.gpus for n in nodes)
        result = plan(
            shape, run_shape(spec), gpu_memory_bytes=gpu_bytes, pool=pool, max_gpus=max_gpus
        )
    except ConfigError as exc:
        return None, Problem(
            "spec.lora.targetModules" if "targetModules" in str(exc) else "spec.model.uri",
            "ModelConfigInvalid",
            str(exc),
            waiting=False,
        )
    if result.fits:
        return result, None
    return result, Problem("spec.resources", "InsufficientGPUMemory", result.message, waiting=False)


def estimate_status(result: PreflightResult) -> dict[str, Any] | None:
    if result.plan is None:
        return None
    return {
        "gpuMemoryGiB": round(result.plan.estimate.total_bytes / GIB, 2),
        "availableGiB": round(result.plan.available_bytes / GIB, 2),
        "fits": result.plan.fits,
        "suggestion": None if result.plan.fits else result.plan.message,
    }
