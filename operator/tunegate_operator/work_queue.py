"""The queue of objects waiting for a reconcile, with client-go's workqueue guarantees.

kopf hands a handler every watch event, one after another per object, each carrying a
whole body. A reconcile reads the object afresh, so all but the newest of those events
are wasted work, and under load they pile up in memory. Here an event only marks its
object as waiting:

- an object waits at most once, however many events arrive for it;
- it is never reconciled by two workers at once;
- an event during its reconcile makes it wait once more, so nothing is missed;
- objects never reconciled yet go first: their first reconcile creates their first
  Job, while a later one of another object can wait a little.
"""

from __future__ import annotations

import contextvars
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger("tunegate")


@dataclass(frozen=True)
class ObjectKey:
    kind: str  # "FineTuneJob" or "EvalGate"
    namespace: str
    name: str
    uid: str


class WorkQueue:
    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._new: deque[ObjectKey] = deque()
        self._known: deque[ObjectKey] = deque()
        self._waiting: set[ObjectKey] = set()
        self._running: set[ObjectKey] = set()
        self._closed = False

    def add(self, key: ObjectKey, *, new: bool = False) -> None:
        """Mark the object as needing a reconcile. `new`: it was never reconciled."""
        with self._changed:
            if self._closed:
                return
            already_waiting = key in self._waiting
            self._waiting.add(key)
            if already_waiting or key in self._running:
                return  # queued once already, or queued again when its reconcile ends
            (self._new if new else self._known).append(key)
            self._changed.notify()

    def take(self) -> ObjectKey | None:
        """The next object to reconcile, blocking until there is one; None once closed."""
        with self._changed:
            while not self._closed and not (self._new or self._known):
                self._changed.wait()
            if self._closed:
                return None
            key = (self._new or self._known).popleft()
            self._waiting.discard(key)
            self._running.add(key)
            return key

    def done(self, key: ObjectKey) -> None:
        """The reconcile of key ended; an event that came meanwhile queues it again."""
        with self._changed:
            self._running.discard(key)
            if key in self._waiting and not self._closed:
                self._known.append(key)
                self._changed.notify()

    def depth(self) -> int:
        with self._changed:
            return len(self._new) + len(self._known)

    def close(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()


class HandlerContext:
    """The context variables of a kopf handler, for our threads: kopf's event posting
    reads the operator's settings and event queue from them. Their values are the same
    for every object, so the latest handler's serve."""

    def __init__(self) -> None:
        self._latest: contextvars.Context | None = None

    def remember(self) -> None:
        self._latest = contextvars.copy_context()

    def copy(self) -> contextvars.Context:
        # A context is entered by one thread at a time: each reconcile gets a copy.
        latest = self._latest
        return latest.copy() if latest is not None else contextvars.copy_context()


class Workers:
    """Threads that take objects from the queue and reconcile them."""

    def __init__(
        self,
        queue: WorkQueue,
        reconcile: Callable[[ObjectKey], None],
        count: int,
        context: HandlerContext | None = None,
    ) -> None:
        self._queue = queue
        self._reconcile = reconcile
        self._context = context or HandlerContext()
        self._threads = [
            threading.Thread(target=self._loop, name=f"reconcile-{i}", daemon=True)
            for i in range(count)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float) -> None:
        """Take nothing more; wait up to `timeout` for the reconciles under way."""
        self._queue.close()
        for thread in self._threads:
            thread.join(timeout / len(self._threads))

    def _loop(self) -> None:
        while (key := self._queue.take()) is not None:
            try:
                self._context.copy().run(self._reconcile, key)
            except Exception:
                # The object waits for its next event or tick, as a failed kopf handler would.
                log.exception("%s %s/%s: reconcile failed", key.kind, key.namespace, key.name)
            finally:
                self._queue.done(key)


class ReconcileClock:
    """When each object's latest reconcile started."""

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


class Ticker:
    """Queues each tracked object once it has gone `interval` seconds without a
    reconcile: what pods write to S3 raises no watch event, nor does a deadline coming
    due. One thread for all objects; an event-driven reconcile postpones the tick."""

    def __init__(
        self,
        queue: WorkQueue,
        clock: ReconcileClock,
        interval: float,
        may_act: Callable[[str], bool] = lambda namespace: True,
    ) -> None:
        """may_act(namespace): False while kopf's peering has paused this replica there,
        as kopf's own timers would then be stopped."""
        self._queue = queue
        self._clock = clock
        self._interval = interval
        self._may_act = may_act
        self._tracked: dict[str, ObjectKey] = {}
        self._guard = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="ticker", daemon=True)

    def track(self, key: ObjectKey, *, ticking: bool) -> None:
        with self._guard:
            if ticking:
                self._tracked[key.uid] = key
            else:
                self._tracked.pop(key.uid, None)

    def tracked(self) -> list[ObjectKey]:
        with self._guard:
            return list(self._tracked.values())

    def queue_due(self) -> int:
        """Queue the tracked objects not reconciled for `interval`; how many were."""
        due = [
            key for key in self.tracked() if not self._clock.recent(key.uid, within=self._interval)
        ]
        acting = {namespace: self._may_act(namespace) for namespace in {k.namespace for k in due}}
        due = [key for key in due if acting[key.namespace]]
        for key in due:
            self._queue.add(key)
        return len(due)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()

    def _loop(self) -> None:
        # Checking ten times per interval spreads the ticks out as reconciles were.
        while not self._stopped.wait(self._interval / 10):
            self.queue_due()
