"""Operator settings, read once from the environment (the Helm chart sets them)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from tunegate_operator.api.pod_template import PodTemplate

if TYPE_CHECKING:
    from tunegate_operator.api.common import StorageSpec


@dataclass(frozen=True)
class Placement:
    """Where CPU-only pods (the data audit) run."""

    node_selector: dict[str, str] = field(default_factory=dict)
    tolerations: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Settings:
    trainer_image: str = "ghcr.io/tunegate/trainer:0.1.0"
    # The CPU-only audit image (no torch); empty runs the audit in the trainer image.
    audit_image: str | None = None
    # The interpreter in the trainer image; pods run `<python> -m tunegate_trainer ...`.
    trainer_python: str = "python"
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    credentials_secret: str | None = None
    service_account: str | None = None
    # Create service_account in a resource's namespace when it is missing (every install
    # mode), with these annotations (IRSA role, Workload Identity binding).
    create_service_account: bool = False
    service_account_annotations: dict[str, str] = field(default_factory=dict)
    audit_placement: Placement = field(default_factory=Placement)
    # The audit container's resources (requests, limits), as in a pod spec.
    audit_resources: dict[str, Any] = field(
        default_factory=lambda: {"requests": {"cpu": "2", "memory": "4Gi"}}
    )
    master_port: int = 29500
    retry_base_seconds: float = 10.0
    retry_max_seconds: float = 300.0
    progress_interval_seconds: float = 15.0
    # Added to every pod the operator creates (service-mesh opt-outs, autoscaler hints).
    pod_annotations: dict[str, str] = field(default_factory=dict)
    # The chart's podTemplate: pull secrets, proxies, CA bundles for every pod; a
    # resource's spec.podTemplate is applied on top.
    pod_template: PodTemplate = field(default_factory=PodTemplate)
    # The operator process itself: kopf peering (one active replica), handler threads,
    # the metrics port.
    peering_name: str = "tunegate"
    peering_clusterwide: bool = True
    peering_mandatory: bool = False
    peering_lifetime_seconds: int = 60
    workers: int = 8
    metrics_port: int = 8080

    def s3_location(self, storage: StorageSpec) -> tuple[str | None, str]:
        """(endpoint, region) of a resource's S3: its own, else the operator's defaults."""
        return storage.endpoint or self.s3_endpoint, storage.region or self.s3_region

    def storage_document(self, storage: StorageSpec) -> dict[str, str | None]:
        """The `storage` section of a trainer or eval config."""
        endpoint, region = self.s3_location(storage)
        return {"endpoint": endpoint, "region": region}


def _json_env(environ: dict[str, str], name: str, default: Any) -> Any:
    raw = environ.get(name)
    if not raw:
        return default
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{name} must be JSON: {exc}") from None


def _pod_template(environ: dict[str, str]) -> PodTemplate:
    try:
        return PodTemplate.model_validate(_json_env(environ, "TUNEGATE_POD_TEMPLATE", {}))
    except ValidationError as exc:
        raise ValueError(f"TUNEGATE_POD_TEMPLATE is not a valid podTemplate: {exc}") from None


def load_settings(environ: dict[str, str] | None = None) -> Settings:
    env = dict(os.environ if environ is None else environ)
    defaults = Settings()
    return Settings(
        trainer_image=env.get("TUNEGATE_TRAINER_IMAGE", defaults.trainer_image),
        trainer_python=env.get("TUNEGATE_TRAINER_PYTHON", defaults.trainer_python),
        audit_image=env.get("TUNEGATE_AUDIT_IMAGE") or None,
        s3_endpoint=env.get("TUNEGATE_S3_ENDPOINT") or None,
        s3_region=env.get("TUNEGATE_S3_REGION", defaults.s3_region),
        credentials_secret=env.get("TUNEGATE_S3_CREDENTIALS_SECRET") or None,
        service_account=env.get("TUNEGATE_TRAINER_SERVICE_ACCOUNT") or None,
        create_service_account=env.get("TUNEGATE_TRAINER_SERVICE_ACCOUNT_CREATE") == "true",
        service_account_annotations=_json_env(
            env, "TUNEGATE_TRAINER_SERVICE_ACCOUNT_ANNOTATIONS", {}
        ),
        audit_placement=Placement(
            node_selector=_json_env(env, "TUNEGATE_AUDIT_NODE_SELECTOR", {}),
            tolerations=_json_env(env, "TUNEGATE_AUDIT_TOLERATIONS", []),
        ),
        audit_resources=_json_env(env, "TUNEGATE_AUDIT_RESOURCES", defaults.audit_resources),
        pod_annotations=_json_env(env, "TUNEGATE_POD_ANNOTATIONS", {}),
        pod_template=_pod_template(env),
        retry_base_seconds=float(
            env.get("TUNEGATE_RETRY_BASE_SECONDS", defaults.retry_base_seconds)
        ),
        progress_interval_seconds=float(
            env.get("TUNEGATE_PROGRESS_INTERVAL_SECONDS", defaults.progress_interval_seconds)
        ),
        peering_name=env.get("TUNEGATE_PEERING_NAME", defaults.peering_name),
        peering_clusterwide=env.get("TUNEGATE_PEERING_CLUSTERWIDE", "true") == "true",
        peering_mandatory=env.get("TUNEGATE_PEERING_MANDATORY", "false") == "true",
        peering_lifetime_seconds=int(
            env.get("TUNEGATE_PEERING_LIFETIME_SECONDS", defaults.peering_lifetime_seconds)
        ),
        workers=int(env.get("TUNEGATE_WORKERS", defaults.workers)),
        metrics_port=int(env.get("TUNEGATE_METRICS_PORT", defaults.metrics_port)),
    )
