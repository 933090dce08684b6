"""A MinIO server: the S3 endpoint every test and pod reaches over HTTP."""

from __future__ import annotations

import contextlib
import os
import secrets
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import boto3
from botocore.config import Config

from tunegate_cluster.control_plane import LOOPBACK, free_port
from tunegate_cluster.processes import ProcessGroup, wait_until

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

DEFAULT_BUCKET = "tunegate"


@dataclass(frozen=True)
class S3Access:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    region: str = "us-east-1"


def _ready(endpoint: str) -> bool:
    with urllib.request.urlopen(f"{endpoint}/minio/health/ready", timeout=5) as response:
        return bool(response.status == 200)


def start_object_store(
    group: ProcessGroup, *, bin_dir: Path, state_dir: Path, host: str = LOOPBACK
) -> S3Access:
    """MinIO on `host` (the real node's bridge address, when pods must reach it)."""
    port, console_port = free_port(), free_port()
    access_key = "tunegate-" + secrets.token_hex(4)
    secret_key = secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "MINIO_ROOT_USER": access_key,
        "MINIO_ROOT_PASSWORD": secret_key,
        "MINIO_BROWSER": "off",
        "MINIO_UPDATE": "off",
        "MINIO_CI_CD": "1",
    }
    data_dir = state_dir / "s3-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    group.start(
        "minio",
        [
            str(bin_dir / "minio"),
            "server",
            "--quiet",
            f"--address={host}:{port}",
            f"--console-address={LOOPBACK}:{console_port}",
            str(data_dir),
        ],
        env=env,
    )
    endpoint = f"http://{host}:{port}"
    wait_until(lambda: _ready(endpoint), timeout=60, what="MinIO /minio/health/ready")
    access = S3Access(
        endpoint=endpoint, access_key=access_key, secret_key=secret_key, bucket=DEFAULT_BUCKET
    )
    client = s3_client(access)
    # Already there after a restart on a kept state directory (`make cluster` again).
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
        client.create_bucket(Bucket=access.bucket)
    return access


def s3_client(access: S3Access) -> S3Client:
    return boto3.client(
        "s3",
        endpoint_url=access.endpoint,
        aws_access_key_id=access.access_key,
        aws_secret_access_key=access.secret_key,
        region_name=access.region,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 5}),
    )
