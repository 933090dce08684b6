"""Caps glibc's malloc arenas for the operator process.

Under contention glibc gives each allocating thread an arena of its own, up to eight
per core, and memory freed there stays mapped to that arena. The operator's reconcile
workers, kopf's event loop and the HTTP clients all allocate, so a burst of reconciles
leaves the process holding several arenas' worth of freed memory.
"""

from __future__ import annotations

import ctypes
import os

M_ARENA_MAX = -8  # glibc's mallopt parameter
ARENAS = 2


def cap_malloc_arenas(arenas: int = ARENAS) -> bool:
    """True if capped. MALLOC_ARENA_MAX in the environment wins (glibc read it already);
    a C library without mallopt (musl) has nothing to cap."""
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return bool(mallopt(M_ARENA_MAX, arenas))
