"""Promotion and rollback of the demo's adapter (SmolLM2-135M, LoRA r=8 on q/v) against
a real S3 server (MinIO on loopback).

Baseline: a plain server-side copy of the adapter's files to another prefix, what
`aws s3 cp --recursive` does and the least any promotion must do. Ours: `promote`
(copy into versions/<sha12>/, read back and verify every byte, compare-and-swap the
pointer) and `roll_back` (verify the previous version, move the pointer). Bytes
copied and S3 requests are counted per step.
"""

from __future__ import annotations

import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tunegate_cluster.cluster import ensure_binaries
from tunegate_cluster.object_store import s3_client, start_object_store
from tunegate_cluster.peers import random_adapter
from tunegate_cluster.processes import ProcessGroup

ROUNDS = 5


class Counted:
    """The operator's S3, counting requests and server-side copied bytes."""

    def __init__(self, real: Any) -> None:
        self.real, self.requests, self.copied = real, 0, 0

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self.real, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            self.requests += 1
            if name == "copy":
                bucket, key = args[0].removeprefix("s3://").split("/", 1)
                head = self.real.client.head_object(Bucket=bucket, Key=key)
                self.copied += int(head["ContentLength"])
            return method(*args, **kwargs)

        return call


def _upload(client: Any, bucket: str, folder: Path, prefix: str) -> dict[str, str]:
    digests = {}
    for path in sorted(folder.iterdir()):
        body = path.read_bytes()
        client.put_object(Bucket=bucket, Key=f"{prefix}/{path.name}", Body=body)
        digests[path.name] = hashlib.sha256(body).hexdigest()
    return digests


def _timed(action: Callable[[], Any]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def _variant(adapter: Path, target: Path) -> Path:
    """The same adapter, one byte different: a second version to promote."""
    target.mkdir(exist_ok=True)
    for path in adapter.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    config = target / "adapter_config.json"
    config.write_text(config.read_text() + " ")
    return target


def _round(store: Any, client: Any, bucket: str, root: str, adapters: list[Path]) -> dict[str, Any]:
    """One measurement: baseline copy, then promote the second version over the first,
    then roll it back."""
    from tunegate_contract.digest import tree_digest
    from tunegate_operator.promotion import promote, roll_back

    uris = [f"s3://{bucket}/{root}/{i}/adapter" for i in range(2)]
    files = [
        _upload(client, bucket, a, u.split("/", 3)[3]) for a, u in zip(adapters, uris, strict=True)
    ]
    serving = f"s3://{bucket}/{root}/serving"

    def plain_copy() -> None:
        for name in files[0]:
            store.copy(f"{uris[0]}/{name}", f"s3://{bucket}/{root}/plain/{name}")

    def promote_version(s3: Any, index: int) -> None:
        promote(
            s3,
            adapter_uri=uris[index],
            promotion_uri=serving,
            expected_files=files[index],
            expected_sha256=tree_digest(files[index]),
            gate=f"bench/{index}",
        )

    out: dict[str, Any] = {"baseline": _timed(plain_copy)}
    promote_version(store, 0)
    counted = Counted(store)
    out["promote"] = (_timed(lambda: promote_version(counted, 1)), counted.copied, counted.requests)
    counted = Counted(store)
    failed = tree_digest(files[1])
    seconds = _timed(
        lambda: roll_back(counted, promotion_uri=serving, failed_sha256=failed, gate="bench/1")  # type: ignore[arg-type]
    )
    out["rollback"] = (seconds, counted.copied, counted.requests)
    return out


def main() -> None:
    from tunegate_operator.s3_io import S3, forget_clients
    from tunegate_trainer.smollm2 import prepare

    model = prepare()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        group = ProcessGroup(work / "logs")
        try:
            access = start_object_store(group, bin_dir=ensure_binaries(), state_dir=work)
            os.environ["AWS_ACCESS_KEY_ID"] = access.access_key
            os.environ["AWS_SECRET_ACCESS_KEY"] = access.secret_key
            forget_clients()
            client, store = s3_client(access), S3(access.endpoint, access.region)
            adapter = random_adapter(model, work / "adapter")
            adapters = [adapter, _variant(adapter, work / "second")]
            size = sum(p.stat().st_size for p in adapter.iterdir())
            rounds = [
                _round(store, client, access.bucket, f"bench/{i}", adapters) for i in range(ROUNDS)
            ]
        finally:
            group.stop()
    base = statistics.median(r["baseline"] for r in rounds)
    print(f"adapter: SmolLM2-135M LoRA r=8 q/v, {size / 1e6:.2f} MB; medians of {ROUNDS} rounds")
    print(f"plain copy (baseline): {base * 1000:7.1f} ms   copied {size / 1e6:.2f} MB")
    for step in ("promote", "rollback"):
        median = statistics.median(r[step][0] for r in rounds)
        _, copied, requests = rounds[-1][step]
        print(
            f"{step + ':':<22} {median * 1000:7.1f} ms   copied {copied / 1e6:.2f} MB   "
            f"{requests} S3 requests   {median / base:.2f}x baseline"
        )
