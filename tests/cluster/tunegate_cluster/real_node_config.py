"""Configuration of the real node's parts, as pure functions of where things live.

containerd (CRI), the CNI network, the kubelet and CoreDNS each get one document;
`real_node.py` writes them and starts the processes.
"""

from __future__ import annotations

import ipaddress
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunegate_cluster.node_pools import GPU_RESOURCE, GPU_TAINT, POOL_LABEL

REAL_NODE_NAME = "real-0"
REAL_POOL = "real"
CLUSTER_DOMAIN = "cluster.local"
CNI_BIN_DIR = Path("/usr/lib/cni")
RUNC = Path("/usr/sbin/runc")
# Fake GPUs the device plugin advertises; pods run on CPU whatever they request.
REAL_NODE_GPUS = 4
REAL_NODE_GPU_PRODUCT = "LOCAL-CPU-AS-GPU"
REAL_NODE_GPU_MEMORY_MIB = 24576


@dataclass(frozen=True)
class NodeNetwork:
    """The bridge the harness owns: pods get addresses from `subnet`, and the host's
    address on it (`gateway`) serves the API server, S3, DNS and the kubelet."""

    bridge: str
    subnet: str

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @property
    def prefix_length(self) -> int:
        return ipaddress.ip_network(self.subnet).prefixlen


def node_labels() -> dict[str, str]:
    """The labels GPU Feature Discovery puts on a GPU node, plus the pool label."""
    return {
        POOL_LABEL: REAL_POOL,
        "nvidia.com/gpu.present": "true",
        "nvidia.com/gpu.product": REAL_NODE_GPU_PRODUCT,
        "nvidia.com/gpu.memory": str(REAL_NODE_GPU_MEMORY_MIB),
        "nvidia.com/gpu.count": str(REAL_NODE_GPUS),
    }


def node_taint() -> str:
    return f"{GPU_TAINT['key']}={GPU_TAINT['value']}:{GPU_TAINT['effect']}"


def containerd_config(
    *, root: Path, state: Path, socket: Path, sandbox_image: str, cni_conf_dir: Path
) -> str:
    """containerd 1.6 config (version 2) with the CRI plugin on runc and overlayfs.

    `restrict_oom_score_adj`: root here lacks CAP_SYS_RESOURCE, so lowering a
    process's oom_score_adj (the kubelet asks -998 for sandboxes) fails; containerd
    then clamps requests to its own score instead of failing every pod start."""
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return "\n".join(
        [
            "version = 2",
            f'root = "{root}"',
            f'state = "{state}"',
            "disabled_plugins = ["
            + ", ".join(
                f'"io.containerd.snapshotter.v1.{name}"'
                for name in ("aufs", "btrfs", "devmapper", "zfs")
            )
            + "]",
            "[grpc]",
            f'  address = "{socket}"',
            f"[{cri}]",
            f'  sandbox_image = "{sandbox_image}"',
            "  restrict_oom_score_adj = true",
            "  disable_apparmor = true",
            f"[{cri}.containerd]",
            '  snapshotter = "overlayfs"',
            '  default_runtime_name = "runc"',
            f"[{cri}.containerd.runtimes.runc]",
            '  runtime_type = "io.containerd.runc.v2"',
            f"[{cri}.containerd.runtimes.runc.options]",
            "  SystemdCgroup = false",
            f'  BinaryName = "{RUNC}"',
            f"[{cri}.cni]",
            f'  bin_dir = "{CNI_BIN_DIR}"',
            f'  conf_dir = "{cni_conf_dir}"',
            "",
        ]
    )


def cni_conflist(network: NodeNetwork, *, ipam_dir: Path) -> str:
    """bridge + host-local addresses on the harness's bridge, and portmap."""
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "tunegate",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": network.bridge,
                    "isGateway": True,
                    "ipMasq": False,
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": str(ipam_dir),
                        "ranges": [[{"subnet": network.subnet, "gateway": network.gateway}]],
                        "routes": [{"dst": "0.0.0.0/0"}],
                    },
                },
                {"type": "portmap", "capabilities": {"portMappings": True}},
            ],
        },
        indent=2,
    )


def kubelet_config(
    *,
    runtime_socket: Path,
    network: NodeNetwork,
    port: int,
    healthz_port: int,
    client_ca: Path,
    pod_logs_dir: Path,
) -> str:
    config: dict[str, Any] = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "containerRuntimeEndpoint": f"unix://{runtime_socket}",
        # containerd 1.6 does not report its cgroup driver; cgroup v1 on this machine.
        "cgroupDriver": "cgroupfs",
        "address": network.gateway,
        "port": port,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": healthz_port,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(client_ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDNS": [network.gateway],
        "clusterDomain": CLUSTER_DOMAIN,
        "podLogsDir": str(pod_logs_dir),
        # The kubelet would set its own score to -999, which needs CAP_SYS_RESOURCE.
        "oomScoreAdj": 0,
        "failSwapOn": False,
        "serializeImagePulls": False,
        # Images are imported, never pulled: garbage-collecting them would lose them.
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        # A shared CI machine's disk is not this node's to protect; evict only when
        # truly out of memory or disk.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "imagefs.available": "1%",
        },
        "maxPods": 110,
        "resolvConf": "",
        "staticPodPath": "",
    }
    return yaml.safe_dump(config, sort_keys=False)


def corefile(network: NodeNetwork, *, kubeconfig: Path) -> str:
    """Cluster DNS for cluster.local on the node's gateway address; nothing else is
    resolved (there is no upstream to forward to)."""
    return (
        f"{CLUSTER_DOMAIN}:53 in-addr.arpa:53 {{\n"
        f"    bind {network.gateway}\n"
        "    errors\n"
        f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa {{\n"
        f"        kubeconfig {kubeconfig} tunegate-local\n"
        "        pods insecure\n"
        "        fallthrough in-addr.arpa\n"
        "    }\n"
        "}\n"
        ".:53 {\n"
        f"    bind {network.gateway}\n"
        "    errors\n"
        "    template ANY ANY {\n"
        "        rcode NXDOMAIN\n"
        "    }\n"
        "}\n"
    )


def device_plugin_args(binary: Path) -> list[str]:
    return [str(binary), f"--devices={REAL_NODE_GPUS}", f"--resource={GPU_RESOURCE}"]
