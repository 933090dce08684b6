"""The operator caps glibc's malloc arenas, unless the environment already did."""

from __future__ import annotations

import pytest

from tunegate_operator.malloc_arenas import cap_malloc_arenas


def test_an_explicit_malloc_arena_max_is_left_to_glibc(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert cap_malloc_arenas() is False


def test_glibc_accepts_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert cap_malloc_arenas() is True
