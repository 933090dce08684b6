"""The eval Job of an EvalGate and the eval config it carries (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tunegate_contract.base import env_value
from tunegate_contract.eval_config import EVAL_CONFIG_ENV, EvalConfig
from tunegate_contract.layout import EvalLayout, RunLayout
from tunegate_operator.api.common import GPU_RESOURCE
from tunegate_operator.api.evalgate import EvalGateSpec
from tunegate_operator.api.names import GATE_LABEL, GENERATION_LABEL, MANAGED_LABELS
from tunegate_operator.builders.job_envelope import (
    Owner,
    credential_env,
    hub_token_env,
    job_manifest,
    placement_tolerations,
    threads_env,
    with_volumes,
    worker_container,
    worker_pod_spec,
)
from tunegate_operator.builders.pod_template import apply_pod_template, merge_templates
from tunegate_operator.builders.pod_volumes import (
    cache_size_needed,
)
from tunegate_operator.builders.quantities import quantity_value
from tunegate_operator.settings import Settings


@dataclass(frozen=True)
class GateRef:
    namespace: str
    name: str
    uid: str
    generation: int
    round: int = 0  # 0: the gate's own evaluation; n: the n-th scheduled re-evaluation

    @property
    def suffix(self) -> str:
        return f"{self.generation}" if not self.round else f"{self.generation}-r{self.round}"


@dataclass(frozen=True)
class Candidate:
    """What is judged, resolved from a FineTuneJob or from the spec."""

    adapter_uri: str
    base_model_uri: str
    sha256: str | None  # from the FineTuneJob's manifest, when there is one
    source: str  # "FineTuneJob <name>" or the adapter URI
    results_root: str | None = None  # re-evaluations keep results beside the original's
    base_model_revision: str | None = None  # hf:// models
    base_model_token_secret: str | None = None  # Secret with HF_TOKEN, hf:// models

    @property
    def identity(self) -> str:
        """What a verdict is about: the adapter's URI and, when known, its digest."""
        return f"{self.adapter_uri}@sha256:{self.sha256}" if self.sha256 else self.adapter_uri

    def evals_root(self) -> str:
        """Results live next to the adapter's run: <run>/evals/."""
        return self.results_root or RunLayout.of_adapter(self.adapter_uri).evals


def eval_layout(candidate: Candidate, gate: GateRef) -> EvalLayout:
    return EvalLayout.of(candidate.evals_root(), gate.name, gate.suffix)


def results_uri(candidate: Candidate, gate: GateRef) -> str:
    return eval_layout(candidate, gate).results


def eval_job_name(gate: GateRef) -> str:
    return f"{gate.name}-eval-{gate.suffix}"


def eval_config(
    spec: EvalGateSpec, *, gate: GateRef, candidate: Candidate, settings: Settings
) -> EvalConfig:
    return EvalConfig.model_validate(
        {
            "version": 1,
            "gate": {
                "namespace": gate.namespace,
                "name": gate.name,
                "uid": gate.uid,
                "generation": gate.generation,
            },
            "base_model": {
                "uri": candidate.base_model_uri,
                "revision": candidate.base_model_revision,
            },
            "adapter": candidate.adapter_uri,
            "suites": [
                {
                    "name": s.name,
                    "role": s.role,
                    "metric": s.metric,
                    "dataset": s.dataset,
                    "max_items": s.max_items,
                    "max_new_tokens": s.max_new_tokens,
                    "group_by": s.group_by,
                }
                for s in spec.suites
            ],
            "results": results_uri(candidate, gate),
            "storage": settings.storage_document(spec.storage),
            "precision": "fp32" if spec.resources.gpus == 0 else "bf16",
        }
    )


def _eval_env(
    spec: EvalGateSpec, *, gate: GateRef, candidate: Candidate, settings: Settings
) -> list[dict[str, Any]]:
    config = eval_config(spec, gate=gate, candidate=candidate, settings=settings)
    secret = spec.storage.credentials_secret or settings.credentials_secret
    return [
        {"name": EVAL_CONFIG_ENV, "value": env_value(config)},
        *credential_env(secret),
        threads_env(quantity_value(spec.resources.cpu)),
        *hub_token_env(candidate.base_model_token_secret),
    ]


def eval_job(
    spec: EvalGateSpec,
    *,
    gate: GateRef,
    candidate: Candidate,
    settings: Settings,
    model_bytes: int | None = None,
) -> dict[str, Any]:
    """model_bytes (the base model's size, when known) sizes the cache."""
    labels = {**MANAGED_LABELS, GATE_LABEL: gate.name, GENERATION_LABEL: str(gate.generation)}
    # Requests, so the pod is not BestEffort (first to be evicted); memory request =
    # limit, as for training.
    resources: dict[str, Any] = {
        "requests": {"cpu": spec.resources.cpu, "memory": spec.resources.memory},
        "limits": {"memory": spec.resources.memory},
    }
    if spec.resources.gpus:
        resources["limits"][GPU_RESOURCE] = str(spec.resources.gpus)
    container = worker_container(
        "eval",
        spec.image or settings.trainer_image,
        [settings.trainer_python, "-m", "tunegate_trainer", "eval"],
        _eval_env(spec, gate=gate, candidate=candidate, settings=settings),
        resources,
    )
    pod_spec = worker_pod_spec(
        container,
        node_selector=spec.resources.node_selector,
        tolerations=placement_tolerations(spec.resources.tolerations, spec.resources.gpus),
        settings=settings,
        priority_class=spec.resources.priority_class_name,
    )
    with_volumes(
        container,
        pod_spec,
        cache=spec.resources.cache,
        shared_memory=spec.resources.shared_memory,
        memory=spec.resources.memory,
        cache_bytes=cache_size_needed(model_bytes, None),
    )
    template = merge_templates(settings.pod_template, spec.pod_template)
    apply_pod_template(pod_spec, template, extra_resources=True)
    return job_manifest(
        name=eval_job_name(gate),
        owner=Owner("EvalGate", gate.namespace, gate.name, gate.uid),
        labels=labels,
        pod_spec=pod_spec,
        job_spec={"backoffLimit": 1},
        pod_annotations=settings.pod_annotations,
    )
