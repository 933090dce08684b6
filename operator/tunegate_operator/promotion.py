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

import logging
from collections.abc import Mapping

from tunegate_contract.base import now_rfc3339
from tunegate_contract.digest import tree_digest
from tunegate_contract.layout import promotion_record_uri, version_uri
from tunegate_contract.promotion_record import (
    KEPT,
    POINTER_LAYOUT,
    PromotionRecord,
    VersionEntry,
)
from tunegate_operator.decisions.promotion_record import Promoted, promoted_of
from tunegate_operator.s3_io import S3, StorageError, WriteConflictError

log = logging.getLogger("tunegate")


class PromotionError(Exception):
    """The adapter does not match its manifest, or no version can be restored; the
    pointer is unchanged."""


def current(s3: S3, promotion_uri: str) -> PromotionRecord | None:
    """The pointer as stored (read-only: a v0.1 record is migrated when next written)."""
    return s3.read_document(promotion_record_uri(promotion_uri), PromotionRecord)


# --- versions -----------------------------------------------------------------------


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


def _read_pointer(s3: S3, root: str) -> tuple[PromotionRecord, str | None]:
    uri = promotion_record_uri(root)
    raw, tag = s3.read_json_tagged(uri)
    if raw is None:
        return PromotionRecord(layout=POINTER_LAYOUT), None
    record = PromotionRecord.parse(raw, where=uri)
    if record.layout != POINTER_LAYOUT:
        return _migrate(s3, root, record, tag)
    return record, tag


def _write_pointer(s3: S3, root: str, record: PromotionRecord, tag: str | None) -> None:
    """Compare-and-swap: a concurrent writer makes this raise WriteConflictError (retried on
    the next reconcile), never lose its version."""
    stored = record.model_copy(update={"layout": POINTER_LAYOUT}).to_json()
    s3.write_json(promotion_record_uri(root), stored, if_match=tag, if_absent=tag is None)


def _migrate(
    s3: S3, root: str, record: PromotionRecord, tag: str | None
) -> tuple[PromotionRecord, str | None]:
    """A v0.1 record: the current files at the root, older ones under .history/<sha12>/.
    Each becomes a verified version; entries whose bytes are gone are dropped. The old
    files stay where they are (a v0.1 server keeps reading them) but are not updated."""

    def moved(entry: VersionEntry, source: str) -> VersionEntry | None:
        target = version_uri(root, entry.sha256)
        try:
            write_version(s3, source, target, entry.files, keep_on_failure=False)
        except PromotionError as exc:
            log.warning("promotion %s: not migrated: %s", root, exc)
            return None
        return entry.model_copy(update={"uri": target})

    def archived(entries: list[VersionEntry]) -> list[VersionEntry]:
        kept = (moved(e, f"{root}/.history/{e.sha256[:12]}") for e in entries)
        return [e for e in kept if e is not None]

    head = None
    if record.current is not None:
        head = moved(record.current, root)
        if head is None:
            raise PromotionError(f"{root}: the served files no longer match promotion.json")
    migrated = PromotionRecord(
        layout=POINTER_LAYOUT,
        current=head,
        previous=archived(record.previous),
        rolledBack=archived(record.rolled_back),
    )
    _write_pointer(s3, root, migrated, tag)
    raw, new_tag = s3.read_json_tagged(promotion_record_uri(root))
    return PromotionRecord.parse(raw or {}, where=promotion_record_uri(root)), new_tag


# --- promotion and rollback ---------------------------------------------------------


def _expected_files(
    s3: S3, adapter_uri: str, expected_files: Mapping[str, str], expected_sha256: str | None
) -> dict[str, str]:
    """The files a version must hold: the manifest's, checked against its tree digest.
    Without a manifest (spec.candidate.adapterUri), the bytes read now are the
    reference the copy is checked against."""
    files = s3.list_files(adapter_uri)
    if not files:
        raise PromotionError(f"{adapter_uri} holds no files")
    if expected_files and set(files) != set(expected_files):
        raise PromotionError(
            f"{adapter_uri} files {sorted(files)} differ from the manifest's "
            f"{sorted(expected_files)}"
        )
    expected = dict(expected_files) or {
        name: s3.sha256(f"{adapter_uri.rstrip('/')}/{name}") for name in files
    }
    digest = tree_digest(expected)
    if expected_sha256 and digest != expected_sha256:
        raise PromotionError(
            f"the manifest's files digest to {digest[:12]}, its adapter sha256 says "
            f"{expected_sha256[:12]}; not promoted"
        )
    return expected


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
    expected = _expected_files(s3, adapter_uri, expected_files, expected_sha256)
    digest = tree_digest(expected)
    head = record.current
    if head is not None and head.sha256 == digest:
        done = promoted_of(record)
        assert done is not None
        return done
    target, at = version_uri(root, digest), now_rfc3339()
    write_version(s3, adapter_uri, target, expected, keep_on_failure=digest in record.referenced())
    entry = VersionEntry(
        sha256=digest, uri=target, source=adapter_uri, files=expected, at=at, gate=gate
    )
    before = [e for e in [head, *record.previous] if e is not None and e.sha256 != digest]
    promoted = record.model_copy(update={"current": entry, "previous": before[:KEPT]})
    _write_pointer(s3, root, promoted, tag)
    return Promoted(target, digest, adapter_uri, head.sha256 if head else None, at)


def roll_back(s3: S3, *, promotion_uri: str, failed_sha256: str, gate: str) -> Promoted:
    """Point serving at the previous version again (its bytes checked first; nothing is
    copied). Repeatable: when the failed version is no longer current, it was done."""
    root = promotion_uri.rstrip("/")
    record, tag = _read_pointer(s3, root)
    head = record.current
    if head is None or head.sha256 != failed_sha256:
        if head is not None and failed_sha256 in {e.sha256 for e in record.rolled_back}:
            done = promoted_of(record)
            assert done is not None
            return Promoted(done.uri, done.sha256, done.source, failed_sha256, done.at)
        raise PromotionError(
            f"{root} no longer serves {failed_sha256[:12]}; another promotion replaced it"
        )
    if not record.previous:
        raise PromotionError(f"{root} has no previous version to restore")
    restore = record.previous[0]
    restore_uri = restore.uri or version_uri(root, restore.sha256)
    problem = _mismatch(s3, restore_uri, restore.files, present=set(s3.list_files(restore_uri)))
    if problem is not None:
        raise PromotionError(f"cannot restore {restore.sha256[:12]}: {problem}")
    at = now_rfc3339()
    failed = head.model_copy(update={"rolled_back_at": at, "rolled_back_by": gate})
    rolled = record.model_copy(
        update={
            "current": restore.model_copy(update={"restored_at": at}),
            "previous": record.previous[1:],
            "rolled_back": [failed, *record.rolled_back][:KEPT],
        }
    )
    _write_pointer(s3, root, rolled, tag)
    return Promoted(restore_uri, restore.sha256, restore.source, failed_sha256, at)


__all__ = [
    "Promoted",
    "PromotionError",
    "StorageError",
    "WriteConflictError",
    "current",
    "promote",
    "promoted_of",
    "roll_back",
    "version_uri",
]
