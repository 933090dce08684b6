"""Prometheus metrics of the operator."""

from __future__ import annotations

from collections.abc import Iterator
from threading import Lock

from prometheus_client import Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import REGISTRY, GaugeMetricFamily
from prometheus_client.registry import Collector

RECONCILE_ERRORS = Counter(
    "tunegate_reconcile_errors_total", "Reconciliations that raised", ["kind", "reason"]
)
RECONCILES = Counter("tunegate_reconciles_total", "Reconciliations run", ["kind"])
API_REQUESTS = Counter(
    "tunegate_api_requests_total",
    "Requests the reconcilers sent to the Kubernetes API (kopf's watches not included)",
    ["verb"],
)
QUEUE_DEPTH = Gauge(
    "tunegate_work_queue_depth", "Objects waiting for a reconcile (not counting those under way)"
)
APPLY_TO_POD = Histogram(
    "tunegate_apply_to_pod_seconds",
    "From FineTuneJob creation to its first training pod existing",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800),
)


class PhaseGauge(Collector):
    """FineTuneJobs by phase, from the operator's latest view of each object."""

    def __init__(self) -> None:
        self._phases: dict[str, str] = {}
        self._lock = Lock()

    def set(self, uid: str, phase: str) -> None:
        with self._lock:
            self._phases[uid] = phase

    def forget(self, uid: str) -> None:
        with self._lock:
            self._phases.pop(uid, None)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "tunegate_finetunejobs", "FineTuneJobs by phase", labels=["phase"]
        )
        with self._lock:
            counts: dict[str, int] = {}
            for phase in self._phases.values():
                counts[phase] = counts.get(phase, 0) + 1
        for phase, count in sorted(counts.items()):
            family.add_metric([phase], count)
        yield family


PHASES = PhaseGauge()
REGISTRY.register(PHASES)
_observed_pods: set[str] = set()


def observe_first_pod(uid: str, seconds: float) -> None:
    if uid in _observed_pods:
        return
    _observed_pods.add(uid)
    APPLY_TO_POD.observe(seconds)


def serve(port: int) -> None:
    if port:
        start_http_server(port)
