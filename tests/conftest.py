"""Session-wide local cluster for tests marked `cluster` (all of integration/, faults/
and e2e/).

Set TUNEGATE_CLUSTER=<state-dir>/cluster.json to reuse one started by `make cluster`.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config

from tunegate_cluster import chart
from tunegate_cluster.cluster import ClusterInfo, LocalCluster
from tunegate_cluster.object_store import S3Access, s3_client
from tunegate_cluster.operator_process import OperatorProcess
from tunegate_cluster.processes import wait_until

ROOT = Path(__file__).resolve().parents[1]

_running: LocalCluster | None = None


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.fspath)).parts
        if {"integration", "e2e", "faults"} & set(parts):
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
    return cluster


@pytest.fixture(scope="session")
def operator_kubeconfig(crds: ClusterInfo, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart installed (RBAC, ServiceAccounts, peering; no operator pod: tests run
    the operator as a process) and a kubeconfig holding the operator
    ServiceAccount's token, so every operator test runs with exactly the chart's RBAC."""
    chart.install(crds, chart.process_operator_values(crds, secret="tunegate-s3"))
    return chart.service_account_kubeconfig(crds, tmp_path_factory.mktemp("sa") / "kubeconfig")


@pytest.fixture
def operator(
    crds: ClusterInfo,
    operator_kubeconfig: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> Iterator[OperatorProcess]:
    process = OperatorProcess(crds, tmp_path, KUBECONFIG=str(operator_kubeconfig))
    process.start()
    yield process
    process.stop()
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        print(f"\n===== operator log =====\n{process.log_tail(120)}")
    # No secret value may reach a log line.
    log = process.log_path.read_text(errors="replace")
    assert crds.s3_secret_key not in log, "the S3 secret key appears in the operator log"
