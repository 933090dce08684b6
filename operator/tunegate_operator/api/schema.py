"""Pydantic models -> Kubernetes structural OpenAPI v3 schemas (pure).

The pydantic models are the single source of truth; the CRD YAML in `crds/`
is generated from them. Kubernetes needs every schema inlined (no $ref),
`nullable`-free optionals, OpenAPI 3.0 style `exclusiveMinimum`, and its own
`x-kubernetes-*` extensions, which models attach through `json_schema_extra`.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

_DROP = {"title", "additionalProperties", "discriminator", "examples"}
_PASS_THROUGH_EXTENSIONS = (
    "x-kubernetes-validations",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
)


class SchemaError(ValueError):
    """A model uses a construct that has no structural-schema equivalent."""


def structural_schema(model: type[BaseModel]) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    definitions = raw.pop("$defs", {})
    return _convert(raw, definitions, path=model.__name__)


def _resolve(node: dict[str, Any], definitions: dict[str, Any]) -> dict[str, Any]:
    """Inline a $ref, letting the referring node's keys (e.g. description) win."""
    if "$ref" not in node:
        return node
    name = node["$ref"].rsplit("/", 1)[-1]
    merged = dict(definitions[name])
    merged.update({k: v for k, v in node.items() if k != "$ref"})
    return merged


def _strip_null(node: dict[str, Any]) -> dict[str, Any]:
    """`X | None` becomes X: absence, not null, means unset in Kubernetes."""
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if not options:
            continue
        non_null = [o for o in options if o.get("type") != "null"]
        if len(non_null) == 1:
            rest = {k: v for k, v in node.items() if k != key}
            return {**non_null[0], **rest}
    return node


def _convert(node: dict[str, Any], definitions: dict[str, Any], *, path: str) -> dict[str, Any]:
    node = _strip_null(_resolve(node, definitions))
    node = _strip_null(_resolve(node, definitions))
    if "anyOf" in node or "oneOf" in node or "allOf" in node:
        raise SchemaError(f"{path}: unions are not structural; model it differently")
    out: dict[str, Any] = {}
    extensions = {k: node[k] for k in _PASS_THROUGH_EXTENSIONS if k in node}
    if "description" in node:
        out["description"] = " ".join(str(node["description"]).split())
    if "const" in node:
        out["type"] = "string"
        out["enum"] = [node["const"]]
    elif "enum" in node:
        out["type"] = node.get("type", "string")
        out["enum"] = list(node["enum"])
    elif "type" in node:
        out["type"] = node["type"]
    _copy_bounds(node, out)
    if out.get("type") == "object" or "properties" in node:
        out["type"] = "object"
        properties = node.get("properties", {})
        if properties:
            out["properties"] = {
                name: _convert(child, definitions, path=f"{path}.{name}")
                for name, child in properties.items()
            }
        if node.get("required"):
            out["required"] = list(node["required"])
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            out["additionalProperties"] = _convert(extra, definitions, path=f"{path}.*")
    if out.get("type") == "array" and "items" in node:
        out["items"] = _convert(node["items"], definitions, path=f"{path}[]")
    out.update(extensions)
    unknown = (
        set(node)
        - set(out)
        - _DROP
        - {
            "$ref",
            "anyOf",
            "oneOf",
            "properties",
            "required",
            "items",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "const",
            "default",
        }
    )
    if unknown:
        raise SchemaError(f"{path}: unsupported schema keys {sorted(unknown)}")
    return out


def _copy_bounds(node: dict[str, Any], out: dict[str, Any]) -> None:
    """Value constraints and the default, in the form Kubernetes takes them."""
    for key in (
        "minimum",
        "maximum",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "pattern",
        "format",
        "uniqueItems",
        "minProperties",
        "maxProperties",
    ):
        if key in node:
            out[key] = node[key]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if bound in node:
            out[plain] = node[bound]
            out[bound] = True
    if node.get("default") is not None:
        # Unset optionals are absent, never null, in Kubernetes defaults.
        out["default"] = _without_nulls(node["default"])


def _without_nulls(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def undocumented_fields(schema: dict[str, Any], *, path: str = "") -> list[str]:
    """Every property path lacking a description (kubectl explain shows nothing there)."""
    missing: list[str] = []
    for name, child in schema.get("properties", {}).items():
        child_path = f"{path}.{name}" if path else name
        if not child.get("description"):
            missing.append(child_path)
        missing.extend(undocumented_fields(child, path=child_path))
    if "items" in schema:
        missing.extend(undocumented_fields(schema["items"], path=f"{path}[]"))
    return missing
