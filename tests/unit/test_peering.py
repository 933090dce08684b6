"""Whether a replica may act, by kopf's peering rule, from the peering object's status."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from tunegate_operator.decisions.peering import may_act

NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


def peer(priority: int, seen_seconds_ago: float = 1, lifetime: int = 60) -> dict[str, object]:
    seen = NOW - timedelta(seconds=seen_seconds_ago)
    return {"priority": priority, "lifetime": lifetime, "lastseen": seen.isoformat()}


def act(status: dict[str, object] | None, own: int = 500, mandatory: bool = False) -> bool:
    return may_act(status, own_priority=own, mandatory=mandatory, now=NOW)


def test_the_highest_priority_alive_replica_acts_and_the_others_wait() -> None:
    status = {"me": peer(500), "other": peer(200)}
    assert act(status) is True
    assert act(status, own=200) is False


def test_a_replica_past_its_lifetime_no_longer_counts() -> None:
    assert act({"me": peer(500), "gone": peer(900, seen_seconds_ago=61)}) is True
    assert act({"me": peer(500), "late": peer(900, seen_seconds_ago=30, lifetime=10)}) is True
    assert act({"me": peer(500), "alive": peer(900, seen_seconds_ago=30)}) is False


def test_two_replicas_with_one_priority_both_wait_as_kopf_makes_them() -> None:
    assert act({"me": peer(500), "twin": peer(500)}) is False


def test_before_kopf_lists_us_we_act_only_if_nobody_outranks_us() -> None:
    assert act({}) is True
    assert act({"other": peer(100)}) is True
    assert act({"other": peer(600)}) is False


def test_a_peer_without_lastseen_counts_as_seen_now() -> None:
    assert act({"me": peer(500), "new": {"priority": 700}}) is False


def test_without_a_peering_object_the_replica_runs_alone_unless_peering_is_mandatory() -> None:
    assert act(None) is True
    assert act(None, mandatory=True) is False
