"""What every document shares: strictness, the timestamp format, errors that name
the document and the field."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

M = TypeVar("M", bound=BaseModel)
# s3://bucket/key, or an absolute local path (development, benchmarks).
S3_URI = r"^(s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/\S*)?|/\S*)$"
RFC3339 = "%Y-%m-%dT%H:%M:%SZ"  # every timestamp in a status or a document (UTC)


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime(RFC3339)


def now_rfc3339() -> str:
    return rfc3339(datetime.now(UTC))


def parse_rfc3339(text: str) -> datetime:
    """Any ISO 8601 UTC stamp (Kubernetes writes `Z`), as an aware datetime."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Strict(BaseModel):
    """A config the operator renders: an unknown or missing field is refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DocumentError(ValueError):
    """A document is missing a field or holds a wrong one; the message names both."""


class ConfigError(Exception):
    """A config env var is missing or invalid; the message names the variable or field."""


def problems(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in error['loc']) or '(document)'}: {error['msg']}"
        for error in exc.errors()
    )


class Document(BaseModel):
    """A document a pod or the operator writes to S3. Fields it does not know are kept
    (a newer writer's additions survive a rewrite) and never required."""

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    @classmethod
    def parse(cls, document: object, *, where: str) -> Self:
        try:
            return cls.model_validate(document)
        except ValidationError as exc:
            raise DocumentError(f"{where} is malformed: {problems(exc)}") from None

    def to_json(self) -> dict[str, Any]:
        """The stored form: field aliases (camelCase where the record is read by people
        and serving), absent optionals left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


def load_json_env(
    model: type[M], name: str, environ: Mapping[str, str] | None = None, *, purpose: str
) -> M:
    """Validate the JSON in env var `name`; errors name the variable or the field."""
    env = os.environ if environ is None else environ
    raw = env.get(name)
    if not raw:
        raise ConfigError(f"{name} is not set: the operator passes {purpose} there")
    try:
        return model.model_validate(json.loads(raw))
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{name} is not JSON: {exc}") from None
    except ValidationError as exc:
        raise ConfigError(f"invalid {purpose}: {problems(exc)}") from None


def env_value(config: BaseModel) -> str:
    """A config as the env var's value: JSON, keys sorted (the same bytes every time)."""
    return json.dumps(config.model_dump(mode="json"), sort_keys=True)
