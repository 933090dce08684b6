"""The adapter's identity: one sha256 over its files, the same on both sides."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping


def tree_digest(files: Mapping[str, str]) -> str:
    """sha256 over sorted (relative path, file sha256) pairs: independent of listing
    order, changed by any renamed, added, dropped or altered file."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]}\n".encode())
    return digest.hexdigest()
