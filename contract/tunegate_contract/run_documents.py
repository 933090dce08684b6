"""What a training run writes: progress while it runs, the audit report before it
trains, the manifest last (its presence means the run finished)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from tunegate_contract.base import Document

AuditVerdict = Literal["Passed", "Warned", "Failed"]


class Progress(Document):
    step: int = Field(ge=0)
    total_steps: int | None = Field(default=None, ge=0)
    epoch: float | None = None
    loss: float | None = None  # the latest logged step's loss
    tokens_per_second: float | None = None
    eta_seconds: int | None = None
    updated_at: str | None = None

    @property
    def percent(self) -> int | None:
        if not self.total_steps:
            return None
        return min(100, int(100 * self.step / self.total_steps))


class AuditReport(Document):
    verdict: AuditVerdict
    findings: tuple[str, ...] = ()
    checks: dict[str, Any] = {}


class BaseModelRecord(Document):
    uri: str
    revision: str | None = None
    sha256: str


class AdapterArtifact(Document):
    uri: str
    sha256: str  # tree_digest(files)
    size_bytes: int = Field(ge=0)
    files: dict[str, str]  # relative path -> sha256


class Manifest(Document):
    schema_: Literal["tunegate.dev/manifest/v1"] = Field(
        default="tunegate.dev/manifest/v1", alias="schema"
    )
    run: dict[str, Any]
    base_model: BaseModelRecord
    datasets: dict[str, str]  # URI -> sha256 of its objects
    method: str
    hyperparameters: dict[str, Any]
    trainable_parameters: int = Field(ge=0)
    total_parameters: int = Field(ge=0)
    final_metrics: dict[str, Any] = {}
    code_version: str
    adapter: AdapterArtifact
    files: dict[str, str] = {}  # loss curve and other extras: name -> sha256
    created_at: str

    @property
    def last_loss(self) -> float | None:
        """The latest logged step's loss (train_loss is the run's mean)."""
        loss = self.final_metrics.get("last_loss")
        return float(loss) if isinstance(loss, int | float) else None
