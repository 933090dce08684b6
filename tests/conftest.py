"""Session-wide local cluster for tests marked `cluster` (all of integration/ and e2e/).

Set TUNEGATE_CLUSTER=<state-dir>/cluster.json to reuse one started by `make cluster`.
"""

from __future__ import annotations

import json
import os
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tunegate_cluster.cluster import ClusterInfo, LocalCluster
from tunegate_cluster.control_plane import free_port
from tunegate_cluster.object_store import S3Access, s3_client
from tunegate_cluster.processes import spawn, tail, terminate_group, wait_until

ROOT = Path(__file__).resolve().parents[1]

_running: LocalCluster | None = None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if "integration" in parts or "e2e" in parts:
            item.add_marker(pytest.mark.cluster)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"rep_{report.when}", report)
    if report.failed and _running is not None and item.get_closest_marker("cluster"):
        report.sections.append(("local cluster logs (tails)", _running.logs_summary()))
    return report


@pytest.fixture(scope="session")
def cluster() -> Iterator[ClusterInfo]:
    global _running
    reuse = os.environ.get("TUNEGATE_CLUSTER")
    if reuse:
        yield ClusterInfo.load(Path(reuse))
        return
    local = LocalCluster()
    _running = local
    try:
        info = local.start()
        print(f"\nlocal cluster started in {local.startup_seconds:.1f}s")
        yield info
    finally:
        _running = None
        local.stop()


@pytest.fixture(scope="session")
def kube(cluster: ClusterInfo) -> client.ApiClient:
    return config.new_client_from_config(config_file=cluster.kubeconfig)


@pytest.fixture
def namespace(kube: client.ApiClient) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (its objects with it)."""
    name = f"t-{uuid.uuid4().hex[:8]}"
    core = client.CoreV1Api(kube)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="session")
def s3_access(cluster: ClusterInfo) -> S3Access:
    return S3Access(
        endpoint=cluster.s3_endpoint,
        access_key=cluster.s3_access_key,
        secret_key=cluster.s3_secret_key,
        bucket=cluster.s3_bucket,
    )


@pytest.fixture(scope="session")
def s3(s3_access: S3Access) -> Any:
    return s3_client(s3_access)


@pytest.fixture(scope="session")
def crds(cluster: ClusterInfo) -> ClusterInfo:
    """tunegate's CRDs (and kopf's peering CRDs) installed and served."""
    result = cluster.kubectl("apply", "--server-side", "-f", str(ROOT / "crds"))
    assert result.returncode == 0, result.stderr
    for name in (
        "finetunejobs.tunegate.dev",
        "evalgates.tunegate.dev",
        "clusterkopfpeerings.kopf.dev",
    ):
        result = cluster.kubectl(
            "wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s"
        )
        assert result.returncode == 0, result.stderr
    # Discovery of new kinds can lag Established by a moment.
    wait_until(
        lambda: cluster.kubectl("get", "ftj").returncode == 0,
        timeout=30,
        what="FineTuneJob discovery",
    )
    peering = {
        "apiVersion": "kopf.dev/v1",
        "kind": "ClusterKopfPeering",
        "metadata": {"name": "tunegate"},
    }
    result = cluster.kubectl("apply", "-f", "-", stdin=json.dumps(peering))
    assert result.returncode == 0, result.stderr
    return cluster


class OperatorProcess:
    """The operator as a separate process, so tests can kill -9 and restart it."""

    def __init__(self, cluster: ClusterInfo, log_dir: Path, **extra_env: str) -> None:
        self.cluster = cluster
        self.log_path = log_dir / "operator.log"
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            **cluster.env(),
            "TUNEGATE_METRICS_PORT": str(self.metrics_port),
            "TUNEGATE_PEERING_MANDATORY": "true",
            "TUNEGATE_RETRY_BASE_SECONDS": "1",
            "TUNEGATE_AUDIT_NODE_SELECTOR": json.dumps({"tunegate.dev/pool": "cpu"}),
            # kwok keeps fake pods running until the test decides how they end.
            "TUNEGATE_POD_ANNOTATIONS": json.dumps({"tunegate.dev/fake-duration": "1h"}),
            **extra_env,
        }
        self.proc: Any = None

    def start(self) -> None:
        kopf = str(Path(sys.executable).parent / "kopf")
        self.proc = spawn(
            [kopf, "run", "-m", "tunegate_operator.handlers", "--all-namespaces", "--verbose"],
            log_path=self.log_path,
            env=self.env,
        )

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as when a node dies."""
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None:
            terminate_group(self.proc, grace_seconds=10)

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines=lines)


@pytest.fixture
def operator(
    crds: ClusterInfo, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(crds, tmp_path)
    process.start()
    yield process
    process.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"\n===== operator log =====\n{process.log_tail(120)}")
