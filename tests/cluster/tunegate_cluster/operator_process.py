"""The operator as a separate process, so tests and benchmarks can kill -9 and restart it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tunegate_cluster.cluster import ClusterInfo
from tunegate_cluster.control_plane import free_port
from tunegate_cluster.processes import spawn, tail, terminate_group

TRAINER_SERVICE_ACCOUNT = "tunegate-trainer"
TRAINER_IDENTITY = {"iam.gke.io/gcp-service-account": "trainer@example.iam.gserviceaccount.com"}


class OperatorProcess:
    """The operator as a separate process, so tests can kill -9 and restart it."""

    def __init__(
        self, cluster: ClusterInfo, log_dir: Path, *, verbose: bool = True, **extra_env: str
    ) -> None:
        """verbose: kopf's DEBUG log, which tests read when they fail; benchmarks run
        without it, as the chart does by default (`operator.logLevel: INFO`)."""
        self.cluster = cluster
        self.verbose = verbose
        self.log_path = log_dir / "operator.log"
        self.metrics_port = free_port()
        self.env = {
            **os.environ,
            **cluster.env(),
            "TUNEGATE_METRICS_PORT": str(self.metrics_port),
            "TUNEGATE_PEERING_MANDATORY": "true",
            # Tests kill -9 and restart: a dead peer must not pause the next one long.
            "TUNEGATE_PEERING_LIFETIME_SECONDS": "10",
            "TUNEGATE_RETRY_BASE_SECONDS": "1",
            "TUNEGATE_AUDIT_NODE_SELECTOR": json.dumps({"tunegate.dev/pool": "cpu"}),
            # As the chart's defaults: cluster-wide, the trainer ServiceAccount made in
            # each namespace where pods run, carrying the cloud identity annotation.
            "TUNEGATE_TRAINER_SERVICE_ACCOUNT": TRAINER_SERVICE_ACCOUNT,
            "TUNEGATE_TRAINER_SERVICE_ACCOUNT_CREATE": "true",
            "TUNEGATE_TRAINER_SERVICE_ACCOUNT_ANNOTATIONS": json.dumps(TRAINER_IDENTITY),
            # kwok keeps fake pods running until the test decides how they end.
            "TUNEGATE_POD_ANNOTATIONS": json.dumps({"tunegate.dev/fake-duration": "1h"}),
            **extra_env,
        }
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        kopf = str(Path(sys.executable).parent / "kopf")
        args = [kopf, "run", "-m", "tunegate_operator.handlers", "--all-namespaces"]
        self.proc = spawn(
            args + (["--verbose"] if self.verbose else []),
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

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def log_tail(self, lines: int = 60) -> str:
        return tail(self.log_path, lines=lines)
