"""Asks kopf's peering object whether this replica may act, for the ticker.

kopf pauses its own watches when another replica wins the peering; our ticker is not
kopf's, so it asks the same object, at most once per CACHE_SECONDS per peering scope.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC, datetime

from tunegate_operator.decisions.peering import may_act
from tunegate_operator.k8s_io import Kube
from tunegate_operator.settings import Settings

log = logging.getLogger("tunegate")
CACHE_SECONDS = 5.0


class PeeringGate:
    def __init__(self, kube: Kube, settings: Settings, own_priority: int) -> None:
        self._kube = kube
        self._settings = settings
        self._priority = own_priority
        # scope (None: cluster-wide) -> (asked at, answer)
        self._answers: dict[str | None, tuple[float, bool]] = {}
        self._guard = threading.Lock()

    def may_act(self, namespace: str) -> bool:
        scope = None if self._settings.peering_clusterwide else namespace
        with self._guard:
            asked_at, answer = self._answers.get(scope, (float("-inf"), False))
        if time.monotonic() - asked_at < CACHE_SECONDS:
            return answer
        try:
            status = self._kube.peering_status(self._settings.peering_name, scope)
        except Exception as exc:  # the API is unreachable: keep the last answer a while
            log.warning("peering %s: %s", self._settings.peering_name, type(exc).__name__)
            return answer
        answer = may_act(
            status,
            own_priority=self._priority,
            mandatory=self._settings.peering_mandatory,
            now=datetime.now(UTC),
        )
        with self._guard:
            self._answers[scope] = (time.monotonic(), answer)
        return answer
