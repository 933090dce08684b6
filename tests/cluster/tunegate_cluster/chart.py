"""The Helm chart against the local cluster: install it, and run the operator with
the chart's ServiceAccount token (so the chart's RBAC is what the operator gets)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tunegate_cluster.cluster import ClusterInfo
from tunegate_cluster.node_pools import GPU_TOLERATION, POOL_LABEL
from tunegate_cluster.processes import wait_until

CHART = Path(__file__).resolve().parents[3] / "helm" / "tunegate"
RELEASE = "tunegate"
NAMESPACE = "tunegate-system"
KUBE_VERSION = "1.34.4"  # matches tests/cluster/go.mod; `helm template` has no cluster


class HelmError(RuntimeError):
    pass


def helm(cluster: ClusterInfo | None, *args: str, bin_dir: str | None = None) -> str:
    binary = f"{bin_dir or (cluster.bin_dir if cluster else '')}/helm"
    argv = [binary, *args]
    if cluster is not None:
        argv.append(f"--kubeconfig={cluster.kubeconfig}")
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise HelmError(f"helm {' '.join(args[:2])} failed:\n{result.stderr.strip()}")
    return result.stdout


def _set_flags(values: dict[str, Any]) -> list[str]:
    return [f"--set-json={key}={json.dumps(value)}" for key, value in values.items()]


def template(bin_dir: str, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Render the chart offline: the manifests `helm install` would apply."""
    out = helm(
        None,
        "template",
        RELEASE,
        str(CHART),
        f"--namespace={NAMESPACE}",
        f"--kube-version={KUBE_VERSION}",
        *_set_flags(values or {}),
        bin_dir=bin_dir,
    )
    return [d for d in yaml.safe_load_all(out) if d]


def install(cluster: ClusterInfo, values: dict[str, Any]) -> None:
    """`helm upgrade --install` into the local cluster (idempotent)."""
    helm(
        cluster,
        "upgrade",
        "--install",
        RELEASE,
        str(CHART),
        f"--namespace={NAMESPACE}",
        "--create-namespace",
        *_set_flags(values),
    )


def service_account_kubeconfig(
    cluster: ClusterInfo, target: Path, *, name: str = "tunegate-operator"
) -> Path:
    """A kubeconfig that authenticates as the chart's ServiceAccount (TokenRequest)."""
    token = cluster.kubectl("create", "token", name, f"--namespace={NAMESPACE}", "--duration=24h")
    if token.returncode != 0:
        raise HelmError(f"kubectl create token {name}: {token.stderr.strip()}")
    admin = yaml.safe_load(Path(cluster.kubeconfig).read_text())
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": admin["clusters"],
        "users": [{"name": name, "user": {"token": token.stdout.strip()}}],
        "contexts": [
            {
                "name": name,
                "context": {"cluster": admin["clusters"][0]["name"], "user": name},
            }
        ],
        "current-context": name,
    }
    target.write_text(yaml.safe_dump(config))
    target.chmod(0o600)
    return target


def apply_s3_secret(cluster: ClusterInfo, *, namespace: str, name: str) -> None:
    """The local S3's keys as the Secret the chart and FineTuneJobs name (the namespace
    is created when missing)."""
    documents = [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "stringData": {
                "AWS_ACCESS_KEY_ID": cluster.s3_access_key,
                "AWS_SECRET_ACCESS_KEY": cluster.s3_secret_key,
            },
        },
    ]
    for document in documents:
        result = cluster.kubectl("apply", "-f", "-", stdin=json.dumps(document))
        if result.returncode != 0:
            raise HelmError(f"kubectl apply {document['kind']} {name}: {result.stderr.strip()}")


def process_operator_values(cluster: ClusterInfo, *, secret: str) -> dict[str, Any]:
    """The chart with no operator pod: tests run the operator as a local process
    authenticated with the chart's ServiceAccount."""
    return {
        "operator.replicas": 0,
        "s3.endpoint": cluster.s3_endpoint,
        "s3.credentialsSecret": secret,
    }


def image_values(image: str) -> dict[str, str]:
    repository, tag = image.rsplit(":", 1)
    return {"operator.image.repository": repository, "operator.image.tag": tag}


class ChartOperator:
    """The operator as the chart runs it on the real node: its Deployment, in-cluster
    config, the chart's ServiceAccount, the image built from operator/Dockerfile. Exits
    by scaling back to the process-operator install, so only one operator acts."""

    def __init__(
        self, cluster: ClusterInfo, *, secret: str, pool: str, extra: dict[str, Any] | None = None
    ) -> None:
        if not cluster.real_node:
            raise RuntimeError("the chart's operator needs the real node (TUNEGATE_REAL_NODE)")
        self.cluster = cluster
        self.secret = secret
        self.values: dict[str, Any] = {
            **process_operator_values(cluster, secret=secret),
            **image_values(cluster.operator_image),
            "operator.replicas": 1,
            # kwok's fake nodes run nothing; the real node carries the GPU taint.
            "operator.nodeSelector": {POOL_LABEL: pool},
            "operator.tolerations": [GPU_TOLERATION],
            "trainer.image": cluster.trainer_image,
            "audit.image": cluster.audit_image,
            "audit.nodeSelector": {POOL_LABEL: pool},
            "audit.tolerations": [GPU_TOLERATION],
            # The real node is this 2-core machine; the default (2 CPUs) cannot fit.
            "audit.resources": {"requests": {"cpu": "250m", "memory": "1Gi"}},
            "retryBaseSeconds": 2,
            "operator.extraEnv": [
                {"name": "TUNEGATE_PROGRESS_INTERVAL_SECONDS", "value": "5"},
                # A replaced pod must not wait a minute for its predecessor's lease.
                {"name": "TUNEGATE_PEERING_LIFETIME_SECONDS", "value": "10"},
            ],
            **(extra or {}),
        }

    def __enter__(self) -> ChartOperator:
        self.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def start(self) -> None:
        # The operator's own S3 identity (it reads results and promotes).
        apply_s3_secret(self.cluster, namespace=NAMESPACE, name=self.secret)
        install(self.cluster, self.values)
        wait_until(
            lambda: self.cluster.kubectl(
                "rollout", "status", f"deployment/{RELEASE}-operator",
                f"--namespace={NAMESPACE}", "--timeout=5s",
            ).returncode == 0,
            timeout=180,
            what=lambda: "the chart's operator Deployment to become available:\n" + self.describe(),
        )  # fmt: skip

    def pods(self) -> list[dict[str, Any]]:
        out = self.cluster.kubectl(
            "get", "pods", f"--namespace={NAMESPACE}", "-o", "json",
            "-l", "app.kubernetes.io/component=operator",
        )  # fmt: skip
        listed = json.loads(out.stdout or '{"items": []}')["items"]
        # A rollout's replaced pod may still be terminating.
        return [pod for pod in listed if not pod["metadata"].get("deletionTimestamp")]

    def describe(self) -> str:
        pods = self.cluster.kubectl(
            "describe",
            "pods",
            f"--namespace={NAMESPACE}",
            "-l",
            "app.kubernetes.io/component=operator",
        )
        return pods.stdout[-3000:] + "\n" + self.logs(previous=True)[-3000:]

    def log_text(self) -> str:
        return self.logs(tail=-1)

    def logs(self, *, previous: bool = False, tail: int = 400) -> str:
        result = self.cluster.kubectl(
            "logs", f"deployment/{RELEASE}-operator", f"--namespace={NAMESPACE}",
            *(["--previous"] if previous else []), f"--tail={tail}",
        )  # fmt: skip
        return result.stdout + result.stderr

    def stop(self) -> None:
        install(self.cluster, process_operator_values(self.cluster, secret=self.secret))
        wait_until(
            lambda: not self.pods(),
            timeout=120,
            what="the chart's operator pod to go after scaling to zero",
        )
