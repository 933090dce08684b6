"""Fixtures shared by the operator's integration tests."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from kube_helpers import BUCKET, SMALL_MODEL, put_json
from tunegate_operator.planner.shapes import LLAMA_2_7B


@pytest.fixture
def prefix(s3: Any) -> str:
    """A fresh S3 prefix holding a small model's config and a training set."""
    root = f"it/{uuid.uuid4().hex[:8]}"
    put_json(s3, f"{root}/model/config.json", SMALL_MODEL)
    put_json(s3, f"{root}/model-7b/config.json", LLAMA_2_7B)
    s3.put_object(Bucket=BUCKET, Key=f"{root}/data/train.jsonl", Body=b'{"text": "hi"}\n')
    return root
