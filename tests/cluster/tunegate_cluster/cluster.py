"""The whole local test environment: control plane, fake GPU pools, S3, pod runner."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from types import TracebackType

from tunegate_cluster.control_plane import LOOPBACK, free_port, start_control_plane
from tunegate_cluster.images import ImageBuilder, ImageSet
from tunegate_cluster.kueue import start_kueue
from tunegate_cluster.node_host import (
    ServiceRoute,
    create_network,
    delete_network,
    make_credentials,
)
from tunegate_cluster.node_pools import LOCAL_NODE_NAME, MANAGED_BY_KWOK_LABEL, all_node_manifests
from tunegate_cluster.object_store import start_object_store
from tunegate_cluster.processes import ProcessGroup, wait_until
from tunegate_cluster.real_node import RealNode, RealNodeUnavailableError, missing_prerequisites
from tunegate_cluster.real_node_config import REAL_NODE_GPUS, REAL_NODE_NAME, NodeNetwork

REPO_ROOT = Path(__file__).resolve().parents[3]
BUILD_SCRIPT = REPO_ROOT / "tests" / "cluster" / "build.sh"
# Variables the pod runner hands to pods, so trainer processes find caches and threads.
READY_JSONPATH = (
    "jsonpath={range .items[*]}{.status.conditions[?(@.type=='Ready')].status}{'\\n'}{end}"
)
RUNNER_PASS_ENV = (
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TUNEGATE_CACHE",
    "OMP_NUM_THREADS",
    "PYTHONPATH",
)


@dataclass(frozen=True)
class ClusterInfo:
    """Everything a test or a user needs to reach the local cluster."""

    kubeconfig: str
    api_url: str
    s3_endpoint: str
    s3_access_key: str
    s3_secret_key: str
    s3_bucket: str
    bin_dir: str
    state_dir: str
    local_node: str = LOCAL_NODE_NAME
    # The real node (kubelet + containerd) and the images it runs; empty without one.
    real_node: str = ""
    operator_image: str = ""
    trainer_image: str = ""
    audit_image: str = ""
    kueue: bool = False  # Kueue admits queued Jobs (its CRDs and webhooks installed)

    def env(self) -> dict[str, str]:
        return {
            "KUBECONFIG": self.kubeconfig,
            "TUNEGATE_S3_ENDPOINT": self.s3_endpoint,
            "AWS_ACCESS_KEY_ID": self.s3_access_key,
            "AWS_SECRET_ACCESS_KEY": self.s3_secret_key,
            "TUNEGATE_S3_BUCKET": self.s3_bucket,
            "TUNEGATE_BIN_DIR": self.bin_dir,
            "PATH": f"{self.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        }

    def kubectl(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the pinned kubectl against this cluster; never raises on failure."""
        return subprocess.run(
            [f"{self.bin_dir}/kubectl", f"--kubeconfig={self.kubeconfig}", *args],
            input=stdin,
            capture_output=True,
            text=True,
            check=False,
        )

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=2))
        path.chmod(0o600)

    @classmethod
    def load(cls, path: Path) -> ClusterInfo:
        return cls(**json.loads(path.read_text()))


def ensure_binaries() -> Path:
    """Build (or reuse from the cache) the pinned control-plane binaries."""
    result = subprocess.run([str(BUILD_SCRIPT)], check=True, stdout=subprocess.PIPE, text=True)
    return Path(result.stdout.strip().splitlines()[-1])


def real_node_wanted() -> bool:
    """On unless TUNEGATE_REAL_NODE=0 (a machine without root or containerd)."""
    return os.environ.get("TUNEGATE_REAL_NODE", "1") != "0"


def kueue_wanted() -> bool:
    """Kueue runs in a private mount namespace (see kueue.py), which needs root; on by
    default where the harness has it, off with TUNEGATE_KUEUE=0."""
    return os.environ.get("TUNEGATE_KUEUE", "1") != "0" and os.geteuid() == 0


def ensure_images(bin_dir: Path, builder: ImageBuilder | None = None) -> ImageSet:
    """Build (or find by content hash) the pause, operator and trainer images."""
    problems = missing_prerequisites()
    if problems:
        raise RealNodeUnavailableError(
            "the real node needs: "
            + "; ".join(problems)
            + " (or set TUNEGATE_REAL_NODE=0 to run without it)"
        )
    return (builder or ImageBuilder()).build_all(pause_binary=bin_dir / "pause")


class LocalCluster:
    """Context manager; every process it starts is stopped on exit, in reverse order."""

    def __init__(
        self,
        *,
        state_dir: Path | None = None,
        keep_state: bool = False,
        real_node: bool | None = None,
        kueue: bool | None = None,
    ) -> None:
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="tunegate-cluster-"))
        self.keep_state = keep_state or state_dir is not None
        self.group = ProcessGroup(log_dir=self.state_dir / "logs")
        self.info: ClusterInfo | None = None
        self.with_real_node = real_node_wanted() if real_node is None else real_node
        self.with_kueue = kueue_wanted() if kueue is None else kueue
        self.network: NodeNetwork | None = None
        self.node: RealNode | None = None
        self.node_seconds = 0.0

    def __enter__(self) -> ClusterInfo:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> ClusterInfo:
        started = time.monotonic()
        bin_dir = ensure_binaries()
        host, node_access, images, builder = LOOPBACK, None, None, ImageBuilder()
        if self.with_real_node:
            images = ensure_images(bin_dir, builder)
            # The bridge comes first: the API server and S3 listen on its address,
            # which is where pods reach them.
            self.network = create_network()
            host = self.network.gateway
            credentials = make_credentials(self.state_dir / "node-pki")
            node_access = credentials.control_plane_access()
            self.node = RealNode(
                bin_dir=bin_dir,
                state_dir=self.state_dir / "node",
                network=self.network,
                credentials=credentials,
                log_dir=self.group.log_dir,
            )
        access = start_control_plane(
            self.group, bin_dir=bin_dir, state_dir=self.state_dir, host=host, node=node_access
        )
        kubectl = [str(bin_dir / "kubectl"), f"--kubeconfig={access.kubeconfig}"]
        self._apply(kubectl, all_node_manifests())
        self._start_kwok(bin_dir, access.kubeconfig)
        s3 = start_object_store(self.group, bin_dir=bin_dir, state_dir=self.state_dir, host=host)
        if self.with_kueue:
            start_kueue(
                self.group,
                bin_dir=bin_dir,
                state_dir=self.state_dir,
                kubeconfig=access.kubeconfig,
                host=host,
            )
        self.group.start(
            "pod-runner",
            [
                sys.executable,
                "-m",
                "tunegate_cluster.pod_runner",
                f"--kubeconfig={access.kubeconfig}",
                f"--node-name={LOCAL_NODE_NAME}",
                f"--state-dir={self.state_dir / 'runner'}",
                f"--pass-env={','.join(RUNNER_PASS_ENV)}",
            ],
            env={
                **os.environ,
                "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
            },
        )
        node_started = time.monotonic()
        if self.node is not None and images is not None:
            self._start_real_node(self.node, images, builder, access.url, access.ca_file)
        if self.node is None:
            # A kept state dir may hold the Node of an earlier run with the real node on.
            subprocess.run(
                [*kubectl, "delete", "node", REAL_NODE_NAME, "--ignore-not-found"],
                check=True,
                capture_output=True,
            )
        expected_nodes = len(all_node_manifests()) + (1 if self.node else 0)
        wait_until(
            lambda: self._all_nodes_ready(kubectl, expected_nodes),
            timeout=120,
            what="all nodes Ready",
        )
        if self.node is not None:
            wait_until(
                lambda: self._real_node_gpus(kubectl) == REAL_NODE_GPUS,
                timeout=60,
                what=f"{REAL_NODE_NAME} advertising {REAL_NODE_GPUS} nvidia.com/gpu",
            )
            # From containerd's start to a Ready node with its GPUs (image imports included).
            self.node_seconds = time.monotonic() - node_started
        wait_until(
            lambda: self._default_service_account(kubectl),
            timeout=60,
            what="the default ServiceAccount (controller-manager)",
        )
        self.info = ClusterInfo(
            kubeconfig=str(access.kubeconfig),
            api_url=access.url,
            s3_endpoint=s3.endpoint,
            s3_access_key=s3.access_key,
            s3_secret_key=s3.secret_key,
            s3_bucket=s3.bucket,
            bin_dir=str(bin_dir),
            state_dir=str(self.state_dir),
            real_node=REAL_NODE_NAME if self.node else "",
            operator_image=images.operator if images else "",
            trainer_image=images.trainer if images else "",
            audit_image=images.audit if images else "",
            kueue=self.with_kueue,
        )
        self.info.save(self.state_dir / "cluster.json")
        self.startup_seconds = time.monotonic() - started
        return self.info

    def _start_real_node(
        self, node: RealNode, images: ImageSet, builder: ImageBuilder, api_url: str, api_ca: Path
    ) -> None:
        node.start_runtime(sandbox_image=images.pause)
        node.import_images(images, builder)
        node.route = ServiceRoute(
            chain=f"TUNEGATE-{node.network.bridge.upper()}",
            api_host=node.network.gateway,
            api_port=int(api_url.rsplit(":", 1)[1]),
        )
        node.route.install()
        node.start_kubelet(
            api_url=api_url, api_ca=api_ca, kubelet_port=free_port(), healthz_port=free_port()
        )
        node.start_dns(kubeconfig=self.state_dir / "kubeconfig")

    @staticmethod
    def _real_node_gpus(kubectl: list[str]) -> int:
        out = subprocess.run(
            [*kubectl, "get", "node", REAL_NODE_NAME, "-o",
             "jsonpath={.status.allocatable.nvidia\\.com/gpu}"],
            capture_output=True, text=True, check=False,
        ).stdout.strip()  # fmt: skip
        return int(out) if out.isdigit() else 0

    def _apply(self, kubectl: list[str], manifests: list[dict[str, object]]) -> None:
        document = json.dumps({"apiVersion": "v1", "kind": "List", "items": manifests})
        subprocess.run(
            [*kubectl, "apply", "-f", "-"],
            input=document,
            text=True,
            check=True,
            capture_output=True,
        )

    def _start_kwok(self, bin_dir: Path, kubeconfig: Path) -> None:
        stages = resources.files("tunegate_cluster").joinpath("kwok-stages.yaml").read_text()
        config_path = self.state_dir / "kwok.yaml"
        config_path.write_text(stages)
        self.group.start(
            "kwok",
            [
                str(bin_dir / "kwok"),
                f"--config={config_path}",
                f"--kubeconfig={kubeconfig}",
                f"--manage-nodes-with-label-selector={MANAGED_BY_KWOK_LABEL}=true",
                f"--server-address={LOOPBACK}:{free_port()}",
                "--cidr=10.244.0.0/16",
                f"--node-ip={LOOPBACK}",
            ],
        )

    @staticmethod
    def _all_nodes_ready(kubectl: list[str], expected: int) -> bool:
        out = subprocess.run(
            [
                *kubectl,
                "get",
                "nodes",
                "-o",
                READY_JSONPATH,
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()
        return len(out) == expected and set(out) == {"True"}

    @staticmethod
    def _default_service_account(kubectl: list[str]) -> bool:
        return (
            subprocess.run(
                [*kubectl, "get", "serviceaccount", "default"], capture_output=True, check=False
            ).returncode
            == 0
        )

    def logs_summary(self) -> str:
        node = self.node.group.logs_summary() if self.node else ""
        return "\n".join(part for part in (self.group.logs_summary(), node) if part)

    def stop(self) -> None:
        if self.node is not None:
            self.node.stop()
        elif self.network is not None:
            delete_network(self.network)
        self.group.stop()
        if not self.keep_state:
            shutil.rmtree(self.state_dir, ignore_errors=True)
