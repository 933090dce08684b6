"""Where each document lives in S3: the one place both sides take paths from."""

from __future__ import annotations

from dataclasses import dataclass

PROMOTION_RECORD = "promotion.json"  # the pointer, under promotion.uri
VERSIONS = "versions"  # promotion.uri/versions/<sha12>/: each promoted adapter, once
LATEST_CHECKPOINT = "latest.json"  # under checkpoints/: the newest complete one


@dataclass(frozen=True)
class RunLayout:
    """A FineTuneJob's artefacts under spec.output.uri."""

    root: str

    @classmethod
    def under(cls, uri: str) -> RunLayout:
        return cls(uri.rstrip("/"))

    @classmethod
    def of_adapter(cls, adapter_uri: str) -> RunLayout:
        """The run an adapter folder belongs to (<run>/adapter)."""
        return cls(adapter_uri.rstrip("/").rsplit("/", 1)[0])

    @property
    def checkpoints(self) -> str:
        return f"{self.root}/checkpoints"

    @property
    def adapter(self) -> str:
        return f"{self.root}/adapter"

    @property
    def manifest(self) -> str:
        return f"{self.root}/manifest.json"

    @property
    def progress(self) -> str:
        return f"{self.root}/progress.json"

    @property
    def audit_report(self) -> str:
        return f"{self.root}/audit/report.json"

    @property
    def loss_curve(self) -> str:
        return f"{self.root}/loss.png"

    @property
    def evals(self) -> str:
        """Where gates keep their results about this run's adapter."""
        return f"{self.root}/evals"


@dataclass(frozen=True)
class EvalLayout:
    """One evaluation's outputs: <evals>/<gate>-g<generation>[-r<round>]/."""

    folder: str

    @classmethod
    def of(cls, evals_root: str, gate_name: str, suffix: str) -> EvalLayout:
        return cls(f"{evals_root.rstrip('/')}/{gate_name}-g{suffix}")

    @property
    def results(self) -> str:
        return f"{self.folder}/results.json"

    @property
    def report(self) -> str:
        return f"{self.folder}/report/index.html"


def promotion_record_uri(promotion_uri: str) -> str:
    return f"{promotion_uri.rstrip('/')}/{PROMOTION_RECORD}"


def version_uri(promotion_uri: str, sha256: str) -> str:
    return f"{promotion_uri.rstrip('/')}/{VERSIONS}/{sha256[:12]}"
