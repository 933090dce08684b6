"""Fixtures shared by the operator's integration tests."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tunegate_cluster.kube_helpers import BUCKET, SMALL_MODEL, put_json
from tunegate_cluster.object_store import S3Access
from tunegate_operator.planner.shapes import LLAMA_2_7B
from tunegate_operator.s3_io import S3, forget_clients


@pytest.fixture
def prefix(s3: Any) -> str:
    """A fresh S3 prefix holding a small model's config and a training set."""
    root = f"it/{uuid.uuid4().hex[:8]}"
    put_json(s3, f"{root}/model/config.json", SMALL_MODEL)
    put_json(s3, f"{root}/model-7b/config.json", LLAMA_2_7B)
    s3.put_object(Bucket=BUCKET, Key=f"{root}/data/train.jsonl", Body=b'{"text": "hi"}\n')
    return root


@pytest.fixture(scope="session")
def store(s3_access: S3Access) -> Iterator[S3]:
    """The operator's own S3 class (promotion's I/O), with the test server's
    credentials in the environment as the operator pod has them."""
    saved = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = s3_access.access_key
    os.environ["AWS_SECRET_ACCESS_KEY"] = s3_access.secret_key
    forget_clients()
    yield S3(s3_access.endpoint, s3_access.region)
    forget_clients()
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
