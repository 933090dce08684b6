"""`promotion.handoff`: objects patched after the promotion pointer moves, so serving
learns of the new version (one generic mechanism, not a plugin per serving stack)."""

from __future__ import annotations

import re
from typing import Any

from pydantic import Field, field_validator

from tunegate_operator.api.common import ApiModel

# What a patch may say about the version now served.
PLACEHOLDERS = {
    "uri": "the version's S3 prefix (holds adapter_config.json and the weights)",
    "sha256": "the version's tree digest",
    "sha12": "its first 12 hex digits (a short, stable name)",
    "adapterName": "promotion.adapterName, else the gate's name",
    "source": "where the adapter was trained (the candidate's URI)",
    "promotedAt": "when the pointer moved (RFC 3339)",
}
PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")


def placeholders_in(value: Any) -> set[str]:
    """Every ${name} used in the strings of a JSON value."""
    if isinstance(value, str):
        return set(PLACEHOLDER.findall(value))
    if isinstance(value, dict):
        return set().union(*(placeholders_in(v) for v in value.values()), set())
    if isinstance(value, list):
        return set().union(*(placeholders_in(v) for v in value), set())
    return set()


class HandoffTarget(ApiModel):
    """One object in the gate's namespace, merge-patched after each pointer move."""

    api_version: str = Field(
        pattern=r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?v[0-9]+((alpha|beta)[0-9]+)?$",
        max_length=253,
    )
    """apiVersion of the object: apps/v1, serving.kserve.io/v1alpha1, ..."""
    kind: str = Field(pattern=r"^[A-Z][A-Za-z0-9]*$", max_length=63)
    """Its kind: Deployment, LLMInferenceService, ModelAdapter, ..."""
    name: str = Field(pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", max_length=253)
    """Its name (the object must exist; the operator does not create it)."""
    patch: dict[str, Any] = Field(
        min_length=1, json_schema_extra={"x-kubernetes-preserve-unknown-fields": True}
    )
    """JSON merge patch (RFC 7386). Strings may use ${uri}, ${sha256}, ${sha12},
    ${adapterName}, ${source} and ${promotedAt}; a list in the patch replaces the
    object's list whole."""

    @field_validator("patch")
    @classmethod
    def _known_placeholders(cls, patch: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(placeholders_in(patch) - set(PLACEHOLDERS))
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {', '.join('${' + u + '}' for u in unknown)}; "
                f"known: {', '.join('${' + k + '}' for k in PLACEHOLDERS)}"
            )
        return patch
