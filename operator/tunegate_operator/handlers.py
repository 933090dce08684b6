"""kopf handlers: thin. Run with `kopf run -m tunegate_operator.handlers --all-namespaces`.

Every handler funnels into one level-triggered reconcile per FineTuneJob: on any
watch event of the object or of its Jobs, and on a timer (progress, retries,
deadlines, TTL). A per-object lock keeps two of them from overlapping.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections import defaultdict
from datetime import datetime
from typing import Any, cast

import kopf
from pydantic import ValidationError

from tunegate_operator import metrics
from tunegate_operator.api.common import GROUP, VERSION
from tunegate_operator.builders.eval_job import GATE_LABEL
from tunegate_operator.builders.jobs import FTJ_LABEL
from tunegate_operator.k8s_io import Kube
from tunegate_operator.reconcile import reconcile
from tunegate_operator.reconcile_gate import reconcile_gate
from tunegate_operator.s3_io import StorageError
from tunegate_operator.settings import Settings, load_settings

FTJ = (GROUP, VERSION, "finetunejobs")
EVG = (GROUP, VERSION, "evalgates")
log = logging.getLogger("tunegate")
_locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
_state: dict[str, Any] = {}


def _kube() -> Kube:
    if "kube" not in _state:
        _state["kube"] = Kube()
    return _state["kube"]  # type: ignore[no-any-return]


def _settings() -> Settings:
    if "settings" not in _state:
        _state["settings"] = load_settings()
    return _state["settings"]  # type: ignore[no-any-return]


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our CRDs have structural status schemas: keep kopf's bookkeeping in annotations.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration"
    )
    settings.peering.name = os.environ.get("TUNEGATE_PEERING_NAME", "tunegate")
    settings.peering.clusterwide = os.environ.get("TUNEGATE_PEERING_CLUSTERWIDE", "true") == "true"
    settings.peering.mandatory = os.environ.get("TUNEGATE_PEERING_MANDATORY", "false") == "true"
    # Equal priorities make every replica pause; a random one lets exactly one act.
    settings.peering.priority = random.randint(1, 1_000_000)
    settings.posting.reporting_component = "tunegate-operator"
    settings.execution.max_workers = int(os.environ.get("TUNEGATE_WORKERS", "8"))
    # Client libraries log requests and bodies at DEBUG; they must never reach our logs.
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "kubernetes"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _settings()
    metrics.serve(int(os.environ.get("TUNEGATE_METRICS_PORT", "8080")))


def _run(body: kopf.Body | dict[str, Any]) -> None:
    meta = body["metadata"]
    uid = meta["uid"]
    with _locks[uid]:
        kube = _kube()
        fresh = kube.read_ftj(meta["namespace"], meta["name"])
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            metrics.PHASES.forget(uid)
            return
        try:
            outcome = reconcile(
                fresh,
                kube=kube,
                settings=_settings(),
                emit=lambda e: kopf.event(
                    cast(kopf.Body, fresh), type=e.type, reason=e.reason, message=e.message
                ),
            )
        except ValidationError as exc:
            metrics.RECONCILE_ERRORS.labels("FineTuneJob", "InvalidSpec").inc()
            log.warning("finetunejob %s: invalid spec: %s", meta["name"], exc)
            kopf.event(
                cast(kopf.Body, fresh),
                type="Warning",
                reason="InvalidSpec",
                message=str(exc)[:1000],
            )
            return
        except StorageError as exc:
            metrics.RECONCILE_ERRORS.labels("FineTuneJob", "StorageUnavailable").inc()
            log.warning("finetunejob %s: %s", meta["name"], exc)
            kopf.event(
                cast(kopf.Body, fresh),
                type="Warning",
                reason="StorageUnavailable",
                message=str(exc),
            )
            return
        except Exception:
            metrics.RECONCILE_ERRORS.labels("FineTuneJob", "Unexpected").inc()
            raise
        decision = outcome.decision
        metrics.PHASES.set(uid, decision.phase)
        if outcome.previous_phase != decision.phase:
            log.info(
                "finetunejob %s/%s: %s -> %s",
                meta["namespace"],
                meta["name"],
                outcome.previous_phase or "(new)",
                decision.phase,
            )
        _observe_apply_to_pod(fresh, kube)


def _observe_apply_to_pod(body: dict[str, Any], kube: Kube) -> None:
    meta, status = body["metadata"], body.get("status") or {}
    if status.get("attempts") != 1 or meta["uid"] in metrics._observed_pods:
        return
    first = kube.first_pod_started(meta["namespace"], f"{meta['name']}-train-1")
    if first is None:
        return
    created = datetime.fromisoformat(meta["creationTimestamp"].replace("Z", "+00:00"))
    metrics.observe_first_pod(meta["uid"], (first - created).total_seconds())


@kopf.on.event(*FTJ)
def finetunejob_changed(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    if event.get("type") == "DELETED":
        metrics.PHASES.forget(body["metadata"]["uid"])
        return
    _run(body)


@kopf.timer(*FTJ, interval=5.0, sharp=False)
def finetunejob_tick(body: kopf.Body, **_: Any) -> None:
    _run(body)


@kopf.on.event("batch", "v1", "jobs", labels={FTJ_LABEL: kopf.PRESENT})
def child_job_changed(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    for owner in body["metadata"].get("ownerReferences") or []:
        if owner.get("kind") == "FineTuneJob" and namespace:
            _run({"metadata": {"uid": owner["uid"], "name": owner["name"], "namespace": namespace}})


def _run_gate(namespace: str, name: str, uid: str) -> None:
    with _locks[uid]:
        kube = _kube()
        fresh = kube.read_custom("evalgates", namespace, name)
        if fresh is None or fresh["metadata"].get("deletionTimestamp"):
            return
        body = cast(kopf.Body, fresh)
        try:
            outcome = reconcile_gate(
                fresh,
                kube=kube,
                settings=_settings(),
                emit=lambda e: kopf.event(body, type=e.type, reason=e.reason, message=e.message),
            )
        except ValidationError as exc:
            metrics.RECONCILE_ERRORS.labels("EvalGate", "InvalidSpec").inc()
            log.warning("evalgate %s/%s: invalid spec: %s", namespace, name, exc)
            kopf.event(body, type="Warning", reason="InvalidSpec", message=str(exc)[:1000])
            return
        except StorageError as exc:
            metrics.RECONCILE_ERRORS.labels("EvalGate", "StorageUnavailable").inc()
            log.warning("evalgate %s/%s: %s", namespace, name, exc)
            kopf.event(body, type="Warning", reason="StorageUnavailable", message=str(exc))
            return
        except Exception:
            metrics.RECONCILE_ERRORS.labels("EvalGate", "Unexpected").inc()
            raise
        if outcome.previous_phase != outcome.decision.phase:
            reason = (outcome.decision.status.get("decision") or {}).get("reason", "")
            log.info(
                "evalgate %s/%s: %s -> %s %s",
                namespace,
                name,
                outcome.previous_phase or "(new)",
                outcome.decision.phase,
                reason,
            )


@kopf.on.event(*EVG)
def evalgate_changed(event: kopf.RawEvent, body: kopf.Body, **_: Any) -> None:
    if event.get("type") != "DELETED":
        meta = body["metadata"]
        _run_gate(meta["namespace"], meta["name"], meta["uid"])


@kopf.timer(*EVG, interval=5.0, sharp=False)
def evalgate_tick(body: kopf.Body, **_: Any) -> None:
    meta = body["metadata"]
    _run_gate(meta["namespace"], meta["name"], meta["uid"])


@kopf.on.event("batch", "v1", "jobs", labels={GATE_LABEL: kopf.PRESENT})
def gate_job_changed(body: kopf.Body, namespace: str | None, **_: Any) -> None:
    for owner in body["metadata"].get("ownerReferences") or []:
        if owner.get("kind") == "EvalGate" and namespace:
            _run_gate(namespace, owner["name"], owner["uid"])
