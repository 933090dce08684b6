"""EvalGate (`evg`): a paired, confidence-based comparison of base and candidate
that promotes the candidate only on a Pass."""

from __future__ import annotations

from typing import Any, Literal, cast

from pydantic import Field

from tunegate_contract.eval_config import Metric, Role
from tunegate_operator.api.common import (
    LIST_MAP_BY_TYPE,
    ApiModel,
    CacheSpec,
    Condition,
    Quantity,
    S3Uri,
    StorageSpec,
    Toleration,
    cel,
    validated,
)
from tunegate_operator.api.finetunejob import ModelSpec
from tunegate_operator.api.handoff import HandoffTarget
from tunegate_operator.api.pod_template import PodTemplate

Verdict = Literal["Pass", "Fail", "Inconclusive"]
Phase = Literal[
    "Pending",
    "WaitingForCandidate",
    "Evaluating",
    "AwaitingApproval",
    "Promoted",
    "Passed",
    "Held",
    "Rejected",
    "RolledBack",
    "Superseded",
    "Failed",
]
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"


class FineTuneJobRef(ApiModel):
    """A FineTuneJob in the same namespace."""

    name: str = Field(pattern=NAME_PATTERN, max_length=253)
    """Its name; the gate waits until it Succeeded."""


class CandidateSpec(ApiModel):
    """What is evaluated: a FineTuneJob's adapter, or an adapter URI with its base model."""

    model_config = validated(
        cel(
            "has(self.fineTuneJobRef) != has(self.adapterUri)",
            "set exactly one of fineTuneJobRef or adapterUri",
        ),
        cel(
            "!has(self.adapterUri) || has(self.baseModel)",
            "adapterUri needs baseModel",
            field_path=".baseModel",
        ),
        cel(
            "!has(self.fineTuneJobRef) || !has(self.baseModel)",
            "baseModel comes from the FineTuneJob; set it only with adapterUri",
            field_path=".baseModel",
        ),
    )

    fine_tune_job_ref: FineTuneJobRef | None = None
    """Evaluate this FineTuneJob's adapter against its base model."""
    adapter_uri: S3Uri | None = None
    """Evaluate an adapter already in S3 (needs baseModel)."""
    base_model: ModelSpec | None = None
    """Base model of adapterUri."""


_THRESHOLD_BY_ROLE = {
    "minImprovement": ["target"],
    "maxRegression": ["retention", "safety"],
    "maxKL": ["drift"],
}
_METRICS_BY_ROLE = {
    "target": ["multipleChoiceAccuracy", "exactMatch", "perplexity"],
    "retention": ["multipleChoiceAccuracy", "exactMatch", "perplexity"],
    "drift": ["kl"],
    "safety": ["refusal"],
}


def _suite_rules() -> list[dict[str, str]]:
    rules: list[dict[str, str]] = []
    for threshold, roles in _THRESHOLD_BY_ROLE.items():
        role_list = ", ".join(f"'{r}'" for r in roles)
        rules.append(
            cel(
                f"!(self.role in [{role_list}]) || has(self.{threshold})",
                f"a {' or '.join(roles)} suite needs {threshold}",
                field_path=f".{threshold}",
            )
        )
        rules.append(
            cel(
                f"!has(self.{threshold}) || self.role in [{role_list}]",
                f"{threshold} applies only to role {' or '.join(roles)}",
                field_path=f".{threshold}",
            )
        )
    for role, metrics in _METRICS_BY_ROLE.items():
        metric_list = ", ".join(f"'{m}'" for m in metrics)
        rules.append(
            cel(
                f"self.role != '{role}' || self.metric in [{metric_list}]",
                f"role {role} takes metric {' or '.join(metrics)}",
                field_path=".metric",
            )
        )
    rules.append(
        cel(
            "!has(self.maxItems) || self.maxItems >= self.minItems",
            "maxItems below minItems: every evaluation would be refused",
            field_path=".maxItems",
        )
    )
    return rules


class SuiteSpec(ApiModel):
    """One evaluation suite; its role decides which threshold it needs."""

    model_config = validated(*_suite_rules())

    name: str = Field(pattern=NAME_PATTERN, max_length=63)
    """Unique name within the gate."""
    role: Role
    """target: must improve by minImprovement; retention: general capability must not drop
    by more than maxRegression; drift: mean per-token KL(base || candidate) must stay under
    maxKL; safety: refusal on harmful prompts must not drop, and over-refusal on benign
    prompts must not rise, by more than maxRegression."""
    dataset: S3Uri
    """JSONL items of the suite."""
    metric: Metric
    """multipleChoiceAccuracy (log-likelihood), exactMatch (greedy generation), perplexity
    (lower is better), kl (drift) or refusal (safety)."""
    min_improvement: float | None = Field(default=None, ge=-1, le=1)
    """target: the delta's whole interval must be at least this (absolute, in metric units;
    for perplexity, a decrease)."""
    max_regression: float | None = Field(default=None, ge=0, le=1)
    """retention/safety: the largest tolerated drop (absolute)."""
    max_kl: float | None = Field(default=None, gt=0, alias="maxKL")
    """drift: the largest tolerated mean per-token KL(base || candidate), nats."""
    max_items: int | None = Field(default=None, ge=1)
    """Evaluate only the first N items (faster, wider intervals)."""
    min_items: int = Field(default=40, ge=1, le=1_000_000)
    """A suite with fewer scored items is refused (condition Evaluated=False naming it):
    too few items cannot stand for the task. 40 is the smallest size at which every
    interval held its error rate in the gate's simulation (perplexity and KL scores
    are skewed; below 40 the bootstrap's error grew to 3.4% and more)."""
    group_by: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", max_length=63)
    """Item key whose value names the item's cluster (e.g. its source document): items
    of one cluster are not independent, so the interval is cluster-robust."""
    max_new_tokens: int = Field(default=64, ge=1, le=4096)
    """Generation length for exactMatch and refusal."""


class PromotionSpec(ApiModel):
    """Where a passing adapter is promoted, and who decides."""

    mode: Literal["auto", "manual"] = "manual"
    """auto: promote on Pass; manual: wait for the annotation tunegate.dev/approve=true."""
    uri: S3Uri
    """S3 prefix of the promotion: each version is written once under versions/<sha12>/;
    promotion.json there names the one serving loads (current.uri)."""
    config_map: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=253)
    """ConfigMap (same namespace) updated with the served version's URI and digest."""
    adapter_name: str | None = Field(
        default=None, pattern=r"^[A-Za-z0-9]([-A-Za-z0-9._]*[A-Za-z0-9])?$", max_length=128
    )
    """The name serving knows the adapter by (${adapterName} in handoff); empty: the
    gate's name."""
    handoff: list[HandoffTarget] = Field(default=[], max_length=8)
    """Objects merge-patched after each pointer move (promotion and rollback), in order:
    a KServe LLMInferenceService, an AIBrix ModelAdapter, a Deployment's pod template."""


class ReevaluateSpec(ApiModel):
    """Re-run the gate on the promoted adapter on a schedule."""

    schedule: str = Field(pattern=r"^(@(hourly|daily|weekly|monthly)|(\S+\s+){4}\S+)$")
    """Cron schedule (5 fields) or @hourly/@daily/@weekly/@monthly."""
    rollback_on_fail: bool = False
    """Restore the previously promoted version when a re-evaluation Fails."""


class EvalResources(ApiModel):
    """Where the evaluation pod runs."""

    gpus: int = Field(default=1, ge=0, le=16)
    """nvidia.com/gpu for the eval pod; 0 evaluates on CPU."""
    node_selector: dict[str, str] = Field(default={})
    """Labels of the pool to run on."""
    tolerations: list[Toleration] = Field(default=[], max_length=32)
    """Extra tolerations."""
    priority_class_name: str | None = None
    """PriorityClass of the eval pod."""
    cpu: Quantity = "1"
    """CPU request of the eval pod."""
    memory: Quantity = "8Gi"
    """Memory request and limit of the eval pod: it holds the base model once (plus the
    adapter) in host memory while loading."""
    shared_memory: Quantity | None = None
    """Size of /dev/shm; empty: half of `memory`."""
    cache: CacheSpec = Field(default=CacheSpec())
    """Volume for the base model download."""


class EvalGateSpec(ApiModel):
    """Which candidate, judged by which suites, at what confidence."""

    model_config = validated(
        cel(
            "self.suites.exists(s, s.role == 'target')",
            "at least one suite must have role target",
            field_path=".suites",
        )
    )

    candidate: CandidateSpec
    """The candidate adapter."""
    suites: list[SuiteSpec] = Field(
        min_length=1,
        max_length=32,
        json_schema_extra=cast(
            Any, {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]}
        ),
    )
    """Evaluation suites; names are unique."""
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    """Confidence of the paired intervals, in (0.5, 1)."""
    bootstrap_samples: int = Field(default=2000, ge=100, le=100_000)
    """Paired bootstrap resamples per suite."""
    on_inconclusive: Literal["hold", "fail"] = "hold"
    """hold: keep the current version and say so; fail: treat as Fail."""
    promotion: PromotionSpec | None = None
    """Promote on Pass; omit to only report."""
    reevaluate: ReevaluateSpec | None = None
    """Scheduled re-evaluation of the promoted adapter."""
    resources: EvalResources = Field(default=EvalResources())
    """Placement of the eval pod."""
    image: str | None = None
    """Trainer image running `eval`; empty uses the operator's default."""
    pod_template: PodTemplate = Field(default=PodTemplate())
    """Pull secrets, env, volumes and extended resources the cluster needs, added to
    the eval pod (after the operator's own defaults)."""
    storage: StorageSpec = Field(default=StorageSpec())
    """S3 endpoint and credentials."""


class Interval(ApiModel):
    """A confidence interval."""

    low: float
    """Lower bound."""
    high: float
    """Upper bound."""


class SuiteResult(ApiModel):
    """One suite's paired comparison."""

    suite: str
    """Suite name."""
    role: Role
    """Suite role."""
    metric: Metric
    """Metric compared."""
    base: float | None = None
    """Base model score."""
    candidate: float | None = None
    """Candidate score."""
    delta: float | None = None
    """candidate - base (for kl: the KL itself)."""
    interval: Interval | None = None
    """Interval of delta at spec.confidence."""
    threshold: float | None = None
    """The margin the interval was compared with."""
    verdict: Verdict | None = None
    """Pass, Fail or Inconclusive."""
    items: int | None = None
    """Items evaluated."""
    method: str | None = None
    """How the interval was built: the paired score interval (binary metrics) or the
    studentized bootstrap (perplexity, kl)."""
    minimum_detectable_difference: float | None = None
    """The true distance from the margin this suite decides 80% of the time, at
    spec.confidence: smaller needs more items."""
    clusters: int | None = None
    """Clusters the items fell into (groupBy): the interval treats each as one unit."""
    items_needed: int | None = None
    """Inconclusive: about how many items would decide the estimate's distance from
    the margin."""


class DecisionStatus(ApiModel):
    """The gate's overall outcome."""

    verdict: Literal["Pass", "Fail", "Inconclusive", "Error"]
    """The worst suite's verdict, or Error."""
    reason: str = ""
    """Why, in a sentence."""
    decided_at: str | None = None
    """When (RFC 3339)."""
    judged: str | None = None
    """The adapter this verdict is about (`<uri>` or `<uri>@sha256:<digest>`): while the
    generation and the candidate stay the same, the verdict is not computed again."""


class Summary(ApiModel):
    """Headline numbers for `kubectl get evalgate`."""

    target_delta: float | None = None
    """Delta of the first target suite."""
    retention_delta: float | None = None
    """Delta of the first retention suite."""
    kl: float | None = None
    """KL of the first drift suite."""


class PromotedStatus(ApiModel):
    """What is currently promoted."""

    uri: str | None = None
    """The served version's S3 prefix (promotion.uri/versions/<sha12>)."""
    sha256: str | None = None
    """Its digest."""
    previous: str | None = None
    """The version it replaced."""
    at: str | None = None
    """When (RFC 3339)."""


class HandoffStatus(ApiModel):
    """What serving was last told (the ConfigMap and promotion.handoff)."""

    sha256: str | None = None
    """The version last handed off; differs from promoted.sha256 until it succeeds."""
    at: str | None = None
    """When (RFC 3339)."""
    targets: list[str] = Field(default=[])
    """The objects patched, as `apiVersion kind/name`."""


class ReevaluationStatus(ApiModel):
    """Scheduled re-evaluation of the promoted adapter."""

    round: int = 0
    """How many re-evaluations have started."""
    active: bool = False
    """A re-evaluation is running."""
    scheduled_at: str | None = None
    """The schedule time the latest round belongs to (RFC 3339)."""
    next_at: str | None = None
    """When the next round is due (RFC 3339)."""
    sha256: str | None = None
    """Digest of the served adapter the latest round judges."""
    last_verdict: Literal["Pass", "Fail", "Inconclusive", "Error"] | None = None
    """Verdict of the latest finished round."""
    last_reason: str | None = None
    """Why, in a sentence."""
    last_finished_at: str | None = None
    """When the latest round finished (RFC 3339)."""


class EvalGateStatus(ApiModel):
    """Observed state, written only by the operator."""

    phase: Phase | None = None
    """Pending, WaitingForCandidate, Evaluating, AwaitingApproval, Promoted, Passed (no
    promotion configured), Held (Inconclusive), Rejected (Fail), RolledBack (a scheduled
    re-evaluation failed and the previous version was restored), Superseded (promoted, then
    replaced at promotion.uri by another gate) or Failed (error)."""
    observed_generation: int | None = None
    """The .metadata.generation this status reflects."""
    conditions: list[Condition] = Field(
        default=[],
        json_schema_extra=LIST_MAP_BY_TYPE,
    )
    """Standard conditions."""
    results: list[SuiteResult] = Field(default=[])
    """Per-suite comparison."""
    decision: DecisionStatus | None = None
    """Overall verdict and reason."""
    summary: Summary | None = None
    """Headline deltas."""
    promoted: PromotedStatus | None = None
    """Promotion record."""
    handoff: HandoffStatus | None = None
    """The hand-off of the served version to serving."""
    report: str | None = None
    """URI of the HTML report."""
    reevaluation: ReevaluationStatus | None = None
    """Scheduled re-evaluation state (spec.reevaluate)."""
