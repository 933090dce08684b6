"""`kubectl tunegate audit`: the audit pod's checks on data before it is applied, with
the settings of a FineTuneJob manifest (`-f`) or spec.audit's defaults. Exit status:
0 when the audit passes, 1 on findings (so CI can gate on it), 2 on bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from tunegate_operator.api.finetunejob import (
    AuditSpec,
    FieldMapping,
    FineTuneJobSpec,
    TrainingSpec,
)
from tunegate_operator.builders.trainer_config import audit_section

PASSED, FINDINGS, BAD_INPUT = 0, 1, 2


class LocalAuditError(Exception):
    pass


def _spec(manifest: Path) -> FineTuneJobSpec:
    try:
        documents = [d for d in yaml.safe_load_all(manifest.read_text()) if d]
    except (OSError, yaml.YAMLError) as exc:
        raise LocalAuditError(f"{manifest}: {exc}") from None
    jobs = [d for d in documents if isinstance(d, dict) and d.get("kind") == "FineTuneJob"]
    if len(jobs) != 1:
        raise LocalAuditError(f"{manifest}: expected one FineTuneJob, found {len(jobs)}")
    try:
        return FineTuneJobSpec.model_validate(jobs[0].get("spec") or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(part) for part in ("spec", *first["loc"]))
        raise LocalAuditError(f"{manifest}: {field}: {first['msg']}") from None


def _s3_credentials() -> bool:
    import boto3

    return boto3.Session().get_credentials() is not None


def run(
    data: str,
    *,
    manifest: Path | None,
    data_format: str | None,
    contamination: list[str],
    as_json: bool,
) -> tuple[int, str]:
    """(exit status, what to print)."""
    try:
        from tunegate_contract.trainer_config import Audit, FieldNames, Replay
        from tunegate_trainer.audit.local import RowFormat, audit_source, shape_inputs, summary
        from tunegate_trainer.data import DataError
        from tunegate_trainer.storage import StorageError, store_from_env
    except ImportError as exc:
        raise LocalAuditError(
            f"the audit needs the audit extra ({exc.name} is missing): "
            "pip install 'tunegate[operator,audit]'"
        ) from None
    spec = _spec(manifest) if manifest else None
    audit_spec = spec.audit if spec else AuditSpec()
    dataset = spec.dataset if spec else None
    row_format = RowFormat(
        format=data_format or (dataset.format if dataset else "chat"),  # type: ignore[arg-type]
        fields=FieldNames.model_validate(
            ((dataset.fields if dataset else None) or FieldMapping()).model_dump()
        ),
        on_malformed_row=dataset.on_malformed_row if dataset else "fail",
    )
    sets = contamination or list(audit_spec.contamination_sets)
    replay = spec.replay if spec else None
    model_uri = spec.model.uri if spec else None
    if not _s3_credentials():  # the shape is then judged without tokenizer and replay
        model_uri = None if model_uri and model_uri.startswith("s3://") else model_uri
        replay = None if replay and replay.dataset.startswith("s3://") else replay
    try:
        shape = shape_inputs(
            store_from_env(None, "us-east-1"),
            model_uri=model_uri,
            max_seq_length=(spec.training if spec else TrainingSpec()).max_seq_length,
            replay=Replay(dataset=replay.dataset, ratio=replay.ratio) if replay else None,
            row_format=row_format,
        )
        result = audit_source(
            data,
            data=row_format,
            settings=Audit.model_validate(audit_section(audit_spec)),
            contamination=sets,
            shape=shape,
        )
    except (DataError, StorageError) as exc:
        raise LocalAuditError(str(exc)) from None
    document: dict[str, Any] = result.report().to_json()
    text = json.dumps(document, indent=2) if as_json else summary(result)
    return (PASSED if result.verdict == "Passed" else FINDINGS), text
