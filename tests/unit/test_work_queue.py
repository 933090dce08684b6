"""The reconcile queue: events collapse, an object is never reconciled twice at once,
an event during a reconcile is not lost, and never-reconciled objects go first."""

from __future__ import annotations

import contextvars
import threading
import time

from tunegate_operator.work_queue import (
    HandlerContext,
    ObjectKey,
    ReconcileClock,
    Ticker,
    Workers,
    WorkQueue,
)


def key(name: str) -> ObjectKey:
    return ObjectKey("FineTuneJob", "ns", name, f"uid-{name}")


def take_key(queue: WorkQueue) -> ObjectKey:
    taken = queue.take()
    assert taken is not None
    return taken


def test_many_events_of_a_waiting_object_make_one_reconcile() -> None:
    queue = WorkQueue()
    for _ in range(5):
        queue.add(key("a"))
    queue.add(key("b"))
    assert queue.depth() == 2
    assert [take_key(queue), take_key(queue)] == [key("a"), key("b")]
    assert queue.depth() == 0


def test_an_event_during_a_reconcile_queues_the_object_once_more_after_it() -> None:
    queue = WorkQueue()
    queue.add(key("a"))
    running = take_key(queue)
    queue.add(key("a"))
    queue.add(key("a"))
    assert queue.depth() == 0  # not handed to a second worker while it runs
    queue.done(running)
    assert queue.depth() == 1
    assert take_key(queue) == key("a")
    queue.done(key("a"))
    assert queue.depth() == 0


def test_a_reconcile_without_new_events_is_not_repeated() -> None:
    queue = WorkQueue()
    queue.add(key("a"))
    queue.done(take_key(queue))
    assert queue.depth() == 0


def test_never_reconciled_objects_go_before_known_ones() -> None:
    queue = WorkQueue()
    queue.add(key("old-1"))
    queue.add(key("old-2"))
    queue.add(key("new-1"), new=True)
    queue.add(key("new-2"), new=True)
    order = [take_key(queue) for _ in range(4)]
    assert order == [key("new-1"), key("new-2"), key("old-1"), key("old-2")]


def test_close_wakes_a_waiting_worker_and_refuses_more() -> None:
    queue = WorkQueue()
    result: list[object] = []
    waiter = threading.Thread(target=lambda: result.append(queue.take()))
    waiter.start()
    time.sleep(0.05)
    queue.close()
    waiter.join(timeout=5)
    assert result == [None]
    queue.add(key("a"))
    assert queue.depth() == 0


def test_workers_never_overlap_on_one_object_and_survive_a_failing_reconcile() -> None:
    queue = WorkQueue()
    inside: dict[ObjectKey, int] = {}
    overlaps: list[ObjectKey] = []
    runs: list[ObjectKey] = []
    guard = threading.Lock()

    def reconcile(k: ObjectKey) -> None:
        with guard:
            inside[k] = inside.get(k, 0) + 1
            if inside[k] > 1:
                overlaps.append(k)
            runs.append(k)
        time.sleep(0.002)
        with guard:
            inside[k] -= 1
        if k.name == "bad":
            raise RuntimeError("boom")

    workers = Workers(queue, reconcile, count=4)
    workers.start()
    names = ["a", "b", "bad"]
    for i in range(300):
        queue.add(key(names[i % 3]))
        if i % 7 == 0:
            time.sleep(0.001)
    deadline = time.monotonic() + 10
    while queue.depth() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.05)
    queue.add(key("a"))  # a failed reconcile of "bad" did not stop its worker
    time.sleep(0.1)
    workers.stop(timeout=5)
    assert overlaps == []
    assert runs[-1] == key("a")
    assert {k.name for k in runs} == {"a", "b", "bad"}
    assert len(runs) < 300  # events that came while one waited were collapsed


def test_a_reconcile_runs_in_the_context_of_the_latest_handler() -> None:
    # kopf's event posting reads its queue from context variables set for handlers;
    # the ticker's thread has none of them.
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")
    queue, handlers = WorkQueue(), HandlerContext()
    seen: list[str] = []

    def reconcile(_: ObjectKey) -> None:
        seen.append(var.get())
        var.set("changed by a reconcile")

    def handler(value: str) -> None:
        var.set(value)
        handlers.remember()

    contextvars.copy_context().run(handler, "first")
    contextvars.copy_context().run(handler, "second")
    workers = Workers(queue, reconcile, count=2, context=handlers)
    workers.start()
    queue.add(key("a"))
    queue.add(key("b"))
    deadline = time.monotonic() + 5
    while len(seen) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    workers.stop(timeout=5)
    assert seen == ["second", "second"]


def test_the_ticker_queues_only_tracked_objects_gone_an_interval_without_a_reconcile() -> None:
    queue, clock = WorkQueue(), ReconcileClock()
    ticker = Ticker(queue, clock, interval=0.2)
    for name in ("fresh", "stale", "never", "finished"):
        ticker.track(key(name), ticking=True)
    ticker.track(key("finished"), ticking=False)
    clock.mark(key("stale").uid)
    time.sleep(0.25)
    clock.mark(key("fresh").uid)
    assert ticker.queue_due() == 2
    assert sorted(take_key(queue).name for _ in range(2)) == ["never", "stale"]
    assert queue.depth() == 0


def test_the_ticker_queues_nothing_where_peering_has_paused_this_replica() -> None:
    queue, clock = WorkQueue(), ReconcileClock()
    asked: list[str] = []

    def may_act(namespace: str) -> bool:
        asked.append(namespace)
        return namespace == "ours"

    ticker = Ticker(queue, clock, interval=0.2, may_act=may_act)
    ticker.track(ObjectKey("FineTuneJob", "ours", "a", "uid-a"), ticking=True)
    ticker.track(ObjectKey("FineTuneJob", "ours", "b", "uid-b"), ticking=True)
    ticker.track(ObjectKey("EvalGate", "theirs", "c", "uid-c"), ticking=True)
    assert ticker.queue_due() == 2
    assert sorted(asked) == ["ours", "theirs"]  # asked once per namespace per sweep
    assert {take_key(queue).namespace for _ in range(2)} == {"ours"}
