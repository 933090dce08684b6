"""Applying spec.podTemplate (and the chart's podTemplate under it) to a pod (pure)."""

from __future__ import annotations

from typing import Any

from tunegate_operator.api.pod_template import PodTemplate


def _by_name(first: list[Any], second: list[Any], key: str) -> list[Any]:
    """first's entries, then second's; a name in both keeps second's (in first's place)."""
    wins = {getattr(item, key): item for item in second}
    kept = [wins.pop(getattr(item, key), item) for item in first]
    return kept + [item for item in second if getattr(item, key) in wins]


def merge_templates(platform: PodTemplate, own: PodTemplate) -> PodTemplate:
    """The platform's template (chart value podTemplate) with a resource's own on top."""
    return PodTemplate(
        image_pull_secrets=list(
            dict.fromkeys([*platform.image_pull_secrets, *own.image_pull_secrets])
        ),
        env=_by_name(platform.env, own.env, "name"),
        volumes=_by_name(platform.volumes, own.volumes, "name"),
        volume_mounts=_by_name(platform.volume_mounts, own.volume_mounts, "mount_path"),
        extra_resources={**platform.extra_resources, **own.extra_resources},
    )


def _dump(item: Any) -> dict[str, Any]:
    dumped: dict[str, Any] = item.model_dump(by_alias=True, exclude_none=True)
    return dumped


def apply_pod_template(
    pod_spec: dict[str, Any], template: PodTemplate, *, extra_resources: bool
) -> None:
    """Add the template's pull secrets, env, volumes and (for pods that use devices)
    extended resources. A variable the operator also sets takes the template's value."""
    container = pod_spec["containers"][0]
    if template.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in template.image_pull_secrets]
    if template.env:
        overridden = {e.name for e in template.env}
        container["env"] = [
            *(e for e in container["env"] if e["name"] not in overridden),
            *(_dump(e) for e in template.env),
        ]
    if template.volumes:
        pod_spec["volumes"] = [*pod_spec.get("volumes", []), *map(_dump, template.volumes)]
    if template.volume_mounts:
        container["volumeMounts"] = [
            *container.get("volumeMounts", []),
            *map(_dump, template.volume_mounts),
        ]
    if extra_resources and template.extra_resources:
        resources = container["resources"]
        for side in ("requests", "limits"):
            resources[side] = {**resources.get(side, {}), **template.extra_resources}
