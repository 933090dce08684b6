"""The Helm chart against the local cluster: install it, and run the operator with
the chart's ServiceAccount token (so the chart's RBAC is what the operator gets)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from tunegate_cluster.cluster import ClusterInfo

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
