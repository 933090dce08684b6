"""spec.podTemplate: the few pod settings a real cluster needs that tunegate cannot
choose (pull secrets, proxies and CA bundles, NCCL tuning, extra volumes, RDMA/EFA
devices). Small and typed on purpose: everything else about the pods is the operator's.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from tunegate_operator.api.common import ApiModel, Quantity, cel, field_rules, validated

NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
# Volumes and mounts the operator adds itself (builders/pod_volumes.py).
RESERVED_VOLUMES = ("dshm", "cache")
RESERVED_MOUNTS = ("/dev/shm", "/cache")


class KeyRef(ApiModel):
    """One key of a Secret or ConfigMap in the resource's namespace."""

    name: str = Field(pattern=NAME, max_length=253)
    """The object's name."""
    key: str = Field(max_length=253)
    """The key."""
    optional: bool = False
    """Start the pod even when the object or key is missing."""


class EnvSource(ApiModel):
    """Where an environment variable's value comes from (one of the two)."""

    model_config = validated(
        cel(
            "has(self.secretKeyRef) != has(self.configMapKeyRef)",
            "set exactly one of secretKeyRef or configMapKeyRef",
        )
    )

    secret_key_ref: KeyRef | None = None
    """A Secret's key (e.g. HF_TOKEN); the value never enters a manifest or a status."""
    config_map_key_ref: KeyRef | None = None
    """A ConfigMap's key."""


class EnvVar(ApiModel):
    """An environment variable of the pod's container."""

    model_config = validated(
        cel("has(self.value) != has(self.valueFrom)", "set exactly one of value or valueFrom")
    )

    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.-]*$", max_length=256)
    """Variable name (TUNEGATE_* is reserved for the operator)."""
    value: str | None = Field(default=None, max_length=32768)
    """A literal value (HTTPS_PROXY, NO_PROXY, NCCL_* settings, ...)."""
    value_from: EnvSource | None = None
    """A Secret or ConfigMap key."""


class PvcSource(ApiModel):
    """An existing PersistentVolumeClaim."""

    claim_name: str = Field(pattern=NAME, max_length=253)
    """Its name."""
    read_only: bool = False
    """Mount it read-only."""


class ObjectSource(ApiModel):
    """A Secret or ConfigMap whose keys become files."""

    name: str = Field(pattern=NAME, max_length=253)
    """Its name."""
    optional: bool = False
    """Start the pod even when it is missing."""


class HostPathSource(ApiModel):
    """A path on the node (devices such as /dev/infiniband); not allowed by the
    restricted Pod Security level."""

    path: str = Field(pattern=r"^/\S*$", max_length=4096)
    """Absolute path on the node."""
    type: str | None = Field(default=None, max_length=32)
    """hostPath type (Directory, CharDevice, ...)."""


class EmptyDirSource(ApiModel):
    """Scratch space that lives as long as the pod."""

    medium: str | None = Field(default=None, pattern=r"^(Memory)?$")
    """Memory for a tmpfs (counts against the memory limit); empty: node disk."""
    size_limit: Quantity | None = None
    """Largest size."""


class Volume(ApiModel):
    """An extra volume (exactly one source)."""

    model_config = validated(
        cel(
            "[has(self.persistentVolumeClaim), has(self.secret), has(self.configMap), "
            "has(self.emptyDir), has(self.hostPath)].filter(x, x).size() == 1",
            "set exactly one of persistentVolumeClaim, secret, configMap, emptyDir, hostPath",
        )
    )

    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", max_length=63)
    """Volume name, referenced by volumeMounts (dshm and cache are the operator's)."""
    persistent_volume_claim: PvcSource | None = None
    """An existing claim (datasets, a shared model cache)."""
    secret: ObjectSource | None = None
    """A Secret's keys as files (CA bundles, credentials files)."""
    config_map: ObjectSource | None = None
    """A ConfigMap's keys as files."""
    empty_dir: EmptyDirSource | None = None
    """Scratch space."""
    host_path: HostPathSource | None = None
    """A node path."""


class VolumeMount(ApiModel):
    """Where an extra volume appears in the container."""

    name: str = Field(max_length=63)
    """The volume's name."""
    mount_path: str = Field(pattern=r"^/\S*$", max_length=4096)
    """Absolute path in the container (/dev/shm and /cache are the operator's)."""
    read_only: bool = False
    """Mount read-only."""
    sub_path: str | None = Field(default=None, max_length=4096)
    """Mount only this path inside the volume."""


def _names_not_reserved(field: str, names: tuple[str, ...], key: str) -> Any:
    listed = ", ".join(f"'{n}'" for n in names)
    return field_rules(
        cel(
            f"self.all(x, !(x.{key} in [{listed}]))",
            f"{field}: {', '.join(names)} are the operator's",
        )
    )


class PodTemplate(ApiModel):
    """Additions to every pod of this resource, for what the cluster requires."""

    image_pull_secrets: list[str] = Field(default=[], max_length=16)
    """Secrets (in the resource's namespace) for pulling a private trainer image."""
    env: list[EnvVar] = Field(
        default=[],
        max_length=64,
        json_schema_extra=field_rules(
            cel(
                "self.all(e, !e.name.startsWith('TUNEGATE_'))",
                "env: TUNEGATE_* variables are set by the operator",
            )
        ),
    )
    """Extra environment variables (proxies, AWS_CA_BUNDLE, HF_TOKEN, NCCL_*)."""
    volumes: list[Volume] = Field(
        default=[],
        max_length=16,
        json_schema_extra=_names_not_reserved("volumes", RESERVED_VOLUMES, "name"),
    )
    """Extra volumes; mount them with volumeMounts."""
    volume_mounts: list[VolumeMount] = Field(
        default=[],
        max_length=16,
        json_schema_extra=_names_not_reserved("volumeMounts", RESERVED_MOUNTS, "mountPath"),
    )
    """Mounts of the extra volumes into the container."""
    extra_resources: dict[str, Quantity] = Field(default={}, max_length=16)
    """Extended resources per pod, requested and limited alike (e.g.
    vpc.amazonaws.com/efa: "32", rdma/ib: "1"); training and eval pods only."""
