"""Handing the served version to serving (pure: no I/O here): when it is due, and the
patches that say so.

Level-triggered: a gate hands off while the promotion pointer serves the version this
gate put (or restored) there and its status.handoff names another. A crash before the
status is written only means the same patches are sent again, and merge patches with
the same content change nothing (no second rollout).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tunegate_operator.api.handoff import PLACEHOLDER, HandoffTarget

HANDING_OFF_PHASES = ("Promoted", "RolledBack")


def handoff_due(
    phase: str,
    promoted_sha256: str | None,
    served_sha256: str | None,
    handed_off_sha256: str | None,
) -> bool:
    """The pointer serves this gate's version, and serving has not been told yet."""
    return (
        phase in HANDING_OFF_PHASES
        and promoted_sha256 is not None
        and promoted_sha256 == served_sha256
        and handed_off_sha256 != served_sha256
    )


def handoff_values(
    *, uri: str, sha256: str, adapter_name: str, source: str, promoted_at: str
) -> dict[str, str]:
    """What ${...} in a patch stands for (api.handoff.PLACEHOLDERS documents each)."""
    return {
        "uri": uri,
        "sha256": sha256,
        "sha12": sha256[:12],
        "adapterName": adapter_name,
        "source": source,
        "promotedAt": promoted_at,
    }


def render(value: Any, values: Mapping[str, str]) -> Any:
    """The patch with every ${name} in its strings replaced (keys are left as written)."""
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda m: values[m.group(1)], value)
    if isinstance(value, dict):
        return {k: render(v, values) for k, v in value.items()}
    if isinstance(value, list):
        return [render(v, values) for v in value]
    return value


@dataclass(frozen=True)
class HandoffPatch:
    api_version: str
    kind: str
    name: str
    body: Mapping[str, Any]

    @property
    def label(self) -> str:
        return f"{self.api_version} {self.kind}/{self.name}"


def handoff_patches(
    targets: Sequence[HandoffTarget], values: Mapping[str, str]
) -> list[HandoffPatch]:
    return [HandoffPatch(t.api_version, t.kind, t.name, render(t.patch, values)) for t in targets]
