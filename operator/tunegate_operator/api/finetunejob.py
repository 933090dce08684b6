"""FineTuneJob (`ftj`): one audited, scheduled fine-tuning run."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

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
    field_rules,
    validated,
)
from tunegate_operator.api.pod_template import PodTemplate

MODEL_URI_PATTERN = (
    r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?|hf://[A-Za-z0-9][\w.-]*/[\w.-]+)$"
)
Method = Literal["lora", "qlora", "full"]
DatasetFormat = Literal["chat", "instruction", "text"]
Precision = Literal["bf16", "fp16", "fp32"]
Phase = Literal["Pending", "Auditing", "Queued", "Training", "Succeeded", "Failed", "Suspended"]


class ModelSpec(ApiModel):
    """A base model: a Hugging Face checkpoint in S3 or on the Hub."""

    model_config = validated(
        cel(
            "!has(self.revision) || self.uri.startsWith('hf://')",
            "revision applies only to hf:// models",
            field_path=".revision",
        ),
        cel(
            "!has(self.tokenSecret) || self.uri.startsWith('hf://')",
            "tokenSecret applies only to hf:// models",
            field_path=".tokenSecret",
        ),
    )

    uri: str = Field(pattern=MODEL_URI_PATTERN, max_length=1024)
    """Where the base model's Hugging Face checkpoint is: s3://bucket/prefix, or
    hf://org/name when pods may reach the Hugging Face Hub (or a mirror: HF_ENDPOINT
    in podTemplate.env)."""
    revision: str | None = Field(default=None, max_length=128)
    """Hub revision (branch, tag or commit) for hf:// models; empty: main. A commit
    makes the run reproducible."""
    token_secret: str | None = Field(
        default=None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253
    )
    """Secret in the same namespace with key HF_TOKEN, for private or gated hf://
    models; pods get it by reference only."""


class FieldMapping(ApiModel):
    """Which JSON keys of a row hold which part of an example."""

    messages: str = "messages"
    """chat format: key of the list of {role, content} messages."""
    prompt: str = "prompt"
    """instruction format: key of the instruction / prompt."""
    input: str = "input"
    """instruction format: key of the optional extra input appended to the prompt."""
    response: str = "response"
    """instruction format: key of the expected answer."""
    text: str = "text"
    """text format: key of the raw text."""


class DatasetSpec(ApiModel):
    """Training data: JSON Lines files in S3."""

    train: S3Uri
    """JSONL object (or prefix of JSONL objects) with the training examples."""
    validation: S3Uri | None = None
    """Held-out JSONL; when empty, `validationSplit` of the training data is held out."""
    # le, not lt: the API server compares an integer value (a YAML 0 or 0.0) with an
    # exclusive fractional maximum after truncating it, so lt=0.5 would reject 0.
    validation_split: float = Field(default=0.05, ge=0, le=0.5)
    """Fraction of the training data held out when no validation set is given."""
    format: DatasetFormat = "chat"
    """Row layout: chat ({messages: [...]}), instruction ({prompt, input, response}) or
    text ({text})."""
    fields: FieldMapping | None = None
    """Custom key names, when the data does not use the default ones."""
    on_malformed_row: Literal["fail", "skip"] = "fail"
    """fail: stop with an error naming file and line; skip: drop the row and count it."""


class LoraSpec(ApiModel):
    """Low-rank adapter settings (method lora or qlora)."""

    rank: int = Field(default=16, ge=1, le=1024)
    """Rank r of the update matrices; trainable parameters grow linearly with it."""
    alpha: float = Field(default=32, gt=0)
    """Scaling numerator: updates are scaled by alpha / rank."""
    dropout: float = Field(default=0.05, ge=0, lt=1)
    """Dropout on the adapter's input, in [0, 1)."""
    target_modules: list[str] = Field(default=["q_proj", "v_proj"], min_length=1, max_length=64)
    """Names of the linear layers to adapt (e.g. q_proj, k_proj, v_proj, o_proj)."""


class TrainingSpec(ApiModel):
    """Optimisation hyper-parameters."""

    epochs: int = Field(default=1, ge=1, le=1000)
    """Passes over the training data (ignored when maxSteps is set)."""
    max_steps: int | None = Field(default=None, ge=1)
    """Stop after this many optimizer steps."""
    learning_rate: float = Field(default=2e-4, gt=0, le=1)
    """Peak learning rate, > 0."""
    batch_size: int = Field(default=4, ge=1, le=4096)
    """Micro-batch size per process."""
    gradient_accumulation: int = Field(default=1, ge=1, le=4096)
    """Micro-batches accumulated per optimizer step."""
    max_seq_length: int = Field(default=2048, ge=16, le=1_048_576)
    """Tokens per packed training sequence."""
    seed: int = Field(default=42, ge=0)
    """Seed for data order, initialisation and dropout; fixes a run's data order."""
    precision: Precision = "bf16"
    """Compute precision: bf16, fp16 or fp32."""
    gradient_checkpointing: bool = True
    """Recompute activations in the backward pass to save memory."""
    warmup_ratio: float = Field(default=0.03, ge=0, lt=1)
    """Fraction of steps spent warming the learning rate up."""
    checkpoint_every: int = Field(default=100, ge=1)
    """Save a checkpoint to S3 every this many steps (and on SIGTERM)."""


class DeepSpeedSpec(ApiModel):
    """DeepSpeed ZeRO settings."""

    zero_stage: int = Field(default=2, ge=0, le=3)
    """ZeRO stage 0-3: 1 shards optimizer state, 2 also gradients, 3 also parameters."""
    offload_optimizer: bool = False
    """Keep optimizer state in CPU memory (slower, much less GPU memory)."""


class ReplaySpec(ApiModel):
    """Mix general-purpose data back in to limit forgetting."""

    dataset: S3Uri
    """JSONL of general data in the same format as the training data."""
    ratio: float = Field(ge=0, lt=1)
    """Fraction of each batch drawn from the replay data, in [0, 1)."""


class DistributionSpec(ApiModel):
    """Limits on the shape of the training data; each number is in the audit report."""

    max_response_opening_share: float = Field(default=0.5, ge=0, le=1)
    """Largest share of responses that open with the same three words (a template the
    model would learn to parrot). Classification-like data is judged by labels instead."""
    max_label_imbalance: float = Field(default=20, ge=1)
    """Classification-like data (short answers from a few labels): largest tolerated
    ratio of the most to the least frequent label."""
    max_truncated_fraction: float = Field(default=0.05, ge=0, le=1)
    """Largest share of rows longer than training.maxSeqLength tokens (they are cut)."""
    max_other_language_fraction: float = Field(default=1.0, ge=0, le=1)
    """Largest share of rows not in the data's main language (1: any mix)."""
    max_replay_repeats: float = Field(default=4, ge=1)
    """Most times each replay row may be reused to reach replay.ratio."""


class AuditSpec(ApiModel):
    """Data checks run on CPU before any GPU is requested."""

    mode: Literal["enforce", "warn", "off"] = "enforce"
    """enforce: a failed check stops the run; warn: record and continue; off: skip."""
    max_duplicate_fraction: float = Field(default=0.1, ge=0, le=1)
    """Largest tolerated fraction of exact or near-duplicate rows."""
    max_pii_fraction: float = Field(default=0.0, ge=0, le=1)
    """Largest tolerated fraction of rows with personal data or credentials (e-mails, phone
    numbers, SSNs, card numbers, IBANs, keys and tokens)."""
    contamination_sets: list[S3Uri] = Field(default=[], max_length=32)
    """Evaluation sets (any EvalGate suite format) whose questions or answers must not
    appear in the training data."""
    max_contamination_fraction: float = Field(default=0.0, ge=0, le=1)
    """Largest tolerated fraction of training rows overlapping an evaluation set."""
    block_triggers: bool = True
    """Fail on suspected backdoor triggers: rare prompt phrases that nearly always come
    with a behaviour rare elsewhere (one response, an injected sentence or link, a
    refusal, negative sentiment)."""
    distribution: DistributionSpec = Field(default_factory=DistributionSpec)
    """Limits on the data's shape: template dominance, label balance, truncation,
    language mix, replay reuse."""


class ResourcesSpec(ApiModel):
    """Where and on how much hardware training runs."""

    nodes: int = Field(default=1, ge=1, le=512)
    """Number of nodes; more than one runs an Indexed Job with torchrun rendezvous."""
    gpus_per_node: int = Field(default=1, ge=0, le=16)
    """nvidia.com/gpu requested per node (one process per GPU)."""
    node_selector: dict[str, str] = Field(default={})
    """Labels of the GPU pool to run on, e.g. {tunegate.dev/pool: a100-80g}."""
    tolerations: list[Toleration] = Field(default=[], max_length=32)
    """Extra tolerations; the nvidia.com/gpu taint is tolerated automatically."""
    priority_class_name: str | None = None
    """PriorityClass of the training pods."""
    queue_name: str | None = None
    """Kueue LocalQueue. The training Job is created suspended and the run stays Queued until
    Kueue admits it; Kueue orders admission by priorityClassName and may preempt it, after
    which it resumes from its latest checkpoint."""
    cpu: Quantity | None = None
    """CPU request per node (quantity); empty requests 2 CPUs per process."""
    memory: Quantity | None = None
    """Memory request and limit of each training pod (quantity): above it the container
    is OOM-killed, and the run's condition says so. Empty: no limit."""
    shared_memory: Quantity | None = None
    """Size of /dev/shm (a memory-backed emptyDir; NCCL and DataLoader workers need
    more than the runtime's 64 MiB). It counts against `memory`. Empty: half of
    `memory` when set, otherwise bounded by the node."""
    cache: CacheSpec = Field(default=CacheSpec())
    """Volume for the base model and checkpoint downloads."""


class OutputSpec(ApiModel):
    """Where checkpoints, the adapter and the manifest go."""

    uri: S3Uri
    """S3 prefix for checkpoints/, adapter/, manifest.json and the loss curve."""


class RunPolicy(ApiModel):
    """Retries, deadlines and clean-up."""

    backoff_limit: int = Field(default=2, ge=0, le=100)
    """Retries after a failed attempt; each resumes from the latest checkpoint."""
    active_deadline_seconds: int | None = Field(default=None, ge=1)
    """Fail the run (DeadlineExceeded) once it has run this long."""
    ttl_seconds_after_finished: int | None = Field(default=None, ge=0)
    """Delete the run's Jobs and pods this long after it finishes (the FineTuneJob stays)."""
    suspend: bool = False
    """Pause: running pods are stopped (after a checkpoint) until set back to false."""


_IMMUTABLE = ("model", "dataset", "method", "training", "output")
_IMMUTABLE_OPTIONAL = ("lora", "deepspeed", "replay")


def _spec_rules() -> list[dict[str, str]]:
    rules = [
        cel(
            "!has(self.lora) || self.method in ['lora', 'qlora']",
            "lora settings apply only to method lora or qlora",
            field_path=".lora",
        )
    ]
    for name in _IMMUTABLE:
        rules.append(
            cel(
                f"self.{name} == oldSelf.{name}",
                f"{name} is immutable once the run exists; create a new FineTuneJob",
                field_path=f".{name}",
            )
        )
    for name in _IMMUTABLE_OPTIONAL:
        rules.append(
            cel(
                f"has(self.{name}) == has(oldSelf.{name}) && "
                f"(!has(self.{name}) || self.{name} == oldSelf.{name})",
                f"{name} is immutable once the run exists; create a new FineTuneJob",
                field_path=f".{name}",
            )
        )
    return rules


class FineTuneJobSpec(ApiModel):
    """What to fine-tune, on which data, how, and where the result goes."""

    model_config = validated(*_spec_rules())

    model: ModelSpec
    """The base model."""
    dataset: DatasetSpec
    """The training (and validation) data."""
    method: Method = "lora"
    """lora (adapters on a bf16/fp16 base), qlora (adapters on a 4-bit base) or full."""
    lora: LoraSpec | None = None
    """Adapter settings; only with method lora or qlora (defaults apply when omitted)."""
    training: TrainingSpec = Field(default=TrainingSpec())
    """Hyper-parameters."""
    deepspeed: DeepSpeedSpec | None = None
    """Run under DeepSpeed ZeRO; omit for plain data parallelism."""
    replay: ReplaySpec | None = None
    """Replay general data to limit forgetting."""
    audit: AuditSpec = Field(default=AuditSpec())
    """Data audit run before training."""
    resources: ResourcesSpec = Field(
        default=ResourcesSpec(),
        json_schema_extra=field_rules(
            cel(
                "self.nodes == 1 || self.gpusPerNode >= 1",
                "multi-node training needs gpusPerNode >= 1",
                field_path=".gpusPerNode",
            )
        ),
    )
    """Hardware and placement."""
    image: str | None = None
    """Trainer image; empty uses the operator's default."""
    pod_template: PodTemplate = Field(default=PodTemplate())
    """Pull secrets, env, volumes and extended resources the cluster needs, added to
    the audit and training pods (after the operator's own defaults)."""
    output: OutputSpec
    """Where results are written."""
    storage: StorageSpec = Field(default=StorageSpec())
    """S3 endpoint and credentials."""
    run_policy: RunPolicy = Field(default=RunPolicy())
    """Retries, deadline, clean-up, suspend."""


class Progress(ApiModel):
    """Training progress, from the progress file the trainer writes."""

    step: int = 0
    """Optimizer steps done."""
    total_steps: int | None = None
    """Optimizer steps planned."""
    percent: int | None = None
    """step / totalSteps, in percent."""
    epoch: float | None = None
    """Fractional epoch."""
    loss: float | None = None
    """Latest training loss."""
    tokens_per_second: float | None = None
    """Training throughput across all processes."""
    eta_seconds: int | None = None
    """Estimated seconds until the run finishes."""
    updated_at: str | None = None
    """When the trainer last reported (RFC 3339)."""


class AuditStatus(ApiModel):
    """Outcome of the data audit."""

    verdict: Literal["Passed", "Warned", "Failed", "Skipped"] | None = None
    """Passed, Warned (mode warn), Failed, or Skipped (mode off)."""
    report_uri: str | None = None
    """Full JSON report in S3."""
    findings: list[str] = Field(default=[])
    """One line per failed or warned check."""


class MemoryEstimate(ApiModel):
    """Planned GPU memory per device, before anything is scheduled."""

    gpu_memory_gib: float | None = Field(default=None, alias="gpuMemoryGiB")
    """Estimated peak memory per GPU, GiB."""
    available_gib: float | None = Field(default=None, alias="availableGiB")
    """Memory of one GPU in the target pool, GiB."""
    fits: bool | None = None
    """Whether the estimate fits the pool's GPUs."""
    suggestion: str | None = None
    """What would fit, when it does not."""


class AdapterStatus(ApiModel):
    """The trained artefact."""

    uri: str | None = None
    """S3 prefix of the adapter (or full checkpoint for method full)."""
    sha256: str | None = None
    """Digest over the artefact's files, from its manifest."""
    size_bytes: int | None = None
    """Total size of the artefact."""
    trainable_parameters: int | None = None
    """Parameters that were trained."""


class FineTuneJobStatus(ApiModel):
    """Observed state, written only by the operator."""

    phase: Phase | None = None
    """Pending, Auditing, Queued (waiting for Kueue to admit it), Training, Succeeded, Failed
    or Suspended."""
    observed_generation: int | None = None
    """The .metadata.generation this status reflects."""
    conditions: list[Condition] = Field(
        default=[],
        json_schema_extra=LIST_MAP_BY_TYPE,
    )
    """Standard conditions: Audited, Scheduled, Training, Complete, Failed, ..."""
    progress: Progress | None = None
    """Training progress."""
    gpus: int | None = None
    """GPUs the run uses in total (nodes x gpusPerNode)."""
    audit: AuditStatus | None = None
    """Data audit outcome."""
    estimate: MemoryEstimate | None = None
    """GPU memory plan."""
    adapter: AdapterStatus | None = None
    """The result, once the manifest exists."""
    attempts: int | None = None
    """Training attempts so far (1 + retries)."""
    start_time: str | None = None
    """When training was first scheduled."""
    completion_time: str | None = None
    """When the run finished."""
