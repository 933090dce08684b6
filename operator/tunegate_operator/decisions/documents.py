"""Parsing what the trainer writes to S3 (pure): manifest and audit report.

A malformed document is an error the user sees, naming the document and key.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tunegate_operator.decisions.finetunejob import AuditReport, ManifestSummary


class DocumentError(ValueError):
    pass


def parse_manifest(document: Mapping[str, Any], *, where: str) -> ManifestSummary:
    try:
        artifact = document["adapter"]
        metrics = document.get("final_metrics") or {}
        loss = metrics.get("train_loss")
        return ManifestSummary(
            uri=str(artifact["uri"]),
            sha256=str(artifact["sha256"]),
            size_bytes=int(artifact["size_bytes"]),
            trainable_parameters=int(document["trainable_parameters"]),
            final_loss=float(loss) if isinstance(loss, int | float) else None,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise DocumentError(f"{where} is malformed: missing or invalid {exc}") from None


def parse_audit_report(document: Mapping[str, Any], *, where: str) -> AuditReport:
    verdict = document.get("verdict")
    if verdict not in ("Passed", "Warned", "Failed"):
        raise DocumentError(f"{where}: verdict must be Passed, Warned or Failed, got {verdict!r}")
    findings = document.get("findings") or []
    if not isinstance(findings, list):
        raise DocumentError(f"{where}: findings must be a list")
    return AuditReport(verdict=verdict, findings=tuple(str(f) for f in findings))
