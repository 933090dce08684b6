"""A container's environment, resolved as the kubelet resolves it (pure).

Lookups of Secrets and ConfigMaps are passed in, so this module does no I/O.
A missing reference raises EnvResolutionError naming the variable and object,
like the kubelet's CreateContainerConfigError; optional references are skipped.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Mapping
from typing import Any

Lookup = Callable[[str], Mapping[str, str] | None]
"""Returns an object's data by name (Secret data already base64-decoded), or None."""

_VAR_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


class EnvResolutionError(Exception):
    """A referenced Secret/ConfigMap/key does not exist."""


def decode_secret_data(data: Mapping[str, str | bytes] | None) -> dict[str, str]:
    return {key: base64.b64decode(value).decode() for key, value in (data or {}).items()}


def expand(value: str, env: Mapping[str, str]) -> str:
    """Expand $(VAR) from earlier variables; $$ escapes; unknown references stay as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR_REFERENCE.sub(replace, value)


def field_value(pod: Mapping[str, Any], field_path: str) -> str:
    metadata = pod.get("metadata", {})
    spec = pod.get("spec", {})
    status = pod.get("status", {})
    bracketed = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", field_path)
    if bracketed:
        return str((metadata.get(bracketed.group(1)) or {}).get(bracketed.group(2), ""))
    simple = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.hostIP": status.get("hostIP"),
        "status.podIP": status.get("podIP"),
    }
    if field_path not in simple:
        raise EnvResolutionError(f"fieldRef {field_path!r} is not supported")
    return str(simple[field_path] or "")


def _key_from(kind: str, ref: Mapping[str, Any], lookup: Lookup, *, variable: str) -> str | None:
    name, key, optional = ref.get("name", ""), ref["key"], bool(ref.get("optional", False))
    data = lookup(name)
    if data is None or key not in data:
        if optional:
            return None
        what = f"{kind} {name!r}" if data is None else f"key {key!r} in {kind} {name!r}"
        raise EnvResolutionError(f"env {variable}: {what} not found")
    return data[key]


def resolve_container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    *,
    secrets: Lookup,
    config_maps: Lookup,
) -> dict[str, str]:
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind, lookup, ref in (
            ("Secret", secrets, source.get("secretRef")),
            ("ConfigMap", config_maps, source.get("configMapRef")),
        ):
            if ref is None:
                continue
            data = lookup(ref.get("name", ""))
            if data is None:
                if ref.get("optional"):
                    continue
                raise EnvResolutionError(f"envFrom: {kind} {ref.get('name')!r} not found")
            env.update({prefix + key: value for key, value in data.items()})
    for item in container.get("env") or []:
        name = item["name"]
        if "value" in item or "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        value_from = item["valueFrom"]
        value: str | None
        if "secretKeyRef" in value_from:
            value = _key_from("Secret", value_from["secretKeyRef"], secrets, variable=name)
        elif "configMapKeyRef" in value_from:
            value = _key_from(
                "ConfigMap", value_from["configMapKeyRef"], config_maps, variable=name
            )
        elif "fieldRef" in value_from:
            value = field_value(pod, value_from["fieldRef"]["fieldPath"])
        else:
            raise EnvResolutionError(f"env {name}: valueFrom {sorted(value_from)} is not supported")
        if value is not None:
            env[name] = value
    return env


def container_argv(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """command + args with $(VAR) expanded; the local runner has no image entrypoint."""
    command = list(container.get("command") or [])
    if not command:
        raise EnvResolutionError(
            f"container {container.get('name')!r}: the local runner needs an explicit command"
        )
    return [expand(part, env) for part in command + list(container.get("args") or [])]


def with_local_volumes(
    env: Mapping[str, str], mounts: list[Mapping[str, Any]] | None, volume_root: str
) -> dict[str, str]:
    """Pods run here as host processes, with no mounts: a variable naming a path under a
    volume mount (TUNEGATE_CACHE=/cache) is pointed at the pod's own directory for that
    volume instead, as the mount would have made it private to the pod."""
    resolved = dict(env)
    for mount in sorted(mounts or [], key=lambda m: -len(m["mountPath"])):
        path = mount["mountPath"].rstrip("/")
        local = f"{volume_root}/{mount['name']}"
        for key, value in resolved.items():
            if value == path or value.startswith(path + "/"):
                resolved[key] = local + value[len(path) :]
    return resolved
