"""kopf handlers: thin. Run with `kopf run -m tunegate_operator.handlers --all-namespaces`.

Every handler funnels into one level-triggered reconcile per FineTuneJob: on any
watch event of the object or of its Jobs, and on a timer (progress, retries,
deadlines, TTL). A per-object lock keeps two of them from overlapping.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, cast

import kopf
from pydantic import ValidationError

from tunegate_contract.base import DocumentError, parse_rfc3339
from tunegate_operator import metrics
from tunegate_operator.api.common import GROUP, VERSION
from tunegate_operator.api.names import FTJ_LABEL, GATE_LABEL
from tunegate_operator.decisions.finetunejob import needs_ticks
from tunegate_operator.decisions.vocabulary import Event
from tunegate_operator.k8s_io import Kube
from tunegate_operator.reconcile_evalgate import reconcile_evalgate
from tunegate_operator.reconcile_finetunejob import reconcile_finetunejob
from tunegate_operator.s3_io import StorageError
from tunegate_operator.settings import Settings, load_settings

FTJ = (GROUP, VERSION, "finetunejobs")
# How often an unfinished object is looked at without an event (S3 has no watch).
TICK_SECONDS = 5.0
EVG = (GROUP, VERSION, "evalgates")
log = logging.getLogger("tunegate")


class ObjectLocks:
    """One lock per object, so two reconciles of it never overlap; forgotten when the
    object is deleted."""

    def __init__(self) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()

    def __call__(self, uid: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(uid, threading.Lock())

    def forget(self, uid: str) -> None:
        with self._guard:
            self._locks.pop(uid, None)


class ReconcileClock:
    """When each object was last reconciled. A timer tick soon after an event-driven
    reconcile would read the same state again, so it is skipped: at a thousand objects
    those ticks crowd out the events of new ones."""

    def __init__(self) -> None:
        self._at: dict[str, float] = {}
        self._guard = threading.Lock()

    def mark(self, uid: str) -> None:
        with self._guard:
            self._at[uid] = time.monotonic()

    def recent(self, uid: str, *, within: float) -> bool:
        with self._guard:
            at = self._at.get(uid)
        return at is not None and time.monotonic() - at < within

    def forget(self, uid: str) -> None:
        with self._guard:
            self._at.pop(uid, None)


@dataclass(frozen=True)
class Runtime:
    """The operator's state, kept in kopf's memo (shared by every object's handlers)."""

    settings: Settings
    kube: Kube
    locks: ObjectLocks
    clock: ReconcileClock


def _runtime(memo: kopf.Memo) -> Runtime:
    return cast(Runtime, memo["tunegate"])


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our CRDs have structural status schemas: keep kopf's bookkeeping in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    ours = load_settings()
    memo["tunegate"] = Runtime(ours, Kube(), ObjectLocks(), ReconcileClock())
    settings.peering.name = ours.peering_name
    settings.peering.clusterwide = ours.peering_clusterwide
    settings.peering.mandatory = ours.peering_mandatory
    # Equal priorities make every replica pause; a random one lets exactly one act.
    settings.peering.priority = random.randint(1, 1_000_000)
    # A replica killed without notice stays "alive" in the peering object this long;
    # a lower-priority successor pauses until it expires.
    settings.peering.lifetime = ours.peering_lifetime_seconds
    settings.posting.reporting_component = "tunegate-operator"
    settings.execution.max_workers = ours.workers
    # Client libraries log requests and bodies at DEBUG; they must never reach our logs.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    metrics.serve(ours.metrics_port)


@contextmanager
def _reported_failures(kind: str, body: dict[str, Any]) -> Iterator[None]:
    """Bad specs, malformed S3 documents and unreachable storage become a Warning event
    (and a metric), not a crash; anything else is counted and re-raised for kopf."""
    meta = body["metadata"]
    try:
        yield
    except (ValidationError, StorageError, DocumentError) as exc:
        reason = (
            "InvalidSpec"
            if isinstance(exc, ValidationError)
            else "MalformedDocument"
            if isinstance(exc, DocumentError)
            else "StorageUnavailable"
        )
        metrics.RECONCILE_ERRORS.labels(kind, reason).inc()
        log.warning("%s %s/%s: %s: %s", kind, meta["namespace"], meta["name"], reason, exc)
        kopf.event(cast(kopf.Body, body), type="Warning", reason=reason, message=str(exc)[:1000])
    except Exception:
        metrics.RECONCILE_ERRORS.labels(kind, "Unexpected").inc()
        raise


def _emitter(body: dict[str, Any]) -> Callable[[Event], None]:
    return lambda e: kopf.event(
        cast(kopf.Body, body), type=e.type, reason=e.reason, message=e.message
    )


def _log_transition(
    kind: str, meta: Mapping[str, Any], previous: str | None, phase: str, reason: str = ""
) -> None:
    if previous != phase:
        log.info(
            "%s %s/%s: %s -> %s %s",
            kind,
            meta["namespace"],
            meta["name"],
            previous or "(new)",
            phase,
            reason,
        )


def _run(body: kopf.Body | dict[str, Any], runtime: Runtime) -> None:
    meta = body["metadata"]
    uid = meta["uid"]
    with runtime.locks(uid):
        runtime.clock.mark(uid)
        metrics.RECONCILES.labels("FineTuneJob").inc()
        kube = runtime.kube
        fresh = kube.read_ftj(meta["namespace"], meta["name"])
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            metrics.PHASES.forget(uid)
            return
        with _reported_failures("FineTuneJob", fresh):
            outcome = reconcile_finetunejob(
                fresh, kube=kube, settings=runtime.settings, emit=_emitter(fresh)
            )
            metrics.PHASES.set(uid, outcome.decision.phase)
            _log_transition(
                "finetunejob", fresh["metadata"], outcome.previous_phase, outcome.decision.phase
            )
            _observe_apply_to_pod(fresh, kube)


def _observe_apply_to_pod(body: dict[str, Any], kube: Kube) -> None:
    meta, status = body["metadata"], body.get("status") or {}
    if status.get("attempts") != 1 or meta["uid"] in metrics._observed_pods:
        return
    first = kube.first_pod_started(meta["namespace"], f"{meta['name']}-train-1")
    if first is None:
        return
    created = parse_rfc3339(meta["creationTimestamp"])
    metrics.observe_first_pod(meta["uid"], (first - created).total_seconds())


@kopf.on.event(*FTJ)
def finetunejob_changed(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    if event.get("type") == "DELETED":
        metrics.PHASES.forget(body["metadata"]["uid"])
        _runtime(memo).locks.forget(body["metadata"]["uid"])
        _runtime(memo).clock.forget(body["metadata"]["uid"])
        return
    _run(body, _runtime(memo))


def _ftj_needs_ticks(spec: kopf.Spec, status: kopf.Status, **_: Any) -> bool:
    # kopf stops the timer when this turns false and starts it again when it turns true.
    return needs_ticks(spec, status)


@kopf.timer(*FTJ, interval=TICK_SECONDS, sharp=False, when=_ftj_needs_ticks)
def finetunejob_tick(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    runtime = _runtime(memo)
    if not runtime.clock.recent(body["metadata"]["uid"], within=TICK_SECONDS / 2):
        _run(body, runtime)


@kopf.on.event("batch", "v1", "jobs", labels={FTJ_LABEL: kopf.PRESENT})
def child_job_changed(body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    for owner in body["metadata"].get("ownerReferences") or []:
        if owner.get("kind") == "FineTuneJob" and namespace:
            ref = {"metadata": {"uid": owner["uid"], "name": owner["name"], "namespace": namespace}}
            _run(ref, _runtime(memo))


def _run_gate(namespace: str, name: str, uid: str, runtime: Runtime) -> None:
    with runtime.locks(uid):
        runtime.clock.mark(uid)
        metrics.RECONCILES.labels("EvalGate").inc()
        kube = runtime.kube
        fresh = kube.read_custom("evalgates", namespace, name)
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return
        with _reported_failures("EvalGate", fresh):
            outcome = reconcile_evalgate(
                fresh, kube=kube, settings=runtime.settings, emit=_emitter(fresh)
            )
            reason = (outcome.decision.status.get("decision") or {}).get("reason", "")
            _log_transition(
                "evalgate",
                fresh["metadata"],
                outcome.previous_phase,
                outcome.decision.phase,
                reason,
            )


@kopf.on.event(*EVG)
def evalgate_changed(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    meta = body["metadata"]
    if event.get("type") == "DELETED":
        _runtime(memo).locks.forget(meta["uid"])
        _runtime(memo).clock.forget(meta["uid"])
        return
    _run_gate(meta["namespace"], meta["name"], meta["uid"], _runtime(memo))


@kopf.timer(*EVG, interval=TICK_SECONDS, sharp=False)
def evalgate_tick(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    meta, runtime = body["metadata"], _runtime(memo)
    if not runtime.clock.recent(meta["uid"], within=TICK_SECONDS / 2):
        _run_gate(meta["namespace"], meta["name"], meta["uid"], runtime)


@kopf.on.event("batch", "v1", "jobs", labels={GATE_LABEL: kopf.PRESENT})
def gate_job_changed(body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any) -> None:
    for owner in body["metadata"].get("ownerReferences") or []:
        if owner.get("kind") == "EvalGate" and namespace:
            _run_gate(namespace, owner["name"], owner["uid"], _runtime(memo))
