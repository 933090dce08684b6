"""etcd, kube-apiserver, kube-controller-manager and kube-scheduler on loopback."""

from __future__ import annotations

import secrets
import socket
import ssl
import subprocess
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from tunegate_cluster.processes import ProcessGroup, wait_until

LOOPBACK = "127.0.0.1"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class ApiServerAccess:
    url: str
    admin_token: str
    ca_file: Path
    kubeconfig: Path


def write_kubeconfig(path: Path, *, server: str, token: str, ca_file: Path, user: str) -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "tunegate-local",
                "cluster": {"server": server, "certificate-authority": str(ca_file)},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": "tunegate-local", "context": {"cluster": "tunegate-local", "user": user}}
        ],
        "current-context": "tunegate-local",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)


def _https_ok(url: str, *, ca_file: Path | None, token: str | None = None) -> bool:
    context = (
        ssl.create_default_context(cafile=str(ca_file))
        if ca_file
        else ssl._create_unverified_context()
    )
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(request, context=context, timeout=5) as response:
        return bool(response.status == 200)


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=5) as response:
        return bool(response.status == 200)


@dataclass(frozen=True)
class NodeAccess:
    """A real node's identity and the API server's client certificate for kubelets."""

    token_line: str
    kubelet_client_cert: Path
    kubelet_client_key: Path


def start_control_plane(
    group: ProcessGroup,
    *,
    bin_dir: Path,
    state_dir: Path,
    host: str = LOOPBACK,
    node: NodeAccess | None = None,
) -> ApiServerAccess:
    """Start the four components in order, each polled until healthy. The API server
    listens on `host`: loopback, or the real node's bridge address that pods reach."""
    pki = state_dir / "pki"
    pki.mkdir(parents=True, exist_ok=True)
    sa_key = pki / "service-account.key"
    subprocess.run(
        ["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True
    )
    admin_token = secrets.token_hex(24)
    token_file = pki / "tokens.csv"
    token_file.write_text(
        f'{admin_token},admin,admin,"system:masters"\n' + (node.token_line if node else "")
    )
    token_file.chmod(0o600)

    etcd_port, etcd_peer_port = free_port(), free_port()
    etcd_url = f"http://{LOOPBACK}:{etcd_port}"
    peer_url = f"http://{LOOPBACK}:{etcd_peer_port}"
    group.start(
        "etcd",
        [
            str(bin_dir / "etcd"),
            f"--data-dir={state_dir / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=default={peer_url}",
            "--unsafe-no-fsync",
            "--log-level=warn",
        ],
        restart=True,
    )
    wait_until(lambda: http_ok(f"{etcd_url}/health"), timeout=30, what="etcd /health")

    api_port = free_port()
    # The API server signs its own serving certificate for the address it binds; a
    # kept state dir may have bound another (with or without the real node's bridge).
    cert_dir = pki / f"serving-{host}"
    group.start(
        "kube-apiserver",
        [
            str(bin_dir / "kube-apiserver"),
            f"--etcd-servers={etcd_url}",
            f"--bind-address={host}",
            f"--advertise-address={host}",
            f"--secure-port={api_port}",
            f"--cert-dir={cert_dir}",
            f"--token-auth-file={token_file}",
            "--authorization-mode=Node,RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={sa_key}",
            f"--service-account-signing-key-file={sa_key}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # A loopback advertise address cannot back the `kubernetes` Service endpoints.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
            *(
                [
                    f"--kubelet-client-certificate={node.kubelet_client_cert}",
                    f"--kubelet-client-key={node.kubelet_client_key}",
                    "--kubelet-preferred-address-types=InternalIP",
                ]
                if node
                else []
            ),
        ],
        restart=True,
    )
    url = f"https://{host}:{api_port}"
    ca_file = cert_dir / "apiserver.crt"
    wait_until(
        lambda: _https_ok(f"{url}/readyz", ca_file=ca_file, token=admin_token),
        timeout=90,
        what="kube-apiserver /readyz",
    )
    kubeconfig = state_dir / "kubeconfig"
    write_kubeconfig(kubeconfig, server=url, token=admin_token, ca_file=ca_file, user="admin")

    for name, extra in (
        (
            "kube-controller-manager",
            [
                "--controllers=*",
                f"--service-account-private-key-file={sa_key}",
                f"--root-ca-file={ca_file}",
                "--use-service-account-credentials=false",
                # Fake nodes report no pod CIDR and no cloud; keep those controllers quiet.
                "--allocate-node-cidrs=false",
                "--node-monitor-grace-period=60s",
            ],
        ),
        ("kube-scheduler", []),
    ):
        port = free_port()
        group.start(
            name,
            [
                str(bin_dir / name),
                f"--kubeconfig={kubeconfig}",
                f"--authentication-kubeconfig={kubeconfig}",
                f"--authorization-kubeconfig={kubeconfig}",
                # No front-proxy CA here, so there is no extension-apiserver-authentication
                # ConfigMap to look up; without this both components log an error per second.
                "--authentication-skip-lookup=true",
                "--leader-elect=false",
                f"--bind-address={LOOPBACK}",
                f"--secure-port={port}",
                *extra,
            ],
        )
        wait_until(
            lambda port=port: _https_ok(f"https://{LOOPBACK}:{port}/healthz", ca_file=None),  # type: ignore[misc]
            timeout=60,
            what=f"{name} /healthz",
        )
    return ApiServerAccess(url=url, admin_token=admin_token, ca_file=ca_file, kubeconfig=kubeconfig)
