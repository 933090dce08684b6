"""Promoting an adapter: immutable versions behind one pointer.

Layout under `promotion.uri`:

    versions/<sha12>/...   each promoted adapter, written once and verified there
    promotion.json         the pointer: the version serving loads (`current.uri`), the
                           versions before it, the ones rolled back

Serving follows the pointer (or the ConfigMap and hand-off that mirror it). A version
is verified file by file and as a tree against the FineTuneJob's manifest before the
pointer may name it; the pointer is written last, by compare-and-swap, so a crash or a
concurrent promotion leaves it naming a verified version. Rollback moves the pointer
back without copying. Every step can be repeated: a retry finds what is done.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from tunegate_operator.decisions.conditions import rfc3339
from tunegate_operator.decisions.promotion_record import Promoted, promoted_of
from tunegate_operator.s3_io import S3, StorageError, WriteConflictError

log = logging.getLogger("tunegate")

RECORD = "promotion.json"
VERSIONS = "versions"
LAYOUT = 2  # v0.1 (layout 1) served the files at the root and archived under .history/
KEPT = 20  # entries listed under previous / rolledBack


class PromotionError(Exception):
    """The adapter does not match its manifest, or no version can be restored; the
    pointer is unchanged."""


def tree_digest(files: Mapping[str, str]) -> str:
    """sha256 over sorted (relative path, file sha256) pairs: the same definition as
    the trainer's manifest (tests/unit/test_contract_and_builders.py checks both)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(f"{name}\0{files[name]}\n".encode())
    return digest.hexdigest()


def version_uri(root: str, sha256: str) -> str:
    return f"{root.rstrip('/')}/{VERSIONS}/{sha256[:12]}"


def _now() -> str:
    return rfc3339(datetime.now(UTC))


def current(s3: S3, promotion_uri: str) -> dict[str, Any] | None:
    """The pointer as stored (read-only: a v0.1 record is migrated when next written)."""
    return s3.read_json(f"{promotion_uri.rstrip('/')}/{RECORD}")


# --- versions -----------------------------------------------------------------------


def _referenced(record: Mapping[str, Any]) -> set[str]:
    entries = [record.get("current"), *(record.get("previous") or [])]
    entries += record.get("rolledBack") or []
    return {str(e["sha256"]) for e in entries if e and e.get("sha256")}


def write_version(
    s3: S3, source: str, target: str, files: Mapping[str, str], *, keep_on_failure: bool
) -> None:
    """Server-side copy of `files` into `target`, then every byte there checked against
    `files` (name -> sha256). Files already there and matching are not copied again,
    so a retry after a crash finishes the version instead of rewriting it. On a
    mismatch the version is removed (unless a pointer entry names it) and nothing else
    changes."""
    source = source.rstrip("/")
    present = set(s3.list_files(target))
    for name in sorted(set(files) - present):
        s3.copy(f"{source}/{name}", f"{target}/{name}")
    # A copy that returned is in place: no second LIST to learn what is there now.
    problem = _mismatch(s3, target, files, present=present | set(files))
    if problem is None:
        return
    if not keep_on_failure:
        for name in s3.list_files(target):
            s3.delete(f"{target}/{name}")
    raise PromotionError(f"{problem}; not promoted")


def _mismatch(s3: S3, target: str, files: Mapping[str, str], *, present: set[str]) -> str | None:
    """The first way `target` differs from `files`, in words; None when identical."""
    if present != set(files):
        return f"{target} holds {sorted(present)}, the manifest lists {sorted(files)}"
    for name, digest in sorted(files.items()):
        actual = s3.sha256(f"{target}/{name}")
        if actual != digest:
            return f"{target}/{name} has sha256 {actual[:12]}, the manifest says {digest[:12]}"
    return None


# --- the pointer --------------------------------------------------------------------


def _read_pointer(s3: S3, root: str) -> tuple[dict[str, Any], str | None]:
    record, tag = s3.read_json_tagged(f"{root}/{RECORD}")
    if record is not None and record.get("layout") != LAYOUT:
        return _migrate(s3, root, record, tag)
    return record or {}, tag


def _write_pointer(s3: S3, root: str, record: dict[str, Any], tag: str | None) -> None:
    """Compare-and-swap: a concurrent writer makes this raise WriteConflictError (retried on
    the next reconcile), never lose its version."""
    pointer = f"{root}/{RECORD}"
    s3.write_json(pointer, {**record, "layout": LAYOUT}, if_match=tag, if_absent=tag is None)


def _migrate(
    s3: S3, root: str, record: dict[str, Any], tag: str | None
) -> tuple[dict[str, Any], str | None]:
    """A v0.1 record: the current files at the root, older ones under .history/<sha12>/.
    Each becomes a verified version; entries whose bytes are gone are dropped. The old
    files stay where they are (a v0.1 server keeps reading them) but are not updated."""

    def moved(entry: Mapping[str, Any], source: str) -> dict[str, Any] | None:
        target = version_uri(root, entry["sha256"])
        try:
            write_version(s3, source, target, entry.get("files") or {}, keep_on_failure=False)
        except PromotionError as exc:
            log.warning("promotion %s: not migrated: %s", root, exc)
            return None
        return {**entry, "uri": target}

    def archived(entries: Any) -> list[dict[str, Any]]:
        kept = (moved(e, f"{root}/.history/{e['sha256'][:12]}") for e in entries or [])
        return [e for e in kept if e is not None]

    head = record.get("current")
    migrated: dict[str, Any] = {
        "previous": archived(record.get("previous")),
        "rolledBack": archived(record.get("rolledBack")),
    }
    if head:
        entry = moved(head, root)
        if entry is None:
            raise PromotionError(f"{root}: the served files no longer match promotion.json")
        migrated["current"] = entry
    _write_pointer(s3, root, migrated, tag)
    written, new_tag = s3.read_json_tagged(f"{root}/{RECORD}")
    return written or {}, new_tag


# --- promotion and rollback ---------------------------------------------------------


def promote(
    s3: S3,
    *,
    adapter_uri: str,
    promotion_uri: str,
    expected_files: Mapping[str, str],
    expected_sha256: str | None,
    gate: str,
) -> Promoted:
    """Write the adapter as a verified version, then point serving at it."""
    root = promotion_uri.rstrip("/")
    record, tag = _read_pointer(s3, root)
    files = s3.list_files(adapter_uri)
    if not files:
        raise PromotionError(f"{adapter_uri} holds no files")
    if expected_files and set(files) != set(expected_files):
        raise PromotionError(
            f"{adapter_uri} files {sorted(files)} differ from the manifest's "
            f"{sorted(expected_files)}"
        )
    # Without a manifest (spec.candidate.adapterUri), the bytes read now are the
    # reference the copy is checked against.
    expected = dict(expected_files) or {
        name: s3.sha256(f"{adapter_uri.rstrip('/')}/{name}") for name in files
    }
    digest = tree_digest(expected)
    if expected_sha256 and digest != expected_sha256:
        raise PromotionError(
            f"the manifest's files digest to {digest[:12]}, its adapter sha256 says "
            f"{expected_sha256[:12]}; not promoted"
        )
    head = record.get("current")
    if head and head.get("sha256") == digest:
        done = promoted_of(record)
        assert done is not None
        return done
    target, at = version_uri(root, digest), _now()
    write_version(s3, adapter_uri, target, expected, keep_on_failure=digest in _referenced(record))
    entry = {
        "sha256": digest,
        "uri": target,
        "source": adapter_uri,
        "files": expected,
        "at": at,
        "gate": gate,
    }
    before = [e for e in [head, *(record.get("previous") or [])] if e and e["sha256"] != digest]
    _write_pointer(
        s3,
        root,
        {"current": entry, "previous": before[:KEPT], "rolledBack": record.get("rolledBack") or []},
        tag,
    )
    return Promoted(target, digest, adapter_uri, head["sha256"] if head else None, at)


def roll_back(s3: S3, *, promotion_uri: str, failed_sha256: str, gate: str) -> Promoted:
    """Point serving at the previous version again (its bytes checked first; nothing is
    copied). Repeatable: when the failed version is no longer current, it was done."""
    root = promotion_uri.rstrip("/")
    record, tag = _read_pointer(s3, root)
    head = record.get("current") or {}
    if head.get("sha256") != failed_sha256:
        if head.get("sha256") and failed_sha256 in {
            str(e.get("sha256")) for e in record.get("rolledBack") or []
        }:
            done = promoted_of(record)
            assert done is not None
            return Promoted(done.uri, done.sha256, done.source, failed_sha256, done.at)
        raise PromotionError(
            f"{root} no longer serves {failed_sha256[:12]}; another promotion replaced it"
        )
    before = list(record.get("previous") or [])
    if not before:
        raise PromotionError(f"{root} has no previous version to restore")
    restore = before[0]
    files = restore.get("files") or {}
    problem = _mismatch(s3, restore["uri"], files, present=set(s3.list_files(restore["uri"])))
    if problem is not None:
        raise PromotionError(f"cannot restore {restore['sha256'][:12]}: {problem}")
    at = _now()
    failed = {**head, "rolledBackAt": at, "rolledBackBy": gate}
    _write_pointer(
        s3,
        root,
        {
            "current": {**restore, "restoredAt": at},
            "previous": before[1:],
            "rolledBack": [failed, *(record.get("rolledBack") or [])][:KEPT],
        },
        tag,
    )
    return Promoted(restore["uri"], restore["sha256"], restore.get("source", ""), failed_sha256, at)


__all__ = [
    "Promoted",
    "PromotionError",
    "StorageError",
    "WriteConflictError",
    "current",
    "promote",
    "promoted_of",
    "roll_back",
    "tree_digest",
    "version_uri",
]
