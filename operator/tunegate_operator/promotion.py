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

    def status(self) -> dict[str, str | None]:
        """The gate's status.promoted."""
        return {"uri": self.uri, "sha256": self.sha256, "previous": self.previous, "at": self.at}

    def serving_record(self) -> dict[str, str]:
        """The data of the ConfigMap serving reads."""
        return {
            "adapterUri": self.uri,
            "sha256": self.sha256,
            "source": self.source,
            "promotedAt": self.at,
        }


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


def roll_back(s3: S3, *, promotion_uri: str, failed_sha256: str, gate: str) -> Promoted:
    """Serve the previous version again, keeping the failed one under `.history/`.
    Repeatable: when the failed version is no longer current, it was already done."""
    root = promotion_uri.rstrip("/")
    record = current(s3, root) or {}
    entry = record.get("current") or {}
    if entry.get("sha256") != failed_sha256:
        if entry.get("sha256") and failed_sha256 in _shas(record.get("rolledBack")):
            return _promoted(root, entry, failed_sha256)
        raise PromotionError(
            f"{root} no longer serves {failed_sha256[:12]}; another promotion replaced it"
        )
    previous = list(record.get("previous") or [])
    if not previous:
        raise PromotionError(f"{root} has no previous version to restore")
    restore = previous[0]
    archive = f"{root}/{HISTORY}/{restore['sha256'][:12]}"
    for name, digest in restore.get("files", {}).items():
        if s3.sha256(f"{archive}/{name}") != digest:
            raise PromotionError(f"{archive}/{name} does not match its recorded sha256")
    failed_archive = f"{root}/{HISTORY}/{failed_sha256[:12]}"
    for name in entry.get("files", {}):
        s3.copy(f"{root}/{name}", f"{failed_archive}/{name}")
    for name in restore.get("files", {}):
        s3.copy(f"{archive}/{name}", f"{root}/{name}")
    for stale in set(s3.list_files(root)) - set(restore.get("files", {})) - {RECORD}:
        if not stale.startswith(f"{HISTORY}/"):
            s3.delete(f"{root}/{stale}")
    at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    failed = {**entry, "rolledBackAt": at, "rolledBackBy": gate}
    s3.write_json(
        f"{root}/{RECORD}",
        {
            "current": {**restore, "restoredAt": at},
            "previous": previous[1:],
            "rolledBack": [failed, *(record.get("rolledBack") or [])][:20],
        },
    )
    return _promoted(root, {**restore, "at": at}, failed_sha256)


def _shas(entries: Any) -> set[str]:
    return {str(e.get("sha256")) for e in entries or []}


def _promoted(root: str, entry: Mapping[str, Any], replaced: str) -> Promoted:
    return Promoted(root, entry["sha256"], entry.get("source", ""), replaced, entry.get("at", ""))


__all__ = [
    "Promoted",
    "PromotionError",
    "StorageError",
    "current",
    "promote",
    "roll_back",
    "tree_digest",
]
