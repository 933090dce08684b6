"""Kueue v0.17, built from source, admitting the cluster's queued Jobs.

Upstream's CRDs and webhook rules are applied as released. Two things differ from
its Helm install because this cluster has no Service routing: the webhooks are
registered by URL on the address Kueue listens on, and their certificate comes from a
CA made here rather than from Kueue's own certificate rotator.
"""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from tunegate_cluster.control_plane import free_port, http_ok
from tunegate_cluster.node_pools import POOL_LABEL
from tunegate_cluster.processes import ProcessGroup, wait_until

if TYPE_CHECKING:
    from tunegate_cluster.cluster import ClusterInfo

NAMESPACE = "kueue-system"
# Only Jobs are managed; the operator creates nothing else that Kueue admits.
FRAMEWORKS = ("batch/job",)
WEBHOOK_GROUPS = {"batch", "kueue.x-k8s.io"}
# Without its certificate rotator Kueue reads the metrics certificate from this fixed
# path; the process gets a private mount namespace where the harness's is bound there.
METRICS_CERT_DIR = Path("/etc/kueue/metrics/certs")


@dataclass(frozen=True)
class KueueCerts:
    ca: Path
    cert: Path
    key: Path

    @property
    def directory(self) -> Path:
        return self.cert.parent


def _openssl(*argv: str) -> None:
    subprocess.run(["openssl", *argv], check=True, capture_output=True)


def make_serving_certs(pki: Path, host: str) -> KueueCerts:
    """A CA and a certificate for `host` signed by it (the API server dials an IP)."""
    serving = pki / "serving"
    serving.mkdir(parents=True, exist_ok=True)
    ca_key, ca = pki / "ca.key", pki / "ca.crt"
    key, csr, cert = serving / "tls.key", pki / "tls.csr", serving / "tls.crt"
    extensions = pki / "san.cnf"
    extensions.write_text(
        f"subjectAltName=IP:{host}\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n"
    )
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
             "-subj", "/CN=tunegate-kueue-ca", "-keyout", str(ca_key), "-out", str(ca))  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=kueue-webhook",
             "-keyout", str(key), "-out", str(csr))  # fmt: skip
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key),
             "-CAcreateserial", "-days", "30", "-extfile", str(extensions),
             "-out", str(cert))  # fmt: skip
    for secret in (ca_key, key):
        secret.chmod(0o600)
    return KueueCerts(ca=ca, cert=cert, key=key)


def configuration(
    *, host: str, webhook_port: int, health_port: int, certs: KueueCerts
) -> dict[str, Any]:
    return {
        "apiVersion": "config.kueue.x-k8s.io/v1beta2",
        "kind": "Configuration",
        "namespace": NAMESPACE,
        "health": {"healthProbeBindAddress": f"{host}:{health_port}"},
        "metrics": {"bindAddress": "0"},
        "webhook": {"port": webhook_port, "host": host, "certDir": str(certs.directory)},
        "leaderElection": {"leaderElect": False},
        "internalCertManagement": {"enable": False},
        "manageJobsWithoutQueueName": False,
        "integrations": {"frameworks": list(FRAMEWORKS)},
    }


def webhook_configurations(
    upstream: str, *, base_url: str, ca_bundle: bytes
) -> list[dict[str, Any]]:
    """Upstream's webhooks for Jobs and Kueue's own kinds, pointed at `base_url`."""
    configurations = []
    for document in yaml.safe_load_all(upstream):
        if not document:
            continue
        webhooks = []
        for webhook in document["webhooks"]:
            groups = {group for rule in webhook["rules"] for group in rule["apiGroups"]}
            if not groups <= WEBHOOK_GROUPS:
                continue
            path = webhook["clientConfig"]["service"]["path"]
            webhook["clientConfig"] = {
                "url": f"{base_url}{path}",
                "caBundle": base64.b64encode(ca_bundle).decode(),
            }
            webhooks.append(webhook)
        name = document["metadata"]["name"]
        document["metadata"] = {"name": f"kueue-{name}"}
        document["webhooks"] = webhooks
        configurations.append(document)
    return configurations


def start_kueue(
    group: ProcessGroup,
    *,
    bin_dir: Path,
    state_dir: Path,
    kubeconfig: Path,
    host: str,
) -> None:
    """CRDs, the controller manager (supervised, restarted if it exits), then webhooks:
    registering them only once Kueue answers keeps Job creation from failing while it
    starts."""
    kubectl = [str(bin_dir / "kubectl"), f"--kubeconfig={kubeconfig}"]
    release = bin_dir / "kueue-release"
    subprocess.run(
        [*kubectl, "apply", "--server-side", "--force-conflicts", "-f", str(release / "crds")],
        check=True, capture_output=True,
    )  # fmt: skip
    subprocess.run(
        [*kubectl, "wait", "--for=condition=Established", "--timeout=60s", "-f",
         str(release / "crds")],
        check=True, capture_output=True,
    )  # fmt: skip
    namespace = json.dumps(
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}}
    )
    subprocess.run([*kubectl, "apply", "-f", "-"], input=namespace, text=True,
                   check=True, capture_output=True)  # fmt: skip

    directory = state_dir / "kueue"
    shutil.rmtree(directory, ignore_errors=True)
    certs = make_serving_certs(directory / "pki", host)
    webhook_port, health_port = free_port(), free_port()
    config_path = directory / "config.yaml"
    config_path.write_text(
        yaml.safe_dump(
            configuration(
                host=host, webhook_port=webhook_port, health_port=health_port, certs=certs
            )
        )
    )
    METRICS_CERT_DIR.mkdir(parents=True, exist_ok=True)
    kueue = [
        str(bin_dir / "kueue"),
        f"--config={config_path}",
        f"--kubeconfig={kubeconfig}",
        # The on-demand visibility API (queue positions) is an aggregated API server;
        # this cluster configures no API aggregation for it to join.
        "--feature-gates=VisibilityOnDemand=false",
        "--zap-log-level=info",
    ]
    group.start(
        "kueue",
        [
            "unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount --bind "$0" "$1" && shift && exec "$@"',
            str(certs.directory), str(METRICS_CERT_DIR), *kueue,
        ],
        restart=True,
    )  # fmt: skip
    wait_until(
        lambda: http_ok(f"http://{host}:{health_port}/readyz"), timeout=120, what="kueue /readyz"
    )
    configurations = webhook_configurations(
        (release / "webhooks.yaml").read_text(),
        base_url=f"https://{host}:{webhook_port}",
        ca_bundle=certs.ca.read_bytes(),
    )
    document = json.dumps({"apiVersion": "v1", "kind": "List", "items": configurations})
    subprocess.run([*kubectl, "apply", "-f", "-"], input=document, text=True,
                   check=True, capture_output=True)  # fmt: skip


# --- queue objects, as a platform team writes them -------------------------------------
API = "kueue.x-k8s.io/v1beta2"
# Quota for what a training pod requests besides GPUs: Kueue admits only Jobs whose
# every requested resource the ClusterQueue covers.
COVERED = ("cpu", "memory", "ephemeral-storage", "nvidia.com/gpu")


def resource_flavor(name: str, node_labels: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "ResourceFlavor",
        "metadata": {"name": name},
        "spec": {"nodeLabels": node_labels},
    }


def cluster_queue(
    name: str, *, flavor: str, gpus: int, namespace: str, hold: bool = False
) -> dict[str, Any]:
    """GPU quota on one flavor; lower priorities are preempted within the queue."""
    quota = {"cpu": "1000", "memory": "10Ti", "ephemeral-storage": "100Ti", "nvidia.com/gpu": gpus}
    return {
        "apiVersion": API,
        "kind": "ClusterQueue",
        "metadata": {"name": name},
        "spec": {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
            "queueingStrategy": "StrictFIFO",
            "preemption": {"withinClusterQueue": "LowerPriority"},
            "stopPolicy": "Hold" if hold else "None",
            "resourceGroups": [
                {
                    "coveredResources": list(COVERED),
                    "flavors": [
                        {
                            "name": flavor,
                            "resources": [
                                {"name": resource, "nominalQuota": str(quota[resource])}
                                for resource in COVERED
                            ],
                        }
                    ],
                }
            ],
        },
    }


def local_queue(name: str, *, namespace: str, cluster_queue_name: str) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": "LocalQueue",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"clusterQueue": cluster_queue_name},
    }


def priority_class(name: str, value: int) -> dict[str, Any]:
    return {
        "apiVersion": "scheduling.k8s.io/v1",
        "kind": "PriorityClass",
        "metadata": {"name": name},
        "value": value,
        "preemptionPolicy": "Never",
    }


def apply_cluster_scoped(cluster: ClusterInfo, manifest: dict[str, Any]) -> None:
    result = cluster.kubectl("apply", "-f", "-", stdin=json.dumps(manifest))
    assert result.returncode == 0, result.stderr


def open_queue(
    cluster: ClusterInfo, namespace: str, *, local_queue_name: str, pool: str, gpus: int,
    hold: bool = False,
) -> str:  # fmt: skip
    """A flavor for one node pool, a ClusterQueue with `gpus` of it for `namespace`, and
    the namespace's LocalQueue; returns the ClusterQueue's (and flavor's) name."""
    name = f"{namespace}-{pool}"
    apply_cluster_scoped(cluster, resource_flavor(name, {POOL_LABEL: pool}))
    apply_cluster_scoped(
        cluster, cluster_queue(name, flavor=name, gpus=gpus, namespace=namespace, hold=hold)
    )
    apply_cluster_scoped(
        cluster, local_queue(local_queue_name, namespace=namespace, cluster_queue_name=name)
    )
    return name


def close_queue(cluster: ClusterInfo, name: str) -> None:
    cluster.kubectl("delete", "clusterqueue", name, "--wait=false")
    cluster.kubectl("delete", "resourceflavor", name, "--wait=false")
