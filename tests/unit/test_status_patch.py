"""Whether a reconcile patches status: only when the API server would store something
different, so a settled object costs no write per tick."""

from __future__ import annotations

from tunegate_operator.decisions.status_patch import status_changed

PROMOTED = {"uri": "s3://b/serving/v/abc", "sha256": "abc", "at": "2026-12-06T20:01:34Z"}


def test_a_null_field_is_what_the_server_keeps_as_absent() -> None:
    # The server drops `previous: null` from a merge patch: the stored status lacks it.
    stored = {"phase": "Promoted", "promoted": PROMOTED}
    desired = {"phase": "Promoted", "promoted": {**PROMOTED, "previous": None}}
    assert not status_changed(stored, desired)


def test_a_null_replacing_a_stored_value_is_a_change() -> None:
    stored = {"promoted": {**PROMOTED, "previous": "s3://b/serving/v/old"}}
    assert status_changed(stored, {"promoted": {**PROMOTED, "previous": None}})


def test_a_changed_nested_value_is_a_change() -> None:
    stored = {"phase": "Promoted", "promoted": PROMOTED}
    assert status_changed(stored, {"phase": "Promoted", "promoted": {**PROMOTED, "sha256": "d"}})
    assert status_changed(stored, {"phase": "Rejected", "promoted": PROMOTED})


def test_nulls_inside_lists_of_objects_are_dropped_too() -> None:
    stored = {"results": [{"suite": "task", "delta": 0.1}]}
    assert not status_changed(stored, {"results": [{"suite": "task", "delta": 0.1, "note": None}]})
    assert status_changed(stored, {"results": [{"suite": "task", "delta": 0.2}]})
