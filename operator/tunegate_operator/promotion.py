"""Promoting an adapter: server-side copy, digest check, history, optional ConfigMap.

Layout under `promotion.uri`: the adapter's files (what serving loads), the
record `promotion.json` (current and previous versions), and earlier versions
kept under `.history/<sha12>/` so they can be restored. Each step can be
repeated; the record is written last, so a crash mid-way is finished on retry.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tunegate_operator.s3_io import S3, StorageError

RECORD = "promotion.json"
HISTORY = ".history"


class PromotionError(Exception):
    """The copy does not match the candidate's manifest; nothing was recorded."""


def tree_digest(files: Mapping[str, str]) -> str:
    """sha256 over sorted (relative path, file sha256) pairs: the same definition as
    the trainer's manifest (tests/unit/test_contract_and_builders.py checks both)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Promoted:
    uri: str
    sha256: str
    source: str
    previous: str | None
    at: str


def current(s3: S3, promotion_uri: str) -> dict[str, Any] | None:
    return s3.read_json(f"{promotion_uri.rstrip('/')}/{RECORD}")


def promote(
    s3: S3,
    *,
    adapter_uri: str,
    promotion_uri: str,
    expected_files: Mapping[str, str],
    expected_sha256: str | None,
    gate: str,
) -> Promoted:
    root = promotion_uri.rstrip("/")
    files = s3.list_files(adapter_uri)
    if not files:
        raise PromotionError(f"{adapter_uri} holds no files")
    if expected_files and set(files) != set(expected_files):
        raise PromotionError(
            f"{adapter_uri} files {sorted(files)} differ from the manifest's "
            f"{sorted(expected_files)}"
        )
    record = current(s3, root)
    previous = (record or {}).get("current")
    if previous and previous.get("sha256"):
        archive = f"{root}/{HISTORY}/{previous['sha256'][:12]}"
        if not s3.list_files(archive):
            for name in previous.get("files", {}):
                s3.copy(f"{root}/{name}", f"{archive}/{name}")
    for name in files:
        s3.copy(f"{adapter_uri.rstrip('/')}/{name}", f"{root}/{name}")
    copied = {name: s3.sha256(f"{root}/{name}") for name in files}
    for name, digest in expected_files.items():
        if copied.get(name) != digest:
            raise PromotionError(
                f"{root}/{name} has sha256 {copied.get(name, '-')[:12]}, the "
                f"manifest says {digest[:12]}; not promoted"
            )
    digest = tree_digest(copied)
    if expected_sha256 and digest != expected_sha256:
        raise PromotionError(f"adapter digest {digest[:12]} != manifest {expected_sha256[:12]}")
    for stale in set(s3.list_files(root)) - set(files) - {RECORD}:
        if not stale.startswith(f"{HISTORY}/"):
            s3.delete(f"{root}/{stale}")
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    entry = {"sha256": digest, "source": adapter_uri, "files": copied, "at": at, "gate": gate}
    history = [previous, *((record or {}).get("previous") or [])] if previous else []
    if previous and previous.get("sha256") == digest:
        history = list((record or {}).get("previous") or [])
    s3.write_json(f"{root}/{RECORD}", {"current": entry, "previous": history[:20]})
    return Promoted(
        root,
        digest,
        adapter_uri,
        previous.get("sha256")
        if previous and previous.get("sha256") != digest
        else (history[0]["sha256"] if history else None),
        at,
    )


__all__ = ["Promoted", "PromotionError", "StorageError", "current", "promote", "tree_digest"]
