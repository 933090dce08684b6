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
        # Waiting objects, each with the context of its latest event: kopf's event
        # posting reads the operator's settings and event queue from context variables.
        self._waiting: dict[ObjectKey, contextvars.Context] = {}
        self._running: set[ObjectKey] = set()
        self._closed = False

    def add(self, key: ObjectKey, *, new: bool = False) -> None:
        """Mark the object as needing a reconcile. `new`: it was never reconciled."""
        context = contextvars.copy_context()
        with self._changed:
            if self._closed:
                return
            already_waiting = key in self._waiting
            self._waiting[key] = context
            if already_waiting or key in self._running:
                return  # queued once already, or queued again when its reconcile ends
            (self._new if new else self._known).append(key)
            self._changed.notify()

    def take(self) -> tuple[ObjectKey, contextvars.Context] | None:
        """The next object to reconcile, blocking until there is one; None once closed."""
        with self._changed:
            while not self._closed and not (self._new or self._known):
                self._changed.wait()
            if self._closed:
                return None
            key = (self._new or self._known).popleft()
            self._running.add(key)
            return key, self._waiting.pop(key)

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


class Workers:
    """Threads that take objects from the queue and reconcile them."""

    def __init__(
        self, queue: WorkQueue, reconcile: Callable[[ObjectKey], None], count: int
    ) -> None:
        self._queue = queue
        self._reconcile = reconcile
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
        while (taken := self._queue.take()) is not None:
            key, context = taken
            try:
                context.run(self._reconcile, key)
            except Exception:
                # The object waits for its next event or tick, as a failed kopf handler would.
                log.exception("%s %s/%s: reconcile failed", key.kind, key.namespace, key.name)
            finally:
                self._queue.done(key)
