"""What the real node changes on this machine, and how each change is undone: the
bridge, the `kubernetes` Service route, the kubelet's iptables chains and cgroups,
and the certificates and token that tie the node to the API server."""

from __future__ import annotations

import contextlib
import random
import secrets
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tunegate_cluster.control_plane import NodeAccess
from tunegate_cluster.real_node_config import REAL_NODE_NAME, NodeNetwork

KUBERNETES_SERVICE_IP = "10.96.0.1"


class NoFreeSubnetError(RuntimeError):
    pass


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {result.stderr.strip() or result.stdout.strip()}")
    return result


def _used_subnets() -> str:
    return run("ip", "-4", "route", "show").stdout


def create_network() -> NodeNetwork:
    """A bridge with the host's address on a /24 no route on this machine uses yet."""
    routes = _used_subnets()
    for _ in range(50):
        third = random.randrange(1, 255)
        subnet = f"10.88.{third}.0/24"
        if f"10.88.{third}." not in routes:
            break
    else:
        raise NoFreeSubnetError("no free 10.88.x.0/24 subnet for the node's bridge")
    network = NodeNetwork(bridge=f"tg{random.randrange(16**6):06x}", subnet=subnet)
    run("ip", "link", "add", network.bridge, "type", "bridge")
    run("ip", "addr", "add", f"{network.gateway}/{network.prefix_length}", "dev", network.bridge)
    run("ip", "link", "set", network.bridge, "up")
    return network


def delete_network(network: NodeNetwork) -> None:
    run("ip", "link", "delete", network.bridge, check=False)


def iptables_chains() -> set[tuple[str, str]]:
    """(table, chain) of every chain on the machine now."""
    chains, table = set(), ""
    for line in run("iptables-save").stdout.splitlines():
        if line.startswith("*"):
            table = line[1:]
        elif line.startswith(":"):
            chains.add((table, line[1:].split()[0]))
    return chains


def remove_chains_added_since(before: set[tuple[str, str]]) -> None:
    """The kubelet adds KUBE-FIREWALL and canary chains and never removes them."""
    added = iptables_chains() - before
    for table in {t for t, _ in added}:
        names = {c for t, c in added if t == table}
        for rule in run("iptables", "-t", table, "-S").stdout.splitlines():
            words = shlex.split(rule)
            if words[:1] == ["-A"] and "-j" in words and words[words.index("-j") + 1] in names:
                run("iptables", "-t", table, "-D", *words[1:], check=False)
        for chain in names:
            run("iptables", "-t", table, "-F", chain, check=False)
        for chain in names:
            run("iptables", "-t", table, "-X", chain, check=False)


def remove_cgroups_added_since(before: set[Path]) -> None:
    """The kubelet's `kubepods` hierarchy in each controller, once its pods are gone."""
    for top in kubepods_cgroups():
        if top in before or not top.is_dir():
            continue
        nested = sorted((d for d in top.rglob("*") if d.is_dir()), key=lambda d: len(d.parts))
        for directory in [*reversed(nested), top]:
            with contextlib.suppress(OSError):
                directory.rmdir()


def kubepods_cgroups() -> list[Path]:
    root = Path("/sys/fs/cgroup")
    return [controller / "kubepods" for controller in root.iterdir()] if root.is_dir() else []


@dataclass
class ServiceRoute:
    """The `kubernetes` Service, routed the way kube-proxy would: a DNAT from its
    ClusterIP to the API server. No other Service is routed (the tests use none)."""

    chain: str
    api_host: str
    api_port: int
    installed: bool = False

    def install(self) -> None:
        run("iptables", "-t", "nat", "-N", self.chain)
        run(
            "iptables", "-t", "nat", "-A", self.chain,
            "-d", f"{KUBERNETES_SERVICE_IP}/32", "-p", "tcp", "--dport", "443",
            "-j", "DNAT", "--to-destination", f"{self.api_host}:{self.api_port}",
        )  # fmt: skip
        run("iptables", "-t", "nat", "-I", "PREROUTING", "-j", self.chain)
        self.installed = True

    def remove(self) -> None:
        if not self.installed:
            return
        run("iptables", "-t", "nat", "-D", "PREROUTING", "-j", self.chain, check=False)
        run("iptables", "-t", "nat", "-F", self.chain, check=False)
        run("iptables", "-t", "nat", "-X", self.chain, check=False)
        self.installed = False


@dataclass(frozen=True)
class NodeCredentials:
    """What the control plane must know about the node before it starts."""

    node_token: str
    kubelet_client_ca: Path
    apiserver_kubelet_cert: Path
    apiserver_kubelet_key: Path

    def control_plane_access(self) -> NodeAccess:
        return NodeAccess(
            token_line=(
                f'{self.node_token},system:node:{REAL_NODE_NAME},{REAL_NODE_NAME},"system:nodes"\n'
            ),
            kubelet_client_cert=self.apiserver_kubelet_cert,
            kubelet_client_key=self.apiserver_kubelet_key,
        )


def make_credentials(pki: Path) -> NodeCredentials:
    """A CA the kubelet trusts for client certificates, and the API server's client
    certificate from it (for logs and exec); a token for the node's own identity."""
    pki.mkdir(parents=True, exist_ok=True)
    ca_key, ca_cert = pki / "kubelet-client-ca.key", pki / "kubelet-client-ca.crt"
    key, csr, cert = (
        pki / "apiserver-kubelet.key",
        pki / "apiserver-kubelet.csr",
        pki / "apiserver-kubelet.crt",
    )
    run(
        "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30",
        "-subj", "/CN=tunegate-kubelet-client-ca", "-keyout", str(ca_key), "-out", str(ca_cert),
    )  # fmt: skip
    run(
        "openssl", "req", "-newkey", "rsa:2048", "-nodes",
        "-subj", "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "-keyout", str(key), "-out", str(csr),
    )  # fmt: skip
    run(
        "openssl", "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key),
        "-CAcreateserial", "-days", "30", "-out", str(cert),
    )  # fmt: skip
    for path in (ca_key, key):
        path.chmod(0o600)
    return NodeCredentials(
        node_token=secrets.token_hex(24),
        kubelet_client_ca=ca_cert,
        apiserver_kubelet_cert=cert,
        apiserver_kubelet_key=key,
    )
