"""Promotion against the real S3 server (MinIO): immutable versions behind one pointer.

What serving loads is read the way a server would: promotion.json's `current.uri`,
then the bytes under it. The operator is "killed" by an exception raised before its
k-th S3 call, for every k, and then started again (a fresh call)."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from typing import Any

import pytest

from tunegate_cluster.kube_helpers import BUCKET
from tunegate_contract.digest import tree_digest
from tunegate_contract.promotion_record import POINTER_LAYOUT
from tunegate_operator.promotion import (
    PromotionError,
    WriteConflictError,
    promote,
    roll_back,
)
from tunegate_operator.s3_io import S3


class OperatorKilledError(Exception):
    """The operator process died here."""


class Recorder:
    """Delegates to the real S3; counts calls and the bytes copied; dies before call
    number `die_at` when set."""

    def __init__(self, real: S3, die_at: int | None = None) -> None:
        self.real, self.die_at, self.calls, self.copied = real, die_at, 0, 0
        self.copies: list[str] = []

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.real, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.die_at is not None and self.calls == self.die_at:
                raise OperatorKilledError(f"before S3 call {self.calls} ({name})")
            self.calls += 1
            if name == "copy":
                self.copies.append(args[1])
                self.copied += _size(self.real, args[0])
            return method(*args, **kwargs)

        return call


def _size(s3: S3, uri: str) -> int:
    bucket, key = uri.removeprefix("s3://").split("/", 1)
    return int(s3.client.head_object(Bucket=bucket, Key=key)["ContentLength"])


def adapter(s3: Any, prefix: str, name: str) -> tuple[str, dict[str, str]]:
    """An adapter's files in S3 and their digests (what its manifest would list)."""
    files = {
        "adapter_config.json": json.dumps({"r": 8, "name": name}).encode(),
        "adapter_model.safetensors": os.urandom(64 * 1024),
    }
    for file, body in files.items():
        s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{name}/adapter/{file}", Body=body)
    return f"s3://{BUCKET}/{prefix}/{name}/adapter", {
        f: hashlib.sha256(b).hexdigest() for f, b in files.items()
    }


def served(s3: Any, root: str) -> tuple[str | None, dict[str, bytes]]:
    """What a server following the pointer loads: its version sha and that version's
    bytes (checked against the pointer's own digests, as a careful server would)."""
    key = f"{root.removeprefix(f's3://{BUCKET}/')}/promotion.json"
    try:
        record = json.loads(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    except s3.exceptions.NoSuchKey:
        return None, {}
    entry = record["current"]
    prefix = entry["uri"].removeprefix(f"s3://{BUCKET}/") + "/"
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix).get("Contents", [])
    files = {
        o["Key"][len(prefix) :]: s3.get_object(Bucket=BUCKET, Key=o["Key"])["Body"].read()
        for o in listed
    }
    digests = {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}
    assert digests == entry["files"], f"the pointer names {entry['uri']}, which is not intact"
    assert tree_digest(digests) == entry["sha256"]
    return entry["sha256"], files


def promote_run(s3: S3 | Recorder, source: tuple[str, dict[str, str]], root: str) -> Any:
    uri, files = source
    return promote(
        s3,  # type: ignore[arg-type]
        adapter_uri=uri,
        promotion_uri=root,
        expected_files=files,
        expected_sha256=tree_digest(files),
        gate="ns/gate",
    )


def keys(s3: Any, prefix: str) -> list[str]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix.removeprefix(f"s3://{BUCKET}/"))
    return sorted(o["Key"] for o in listed.get("Contents", []))


def test_a_tampered_adapter_leaves_serving_exactly_as_it_was(
    store: S3, s3: Any, prefix: str
) -> None:
    root = f"s3://{BUCKET}/{prefix}/serving"
    first = adapter(s3, prefix, "first")
    promote_run(store, first, root)
    before_sha, before_bytes = served(s3, root)
    before_keys = keys(s3, root)

    second = adapter(s3, prefix, "second")
    s3.put_object(
        Bucket=BUCKET,
        Key=f"{second[0].removeprefix(f's3://{BUCKET}/')}/adapter_model.safetensors",
        Body=b"swapped after training",
    )
    with pytest.raises(PromotionError, match="the manifest says"):
        promote_run(store, second, root)
    assert served(s3, root) == (before_sha, before_bytes)
    assert keys(s3, root) == before_keys  # the partial version is removed


def test_killed_at_every_step_the_pointer_names_a_verified_version(
    store: S3, s3: Any, prefix: str
) -> None:
    old = adapter(s3, prefix, "old")
    new = adapter(s3, prefix, "new")
    new_sha = tree_digest(new[1])
    step = 0
    while True:
        root = f"s3://{BUCKET}/{prefix}/serving-{step}"
        promote_run(store, old, root)
        old_sha = served(s3, root)[0]
        try:
            promote_run(Recorder(store, die_at=step), new, root)
            finished = True
        except OperatorKilledError:
            finished = False
        assert served(s3, root)[0] in (old_sha, new_sha), f"killed before call {step}"
        restarted = Recorder(store)
        done = promote_run(restarted, new, root)
        assert served(s3, root)[0] == new_sha and done.sha256 == new_sha
        assert done.previous == old_sha
        record = json.loads(
            s3.get_object(
                Bucket=BUCKET, Key=f"{root.removeprefix(f's3://{BUCKET}/')}/promotion.json"
            )["Body"].read()
        )
        assert [e["sha256"] for e in record["previous"]] == [old_sha]
        # Nothing is copied twice: a restart finishes the version it finds.
        assert len(set(restarted.copies)) == len(restarted.copies) <= 2
        if finished:
            break
        step += 1
    assert step >= 8  # list, digests, copies, verification, pointer: each was a kill point

    # Rolling back, killed at every step, too.
    step = 0
    while True:
        root = f"s3://{BUCKET}/{prefix}/serving-{step}"
        try:
            roll_back(
                Recorder(store, die_at=step),  # type: ignore[arg-type]
                promotion_uri=root,
                failed_sha256=new_sha,
                gate="ns/gate",
            )
            finished = True
        except OperatorKilledError:
            finished = False
        assert served(s3, root)[0] in (old_sha, new_sha)
        roll_back(store, promotion_uri=root, failed_sha256=new_sha, gate="ns/gate")
        assert served(s3, root)[0] == old_sha
        if finished:
            break
        step += 1


def test_rollback_moves_the_pointer_and_copies_nothing(store: S3, s3: Any, prefix: str) -> None:
    root = f"s3://{BUCKET}/{prefix}/serving"
    first, second = adapter(s3, prefix, "first"), adapter(s3, prefix, "second")
    promote_run(store, first, root)
    first_sha, first_bytes = served(s3, root)
    counted = Recorder(store)
    promoted = promote_run(counted, second, root)
    assert counted.copied == store.total_size(second[0])  # the adapter, once
    versions_before = keys(s3, f"{root}/versions/")

    counted = Recorder(store)
    restored = roll_back(
        counted,  # type: ignore[arg-type]
        promotion_uri=root,
        failed_sha256=promoted.sha256,
        gate="ns/gate",
    )
    assert counted.copies == [] and counted.copied == 0
    assert restored.sha256 == first_sha and restored.uri == f"{root}/versions/{first_sha[:12]}"
    assert served(s3, root) == (first_sha, first_bytes)
    assert keys(s3, f"{root}/versions/") == versions_before  # the failed one is kept
    # Repeating it is a no-op (the operator may retry after a crash).
    again = roll_back(store, promotion_uri=root, failed_sha256=promoted.sha256, gate="ns/gate")
    assert again.sha256 == first_sha


def test_a_broken_previous_version_is_not_restored(store: S3, s3: Any, prefix: str) -> None:
    root = f"s3://{BUCKET}/{prefix}/serving"
    first, second = adapter(s3, prefix, "first"), adapter(s3, prefix, "second")
    first_sha = promote_run(store, first, root).sha256
    second_sha = promote_run(store, second, root).sha256
    key = f"{prefix}/serving/versions/{first_sha[:12]}/adapter_model.safetensors"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"rotted")
    with pytest.raises(PromotionError, match=f"cannot restore {first_sha[:12]}"):
        roll_back(store, promotion_uri=root, failed_sha256=second_sha, gate="ns/gate")
    assert served(s3, root)[0] == second_sha


def test_a_concurrent_pointer_write_is_refused_not_lost(store: S3, s3: Any, prefix: str) -> None:
    pointer = f"s3://{BUCKET}/{prefix}/serving/promotion.json"
    store.write_json(pointer, {"current": None}, if_absent=True)
    with pytest.raises(WriteConflictError):
        store.write_json(pointer, {"current": "other"}, if_absent=True)
    _, tag = store.read_json_tagged(pointer)
    store.write_json(pointer, {"current": "mine"}, if_match=tag)
    with pytest.raises(WriteConflictError):
        store.write_json(pointer, {"current": "stale"}, if_match=tag)
    assert store.read_json(pointer) == {"current": "mine"}


def test_a_v01_layout_is_migrated_into_versions(store: S3, s3: Any, prefix: str) -> None:
    """v0.1 served the files at the root and kept older ones under .history/<sha12>/."""
    root = f"s3://{BUCKET}/{prefix}/serving"
    base = f"{prefix}/serving"
    entries = []
    for name, location in (("older", ".history/{sha}"), ("served", "")):
        uri, files = adapter(s3, prefix, name)
        sha = tree_digest(files)
        folder = f"{base}/{location.format(sha=sha[:12])}".rstrip("/")
        for file in files:
            s3.copy_object(
                Bucket=BUCKET,
                Key=f"{folder}/{file}",
                CopySource={"Bucket": BUCKET, "Key": f"{prefix}/{name}/adapter/{file}"},
            )
        entries.append({"sha256": sha, "source": uri, "files": files, "at": "2026-01-01T00:00:00Z"})
    legacy = {"current": entries[1], "previous": [entries[0]]}
    s3.put_object(Bucket=BUCKET, Key=f"{base}/promotion.json", Body=json.dumps(legacy).encode())

    newest = adapter(s3, prefix, "newest")
    done = promote_run(store, newest, root)
    assert done.previous == entries[1]["sha256"]
    record = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{base}/promotion.json")["Body"].read())
    assert record["layout"] == POINTER_LAYOUT
    assert [e["sha256"] for e in record["previous"]] == [e["sha256"] for e in reversed(entries)]
    assert all(e["uri"].startswith(f"{root}/versions/") for e in record["previous"])
    restored = roll_back(store, promotion_uri=root, failed_sha256=done.sha256, gate="ns/g")
    assert restored.sha256 == entries[1]["sha256"]
    assert served(s3, root)[0] == entries[1]["sha256"]
