"""Reading and writing run data in S3 (or on a local path, for development).

Uploads retry with backoff; a missing object is a clear error naming the URI.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

T = TypeVar("T")
_MISSING = ("404", "NoSuchKey", "NotFound")


class StorageError(Exception):
    """An object is missing or S3 failed; the message names the URI."""


def split_uri(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Store:
    """S3 URIs (s3://bucket/key) or plain local paths, behind one interface."""

    def __init__(
        self, *, endpoint: str | None, region: str = "us-east-1", retries: int = 5
    ) -> None:
        self.endpoint = endpoint
        self.region = region
        self.retries = retries
        self._client: S3Client | None = None

    @property
    def client(self) -> S3Client:
        if self._client is None:
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                region_name=self.region,
                config=Config(
                    s3={"addressing_style": "path"}, retries={"max_attempts": 3, "mode": "standard"}
                ),
            )
        return self._client

    def _retry(self, what: str, call: Callable[[], T]) -> T:
        delay = 0.5
        for attempt in range(1, self.retries + 1):
            try:
                return call()
            except ClientError as exc:
                if exc.response.get("Error", {}).get("Code") in _MISSING:
                    raise StorageError(f"{what}: object does not exist") from None
                if attempt == self.retries:
                    raise StorageError(f"{what}: {exc}") from None
            except BotoCoreError as exc:
                if attempt == self.retries:
                    raise StorageError(f"{what}: {exc}") from None
            time.sleep(delay)
            delay *= 2
        raise AssertionError("unreachable")

    # --- reads ---------------------------------------------------------------------
    def list(self, uri: str) -> list[str]:
        """Objects under a prefix (or the object itself), as URIs, sorted."""
        if not uri.startswith("s3://"):
            path = Path(uri)
            if path.is_file():
                return [str(path)]
            return sorted(str(p) for p in path.rglob("*") if p.is_file())
        bucket, key = split_uri(uri)
        found: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        prefixes = [key] if key.endswith("/") else [key, key.rstrip("/") + "/"]
        for prefix in prefixes:
            for page in self._retry(
                f"list {uri}",
                lambda p=prefix: list(  # type: ignore[misc]
                    paginator.paginate(Bucket=bucket, Prefix=p)
                ),
            ):
                for item in page.get("Contents", []):
                    name = item["Key"]
                    if name == key or name.startswith(key.rstrip("/") + "/"):
                        found.append(f"s3://{bucket}/{name}")
        return sorted(set(found))

    def exists(self, uri: str) -> bool:
        if not uri.startswith("s3://"):
            return Path(uri).exists()
        bucket, key = split_uri(uri)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise StorageError(f"head {uri}: {exc}") from None

    def read_bytes(self, uri: str) -> bytes:
        if not uri.startswith("s3://"):
            try:
                return Path(uri).read_bytes()
            except FileNotFoundError:
                raise StorageError(f"{uri}: file does not exist") from None
        bucket, key = split_uri(uri)
        return self._retry(
            f"get {uri}",
            lambda: self.client.get_object(Bucket=bucket, Key=key)["Body"].read(),  # noqa: PLW0108 - the GET must run inside the retry
        )

    def read_json(self, uri: str) -> Any:
        return json.loads(self.read_bytes(uri))

    def download_tree(self, uri: str, target: Path) -> Path:
        """Copy every object under `uri` to `target`, keeping relative paths."""
        objects = self.list(uri)
        if not objects:
            raise StorageError(f"{uri}: nothing there")
        base = uri.rstrip("/") + "/"
        for obj in objects:
            relative = obj[len(base) :] if obj.startswith(base) else Path(obj).name
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            if obj.startswith("s3://"):
                bucket, key = split_uri(obj)
                self._retry(
                    f"download {obj}",
                    lambda b=bucket, k=key, d=destination: self.client.download_file(  # type: ignore[misc]
                        b, k, str(d)
                    ),
                )
            else:
                destination.write_bytes(Path(obj).read_bytes())
        return target

    # --- writes --------------------------------------------------------------------
    def write_bytes(self, uri: str, data: bytes) -> None:
        if not uri.startswith("s3://"):
            Path(uri).parent.mkdir(parents=True, exist_ok=True)
            Path(uri).write_bytes(data)
            return
        bucket, key = split_uri(uri)
        self._retry(f"put {uri}", lambda: self.client.put_object(Bucket=bucket, Key=key, Body=data))

    def write_json(self, uri: str, document: Any) -> None:
        self.write_bytes(uri, json.dumps(document, indent=2, sort_keys=True).encode())

    def upload_tree(self, source: Path, uri: str) -> dict[str, str]:
        """Upload every file under `source`; returns relative path -> sha256."""
        digests: dict[str, str] = {}
        for path in sorted(p for p in source.rglob("*") if p.is_file()):
            relative = path.relative_to(source).as_posix()
            digests[relative] = sha256_file(path)
            target = f"{uri.rstrip('/')}/{relative}"
            if target.startswith("s3://"):
                bucket, key = split_uri(target)
                self._retry(
                    f"upload {target}",
                    lambda b=bucket, k=key, p=path: self.client.upload_file(  # type: ignore[misc]
                        str(p), b, k
                    ),
                )
            else:
                Path(target).parent.mkdir(parents=True, exist_ok=True)
                Path(target).write_bytes(path.read_bytes())
        return digests

    def iter_lines(self, uri: str) -> Iterator[tuple[str, int, str]]:
        """(object URI, 1-based line number, text) over every JSONL object under uri,
        streamed: memory holds one line, not the object."""
        objects = self.list(uri)
        if not objects:
            raise StorageError(f"{uri}: no such object or prefix")
        for obj in objects:
            for number, raw in enumerate(self._raw_lines(obj), start=1):
                # parse_lines reports the row a byte that is not UTF-8 escapes into.
                yield obj, number, raw.decode("utf-8", errors="surrogateescape").rstrip("\r")

    def _raw_lines(self, uri: str) -> Iterator[bytes]:
        if not uri.startswith("s3://"):
            with Path(uri).open("rb") as file:
                for line in file:
                    yield line.rstrip(b"\n")
            return
        bucket, key = split_uri(uri)
        body = self._retry(
            f"get {uri}", lambda: self.client.get_object(Bucket=bucket, Key=key)["Body"]
        )
        try:
            yield from body.iter_lines(chunk_size=1 << 20)
        except BotoCoreError as exc:
            raise StorageError(f"reading {uri}: {exc}") from None
        finally:
            body.close()


def store_from_env(endpoint: str | None, region: str) -> Store:
    return Store(endpoint=endpoint or os.environ.get("AWS_ENDPOINT_URL"), region=region)
