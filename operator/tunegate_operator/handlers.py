"""kopf handlers: thin. Run with `kopf run -m tunegate_operator.handlers --all-namespaces`.

Every handler only queues its object (work_queue.py) for one level-triggered reconcile:
on any watch event of the object or of its Jobs, and on a timer (progress, retries,
deadlines, TTL). Worker threads reconcile what waits, never one object twice at once.
"""

from __future__ import annotations

import logging
import random
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
from tunegate_operator.malloc_arenas import cap_malloc_arenas
from tunegate_operator.peering_gate import PeeringGate
from tunegate_operator.reconcile_evalgate import reconcile_evalgate
from tunegate_operator.reconcile_finetunejob import reconcile_finetunejob
from tunegate_operator.s3_io import StorageError
from tunegate_operator.settings import Settings, load_settings
from tunegate_operator.work_queue import (
    HandlerContext,
    ObjectKey,
    ReconcileClock,
    Ticker,
    Workers,
    WorkQueue,
)

# Before kopf starts its threads: arenas are made when threads first allocate.
cap_malloc_arenas()
FTJ = (GROUP, VERSION, "finetunejobs")
# How long an unfinished object goes without a reconcile (S3 has no watch). Our own
# ticker, not kopf's timers: those keep a parsed body and a finalizer on every object.
TICK_SECONDS = 5.0
EVG = (GROUP, VERSION, "evalgates")
# How long a stopping operator waits for the reconciles under way.
STOP_SECONDS = 10.0
log = logging.getLogger("tunegate")


@dataclass(frozen=True)
class Runtime:
    """The operator's state, kept in kopf's memo (shared by every object's handlers)."""

    settings: Settings
    kube: Kube
    queue: WorkQueue
    workers: Workers
    clock: ReconcileClock
    ticker: Ticker
    handler_context: HandlerContext


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime = cast(Runtime, memo["tunegate"])
    runtime.handler_context.remember()
    return runtime


def _new_runtime(settings: Settings, priority: int) -> Runtime:
    kube, queue, clock, context = Kube(), WorkQueue(), ReconcileClock(), HandlerContext()
    ticker = Ticker(queue, clock, TICK_SECONDS, PeeringGate(kube, settings, priority).may_act)

    def reconcile(key: ObjectKey) -> None:
        _reconcile(key, kube, settings, clock, ticker)

    workers = Workers(queue, reconcile, settings.workers, context)
    return Runtime(settings, kube, queue, workers, clock, ticker, context)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Our CRDs have structural status schemas: keep kopf's bookkeeping in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    ours = load_settings()
    # Equal priorities make every replica pause; a random one lets exactly one act.
    priority = random.randint(1, 1_000_000)
    runtime = _new_runtime(ours, priority)
    memo["tunegate"] = runtime
    settings.peering.name = ours.peering_name
    settings.peering.clusterwide = ours.peering_clusterwide
    settings.peering.mandatory = ours.peering_mandatory
    settings.peering.priority = priority
    # A replica killed without notice stays "alive" in the peering object this long;
    # a lower-priority successor pauses until it expires.
    settings.peering.lifetime = ours.peering_lifetime_seconds
    settings.posting.reporting_component = "tunegate-operator"
    # Our handlers only queue objects; kopf's threads run this startup handler alone.
    settings.execution.max_workers = 1
    # Client libraries log requests and bodies at DEBUG; they must never reach our logs.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    metrics.QUEUE_DEPTH.set_function(runtime.queue.depth)
    metrics.serve(ours.metrics_port)
    runtime.workers.start()
    runtime.ticker.start()


@kopf.on.cleanup()
def stop_workers(memo: kopf.Memo, **_: Any) -> None:
    # A reconcile cut short is repeated by the next operator: each one is idempotent.
    _runtime(memo).ticker.stop()
    _runtime(memo).workers.stop(timeout=STOP_SECONDS)


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


def _reconcile(
    key: ObjectKey, kube: Kube, settings: Settings, clock: ReconcileClock, ticker: Ticker
) -> None:
    clock.mark(key.uid)
    metrics.RECONCILES.labels(key.kind).inc()
    ticking = True  # kept on while a reconcile fails, so it is tried again
    try:
        if key.kind == "FineTuneJob":
            ticking = _run(key, kube, settings)
        else:
            ticking = _run_gate(key, kube, settings)
    finally:
        ticker.track(key, ticking=ticking)


def _run(key: ObjectKey, kube: Kube, settings: Settings) -> bool:
    """Reconcile a FineTuneJob; whether it needs ticks from now on."""
    fresh = kube.read_ftj(key.namespace, key.name)
    if fresh is None or fresh["metadata"].get("deletionTimestamp"):
        metrics.PHASES.forget(key.uid)
        return False
    if fresh["metadata"]["uid"] != key.uid:
        return False  # deleted and made again under its name: the new one is queued itself
    with _reported_failures("FineTuneJob", fresh):
        outcome = reconcile_finetunejob(fresh, kube=kube, settings=settings, emit=_emitter(fresh))
        metrics.PHASES.set(key.uid, outcome.decision.phase)
        _log_transition(
            "finetunejob", fresh["metadata"], outcome.previous_phase, outcome.decision.phase
        )
        _observe_apply_to_pod(fresh, kube)
        return needs_ticks(fresh["spec"], {"phase": outcome.decision.phase})
    return True


def _observe_apply_to_pod(body: dict[str, Any], kube: Kube) -> None:
    meta, status = body["metadata"], body.get("status") or {}
    if status.get("attempts") != 1 or meta["uid"] in metrics._observed_pods:
        return
    first = kube.first_pod_started(meta["namespace"], f"{meta['name']}-train-1")
    if first is None:
        return
    created = parse_rfc3339(meta["creationTimestamp"])
    metrics.observe_first_pod(meta["uid"], (first - created).total_seconds())


def _run_gate(key: ObjectKey, kube: Kube, settings: Settings) -> bool:
    """Reconcile an EvalGate; whether it needs ticks (always: re-evaluation is scheduled)."""
    fresh = kube.read_custom("evalgates", key.namespace, key.name)
    if fresh is None or fresh["metadata"].get("deletionTimestamp"):
        return False
    if fresh["metadata"]["uid"] != key.uid:
        return False
    with _reported_failures("EvalGate", fresh):
        outcome = reconcile_evalgate(fresh, kube=kube, settings=settings, emit=_emitter(fresh))
        reason = (outcome.decision.status.get("decision") or {}).get("reason", "")
        _log_transition(
            "evalgate", fresh["metadata"], outcome.previous_phase, outcome.decision.phase, reason
        )
    return True


def _key(kind: str, meta: Mapping[str, Any]) -> ObjectKey:
    return ObjectKey(kind, meta["namespace"], meta["name"], meta["uid"])


def _never_reconciled(body: Mapping[str, Any]) -> bool:
    return not (body.get("status") or {}).get("phase")


def _forget(runtime: Runtime, key: ObjectKey) -> None:
    metrics.PHASES.forget(key.uid)
    runtime.clock.forget(key.uid)
    runtime.ticker.track(key, ticking=False)


# The handlers are coroutines: queueing an object must not wait for a thread.


@kopf.on.event(*FTJ)
async def finetunejob_changed(
    event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    runtime, key = _runtime(memo), _key("FineTuneJob", body["metadata"])
    if event.get("type") == "DELETED":
        _forget(runtime, key)
        return
    runtime.queue.add(key, new=_never_reconciled(body))


def _queue_owners(kind: str, body: kopf.Body, namespace: str | None, runtime: Runtime) -> None:
    for owner in body["metadata"].get("ownerReferences") or []:
        if owner.get("kind") == kind and namespace:
            runtime.queue.add(ObjectKey(kind, namespace, owner["name"], owner["uid"]))


@kopf.on.event("batch", "v1", "jobs", labels={FTJ_LABEL: kopf.PRESENT})
async def child_job_changed(
    body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    _queue_owners("FineTuneJob", body, namespace, _runtime(memo))


@kopf.on.event(*EVG)
async def evalgate_changed(
    event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any
) -> None:
    runtime, key = _runtime(memo), _key("EvalGate", body["metadata"])
    if event.get("type") == "DELETED":
        _forget(runtime, key)
        return
    runtime.queue.add(key, new=_never_reconciled(body))


@kopf.on.event("batch", "v1", "jobs", labels={GATE_LABEL: kopf.PRESENT})
async def gate_job_changed(
    body: kopf.Body, namespace: str | None, memo: kopf.Memo, **_: Any
) -> None:
    _queue_owners("EvalGate", body, namespace, _runtime(memo))
