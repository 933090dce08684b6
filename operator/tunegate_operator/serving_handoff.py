"""Telling serving which version the promotion pointer serves (I/O): the ConfigMap,
then each promotion.handoff target, merge-patched through the API server."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from tunegate_contract.base import rfc3339
from tunegate_operator.api.evalgate import PromotionSpec
from tunegate_operator.decisions.conditions import Cond
from tunegate_operator.decisions.handoff import handoff_patches, handoff_values
from tunegate_operator.decisions.vocabulary import Event
from tunegate_operator.k8s_io import HandoffError, Kube
from tunegate_operator.promotion import Promoted


@dataclass(frozen=True)
class HandoffOutcome:
    status: dict[str, Any] | None  # the new status.handoff; None when a target refused
    condition: Cond
    event: Event


def hand_off(
    kube: Kube,
    *,
    namespace: str,
    gate_name: str,
    promotion: PromotionSpec,
    served: Promoted,
    now: datetime,
) -> HandoffOutcome:
    values = handoff_values(
        uri=served.uri,
        sha256=served.sha256,
        adapter_name=promotion.adapter_name or gate_name,
        source=served.source,
        promoted_at=served.at,
    )
    told: list[str] = []
    try:
        if promotion.config_map:
            kube.upsert_config_map(namespace, promotion.config_map, served.serving_record())
            told.append(f"v1 ConfigMap/{promotion.config_map}")
        for patch in handoff_patches(promotion.handoff, values):
            kube.merge_patch(patch.api_version, patch.kind, namespace, patch.name, patch.body)
            told.append(patch.label)
    except HandoffError as exc:
        message = f"serving is not yet told about {served.sha256[:12]}: {exc} (retried)"
        return HandoffOutcome(
            None,
            Cond("HandedOff", "False", "HandoffFailed", message),
            Event("Warning", "HandoffFailed", message),
        )
    message = f"{', '.join(told)} name {served.uri} (sha256 {served.sha256[:12]})"
    return HandoffOutcome(
        {"sha256": served.sha256, "at": rfc3339(now), "targets": told},
        Cond("HandedOff", "True", "HandedOff", message),
        Event("Normal", "HandedOff", message),
    )
