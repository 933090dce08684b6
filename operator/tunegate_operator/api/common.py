"""Types shared by the tunegate.dev/v1alpha1 kinds."""

from __future__ import annotations

from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

GROUP = "tunegate.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
GPU_RESOURCE = "nvidia.com/gpu"  # the NVIDIA device plugin's extended resource

S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?$"
S3Uri = Annotated[
    str,
    Field(pattern=S3_URI_PATTERN, max_length=1024, examples=["s3://bucket/prefix"]),
]

# A Kubernetes resource quantity (decimal or binary suffix), checked at apply time so a
# typo ("two", "4GB") is rejected by the API server instead of failing the pod later.
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$"
Quantity = Annotated[
    str, Field(pattern=QUANTITY_PATTERN, max_length=64, examples=["4", "500m", "16Gi"])
]


def cel(rule: str, message: str, *, field_path: str | None = None) -> dict[str, str]:
    """One x-kubernetes-validations entry; field_path makes the error name the field."""
    entry = {"rule": rule, "message": message}
    if field_path:
        entry["fieldPath"] = field_path
    return entry


def validated(*rules: dict[str, str]) -> ConfigDict:
    """Model config carrying CEL rules (pydantic merges it with the parent's config)."""
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": cast(Any, list(rules))})


def field_rules(*rules: dict[str, str]) -> Any:
    """json_schema_extra for a Field carrying CEL rules."""
    return {"x-kubernetes-validations": list(rules)}


LIST_MAP_BY_TYPE: Any = {"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}


class ApiModel(BaseModel):
    """Base of every API type: camelCase on the wire, docstrings become field docs."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_attribute_docstrings=True,
    )


class Condition(ApiModel):
    """A standard Kubernetes condition (metav1.Condition)."""

    type: str
    """Kind of condition, e.g. Ready, AuditPassed, Scheduled."""
    status: Literal["True", "False", "Unknown"]
    """Whether the condition holds."""
    reason: str = ""
    """One CamelCase word a program can switch on."""
    message: str = ""
    """What happened and what to do about it, for a person."""
    observed_generation: int | None = None
    """The .metadata.generation the condition was computed from."""
    last_transition_time: str | None = None
    """When the status last changed (RFC 3339)."""


class Toleration(ApiModel):
    """A pod toleration (core/v1 Toleration)."""

    key: str | None = None
    """Taint key the toleration applies to; empty with operator Exists matches all."""
    operator: Literal["Exists", "Equal"] = "Equal"
    """Exists matches any value; Equal matches `value`."""
    value: str | None = None
    """Taint value to match when operator is Equal."""
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    """Taint effect to match; empty matches all effects."""
    toleration_seconds: int | None = Field(default=None, ge=0)
    """For NoExecute: how long the pod stays bound after the taint appears."""


class StorageSpec(ApiModel):
    """Where the S3-compatible object store is and how to authenticate."""

    endpoint: str | None = Field(default=None, pattern=r"^https?://\S+$")
    """S3 endpoint URL (for MinIO, Ceph, ...); empty means AWS S3 in `region`."""
    region: str | None = Field(default=None, max_length=64)
    """S3 region; empty uses the operator's default (chart value s3.region)."""
    credentials_secret: str | None = Field(
        default=None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253
    )
    """Secret in the same namespace with keys AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY;
    passed to pods only by reference. Empty means the pod's own identity (IRSA, workload
    identity)."""


class CacheSpec(ApiModel):
    """Where pods keep the downloaded base model and checkpoints (mounted at /cache).

    Default: an emptyDir on the node's disk, requested as ephemeral storage sized from
    the model, so the scheduler picks a node with room and nothing lands in the
    container's writable layer."""

    model_config = validated(
        cel(
            "!(has(self.sizeLimit) && has(self.claimName))",
            "set sizeLimit (emptyDir) or claimName (PersistentVolumeClaim), not both",
        )
    )

    size_limit: Quantity | None = None
    """emptyDir size, also the pod's ephemeral-storage request; empty derives it from the
    base model's size in S3."""
    claim_name: str | None = Field(
        default=None, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253
    )
    """An existing PersistentVolumeClaim in the same namespace (ReadWriteMany when
    several pods share it): downloads then survive pod restarts."""
