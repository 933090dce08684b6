"""The operator's only conversation with S3: existence checks and small JSON reads.

Credentials come from the operator's own environment (AWS_* or workload identity);
the endpoint from the FineTuneJob or the operator settings.
"""

from __future__ import annotations

import hashlib
import json
import threading
from typing import TYPE_CHECKING, Any, TypeVar

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from tunegate_contract.base import Document, DocumentError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

D = TypeVar("D", bound=Document)

_MISSING = ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


class StorageError(Exception):
    """S3 could not be reached or refused the request (not: object missing)."""


class WriteConflictError(StorageError):
    """A conditional write lost: the object changed since it was read."""


# 412: If-Match/If-None-Match failed; 409: a concurrent conditional write won.
_CONFLICT = ("412", "PreconditionFailed", "409", "ConditionalRequestConflict")


def split_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise ValueError(f"not an s3:// URI: {uri}")
    bucket, _, key = uri[len("s3://") :].partition("/")
    return bucket, key


_JSON_KINDS: dict[type, str] = {
    list: "array",
    str: "string",
    int: "number",
    float: "number",
    bool: "boolean",
    type(None): "null",
}


def parse_json_object(uri: str, body: bytes) -> dict[str, Any]:
    """The object `body` holds; DocumentError naming `uri` (and the line) otherwise."""
    # Bad bytes are the writer's error, not storage's: retrying cannot mend them.
    try:
        document = json.loads(body)
    except json.JSONDecodeError as exc:
        raise DocumentError(
            f"{uri}:{exc.lineno}: not valid JSON ({exc.msg} at column {exc.colno})"
        ) from None
    except UnicodeDecodeError as exc:
        raise DocumentError(f"{uri}: not valid UTF-8 (byte {exc.start})") from None
    except RecursionError:
        raise DocumentError(f"{uri}: JSON nested too deeply to read") from None
    if not isinstance(document, dict):
        kind = _JSON_KINDS.get(type(document), type(document).__name__)
        raise DocumentError(f"{uri}: holds a JSON {kind}, not an object")
    return document


_clients: dict[tuple[str | None, str], S3Client] = {}
_clients_guard = threading.Lock()


def _client(endpoint: str | None, region: str) -> S3Client:
    """One client per endpoint and region, shared by every thread. Built under a lock:
    each costs about 17 MiB of parsed service models, and the workers' first reconciles
    would otherwise each build one at the same moment."""
    with _clients_guard:
        client = _clients.get((endpoint, region))
        if client is None:
            client = _clients[(endpoint, region)] = _new_client(endpoint, region)
        return client


def forget_clients() -> None:
    """Drop the shared clients: the next use builds them from the environment again
    (tests and benchmarks that change credentials)."""
    with _clients_guard:
        _clients.clear()


def _new_client(endpoint: str | None, region: str) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 3},
            connect_timeout=5,
            read_timeout=15,
        ),
    )


class S3:
    def __init__(self, endpoint: str | None, region: str) -> None:
        self.client = _client(endpoint, region)

    def exists(self, uri: str) -> bool:
        """An object, or a prefix with at least one object under it."""
        bucket, key = split_uri(uri)
        try:
            self.client.head_object(Bucket=bucket, Key=key)
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in _MISSING:
                raise StorageError(f"S3 refused HEAD {uri}: {exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"S3 unreachable for {uri}: {exc}") from None
        prefix = key.rstrip("/") + "/"
        try:
            listing = self.client.list_objects_v2(Bucket=bucket, Prefix=prefix, MaxKeys=1)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return False
            raise StorageError(f"S3 refused LIST {uri}: {exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"S3 unreachable for {uri}: {exc}") from None
        return bool(listing.get("KeyCount", 0))

    def read_json(self, uri: str) -> dict[str, Any] | None:
        """The parsed object, or None when it does not exist; DocumentError (naming the
        object and line) when it is not a JSON object."""
        return self.read_json_tagged(uri)[0]

    def read_document(self, uri: str, model: type[D]) -> D | None:
        """A typed document, or None when it does not exist; DocumentError (naming the
        object and the field) when it is not what `model` says."""
        raw = self.read_json(uri)
        return None if raw is None else model.parse(raw, where=uri)

    def read_document_or_error(self, uri: str, model: type[D]) -> D | DocumentError | None:
        """As read_document, with a malformed document returned for the decision to
        report instead of raised."""
        try:
            return self.read_document(uri, model)
        except DocumentError as exc:
            return exc

    def read_json_tagged(self, uri: str) -> tuple[dict[str, Any] | None, str | None]:
        """The parsed object and its ETag (for a conditional write back); (None, None)
        when it does not exist."""
        bucket, key = split_uri(uri)
        try:
            response = self.client.get_object(Bucket=bucket, Key=key)
            body = response["Body"].read()
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _MISSING:
                return None, None
            raise StorageError(f"S3 refused GET {uri}: {exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"S3 unreachable for {uri}: {exc}") from None
        return parse_json_object(uri, body), str(response.get("ETag") or "") or None

    # --- promotion: server-side copies and digests -------------------------------------
    def list_files(self, uri: str) -> list[str]:
        """Relative names of every object under a prefix."""
        bucket, key = split_uri(uri)
        prefix = key.rstrip("/") + "/"
        names: list[str] = []
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
                names.extend(item["Key"][len(prefix) :] for item in page.get("Contents", []))
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 refused LIST {uri}: {exc}") from None
        return sorted(names)

    def total_size(self, uri: str) -> int:
        """Bytes of every object under a prefix (a model checkpoint's size)."""
        bucket, key = split_uri(uri)
        prefix = key.rstrip("/") + "/"
        try:
            paginator = self.client.get_paginator("list_objects_v2")
            return sum(
                int(item["Size"])
                for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
                for item in page.get("Contents", [])
            )
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 refused LIST {uri}: {exc}") from None

    def model_size(self, uri: str) -> int | None:
        """A base model's bytes; None for hf:// models (not in S3)."""
        return self.total_size(uri) if uri.startswith("s3://") else None

    def copy(self, source: str, target: str) -> None:
        """Server-side copy: the bytes never pass through the operator."""
        source_bucket, source_key = split_uri(source)
        bucket, key = split_uri(target)
        try:
            self.client.copy({"Bucket": source_bucket, "Key": source_key}, bucket, key)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 copy {source} -> {target} failed: {exc}") from None

    def read_bytes(self, uri: str) -> bytes:
        bucket, key = split_uri(uri)
        try:
            body: bytes = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 refused GET {uri}: {exc}") from None
        return body

    def sha256(self, uri: str) -> str:
        bucket, key = split_uri(uri)
        digest = hashlib.sha256()
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"]
            for chunk in iter(lambda: body.read(1 << 20), b""):
                digest.update(chunk)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 refused GET {uri}: {exc}") from None
        return digest.hexdigest()

    def delete(self, uri: str) -> None:
        bucket, key = split_uri(uri)
        try:
            self.client.delete_object(Bucket=bucket, Key=key)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 refused DELETE {uri}: {exc}") from None

    def write_json(
        self,
        uri: str,
        document: dict[str, Any],
        *,
        if_match: str | None = None,
        if_absent: bool = False,
    ) -> None:
        """Compare-and-swap when asked: `if_match` writes only over the version with that
        ETag, `if_absent` only where no object exists (WriteConflictError otherwise)."""
        bucket, key = split_uri(uri)
        body = json.dumps(document, indent=2, sort_keys=True).encode()
        conditional = if_absent or if_match is not None
        try:
            if if_absent:
                self.client.put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
            elif if_match is not None:
                self.client.put_object(Bucket=bucket, Key=key, Body=body, IfMatch=if_match)
            else:
                self.client.put_object(Bucket=bucket, Key=key, Body=body)
        except ClientError as exc:
            if conditional and exc.response.get("Error", {}).get("Code") in _CONFLICT:
                raise WriteConflictError(f"{uri} changed since it was read") from None
            raise StorageError(f"S3 refused PUT {uri}: {exc}") from None
        except BotoCoreError as exc:
            raise StorageError(f"S3 refused PUT {uri}: {exc}") from None

    def write_bytes(self, uri: str, body: bytes, *, content_type: str) -> None:
        bucket, key = split_uri(uri)
        try:
            self.client.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
        except (ClientError, BotoCoreError) as exc:
            raise StorageError(f"S3 refused PUT {uri}: {exc}") from None
