"""A real node: containerd (CRI, runc, CNI bridge), the kubelet, a fake-GPU device
plugin and CoreDNS, on a bridge the harness owns.

The harness is root on this machine, so the node is the machine itself: pods are
real containers from the images in `images.py`, with real cgroup limits, volumes,
securityContext, networking and DNS. Everything started here is undone by `stop`:
pods (through the CRI, which also releases their network namespaces), processes,
the DNAT rule, the bridge and the mounts under the state directory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from tunegate_cluster.control_plane import write_kubeconfig
from tunegate_cluster.images import CACHE_ROOT, REPOSITORY, ImageBuilder, ImageSet
from tunegate_cluster.node_host import (
    NodeCredentials,
    ServiceRoute,
    delete_network,
    iptables_chains,
    kubepods_cgroups,
    remove_cgroups_added_since,
    remove_chains_added_since,
    run,
)
from tunegate_cluster.processes import ProcessGroup, wait_until
from tunegate_cluster.real_node_config import (
    CNI_BIN_DIR,
    REAL_NODE_NAME,
    RUNC,
    NodeNetwork,
    cni_conflist,
    containerd_config,
    corefile,
    device_plugin_args,
    kubelet_config,
    node_labels,
    node_taint,
)

# Imported images outlive a cluster here, as on a real node: importing the trainer
# image again on every start would cost minutes.
CONTAINERD_ROOT = CACHE_ROOT / "node" / "containerd"
DEVICE_PLUGIN_DIR = Path("/var/lib/kubelet/device-plugins")  # fixed in the kubelet
# The kubelet sets these machine-wide at start (protectKernelDefaults: false); they
# are put back as found when the node stops.
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")
K8S_NAMESPACE = "k8s.io"


def stale_images(listed: list[tuple[str, str]], *, keep: tuple[str, ...]) -> list[str]:
    """Refs of our earlier builds. The CRI names each image a second time by its id
    (`sha256:...`); that alias holds the layers alive after the tag is removed, so it
    goes too unless it is an alias of an image kept."""
    kept_digests = {digest for ref, digest in listed if ref in keep}
    return [
        ref
        for ref, digest in listed
        if ref not in keep
        and digest not in kept_digests
        and (ref.startswith(f"{REPOSITORY}/") or ref.startswith("sha256:"))
    ]


class RealNodeUnavailableError(RuntimeError):
    """This machine cannot run the real node; the message says what is missing."""


def missing_prerequisites() -> list[str]:
    """What the real node needs from the machine (Debian package names)."""
    problems = []
    if os.geteuid() != 0:
        problems.append("root (containers, bridges and cgroups need it)")
    for tool, package in (
        ("containerd", "containerd"),
        ("ctr", "containerd"),
        (str(RUNC), "runc"),
        ("buildah", "buildah"),
        ("mmdebstrap", "mmdebstrap"),
        ("iptables", "iptables"),
        ("ip", "iproute2"),
    ):
        if shutil.which(tool) is None:
            problems.append(f"{tool} (Debian package {package})")
    for plugin in ("bridge", "host-local", "loopback", "portmap"):
        if not (CNI_BIN_DIR / plugin).exists():
            problems.append(f"CNI plugin {plugin} (Debian package containernetworking-plugins)")
    return problems


@dataclass
class RealNode:
    """The node's processes (its own group: pods must be removed between stopping the
    kubelet and stopping containerd) and what `stop` must undo that is not a process."""

    bin_dir: Path
    state_dir: Path
    network: NodeNetwork
    credentials: NodeCredentials
    log_dir: Path
    route: ServiceRoute | None = None
    socket: Path = field(init=False)
    saved_sysctls: dict[str, str] = field(default_factory=dict)
    chains_before: set[tuple[str, str]] = field(default_factory=set)
    cgroups_before: set[Path] = field(default_factory=set)
    created_dirs: list[Path] = field(default_factory=list)

    group: ProcessGroup = field(init=False)

    def __post_init__(self) -> None:
        self.socket = self.state_dir / "containerd" / "containerd.sock"
        self.group = ProcessGroup(log_dir=self.log_dir)

    # -- containerd ---------------------------------------------------------------

    def start_runtime(self, *, sandbox_image: str) -> None:
        for directory in ("containerd", "cni/net.d", "cni/ipam"):
            (self.state_dir / directory).mkdir(parents=True, exist_ok=True)
        CONTAINERD_ROOT.mkdir(parents=True, exist_ok=True)
        (self.state_dir / "cni" / "net.d" / "10-tunegate.conflist").write_text(
            cni_conflist(self.network, ipam_dir=self.state_dir / "cni" / "ipam")
        )
        config = self.state_dir / "containerd" / "config.toml"
        config.write_text(
            containerd_config(
                root=CONTAINERD_ROOT,
                state=self.state_dir / "containerd" / "state",
                socket=self.socket,
                sandbox_image=sandbox_image,
                cni_conf_dir=self.state_dir / "cni" / "net.d",
            )
        )
        self.group.start("containerd", ["containerd", f"--config={config}"])
        wait_until(
            lambda: self.ctr("version").returncode == 0,
            timeout=60,
            what="containerd answering on its socket (is another local cluster's node running?)",
        )

    def ctr(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(
            "ctr", f"--address={self.socket}", f"--namespace={K8S_NAMESPACE}", *args, check=False
        )

    def crictl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return run(
            str(self.bin_dir / "crictl"),
            f"--runtime-endpoint=unix://{self.socket}",
            "--timeout=60s",
            *args,
            check=False,
        )

    def imported(self) -> set[str]:
        listed = self.ctr("images", "list", "--quiet")
        return set(listed.stdout.split())

    def listed_images(self) -> list[tuple[str, str]]:
        """(ref, manifest digest) of every image in the node's namespace."""
        listed = self.ctr("images", "list")
        return [
            (columns[0], columns[2])
            for columns in (line.split() for line in listed.stdout.splitlines()[1:])
            if len(columns) >= 3
        ]

    def import_images(self, images: ImageSet, builder: ImageBuilder) -> list[str]:
        """Import every image the runtime lacks (after removing our earlier builds, which
        containerd then garbage-collects); returns the ones imported."""
        for ref in stale_images(self.listed_images(), keep=images.all()):
            self.ctr("images", "remove", "--sync", ref)  # --sync: wait for the GC
        missing = [ref for ref in images.all() if ref not in self.imported()]
        for ref in missing:
            with tempfile.TemporaryDirectory(prefix="tunegate-oci-", dir=CACHE_ROOT) as tmp:
                archive = Path(tmp) / "image.tar"
                builder.export_oci(ref, archive)
                result = self.ctr("images", "import", "--snapshotter=overlayfs", str(archive))
                if result.returncode != 0:
                    raise RuntimeError(f"importing {ref} into containerd: {result.stderr.strip()}")
            if ref not in self.imported():
                raise RuntimeError(f"containerd did not list {ref} after importing it")
        return missing

    # -- kubelet, device plugin, DNS ------------------------------------------------

    def start_kubelet(
        self, *, api_url: str, api_ca: Path, kubelet_port: int, healthz_port: int
    ) -> None:
        kubelet_dir = self.state_dir / "kubelet"
        kubelet_dir.mkdir(parents=True, exist_ok=True)
        kubeconfig = kubelet_dir / "kubeconfig"
        write_kubeconfig(
            kubeconfig,
            server=api_url,
            token=self.credentials.node_token,
            ca_file=api_ca,
            user=f"system:node:{REAL_NODE_NAME}",
        )
        config = kubelet_dir / "config.yaml"
        config.write_text(
            kubelet_config(
                runtime_socket=self.socket,
                network=self.network,
                port=kubelet_port,
                healthz_port=healthz_port,
                client_ca=self.credentials.kubelet_client_ca,
                pod_logs_dir=self.state_dir / "pod-logs",
            )
        )
        self.created_dirs = [
            d
            for d in (*reversed(DEVICE_PLUGIN_DIR.parents[:3]), DEVICE_PLUGIN_DIR)
            if not d.exists()
        ]
        DEVICE_PLUGIN_DIR.mkdir(parents=True, exist_ok=True)
        self.chains_before = iptables_chains()
        self.cgroups_before = {d for d in kubepods_cgroups() if d.is_dir()}
        for name in KUBELET_SYSCTLS:
            with contextlib.suppress(OSError):
                self.saved_sysctls[name] = (Path("/proc/sys") / name).read_text().strip()
        labels = ",".join(f"{k}={v}" for k, v in node_labels().items())
        self.group.start(
            "kubelet",
            [
                str(self.bin_dir / "kubelet"),
                f"--config={config}",
                f"--kubeconfig={kubeconfig}",
                f"--root-dir={kubelet_dir / 'root'}",
                f"--cert-dir={kubelet_dir / 'pki'}",
                f"--hostname-override={REAL_NODE_NAME}",
                f"--node-ip={self.network.gateway}",
                f"--node-labels={labels}",
                f"--register-with-taints={node_taint()}",
                "--v=1",
            ],
        )
        self.group.start(
            "fake-gpu-device-plugin", device_plugin_args(self.bin_dir / "fake-gpu-device-plugin")
        )

    def start_dns(self, *, kubeconfig: Path) -> None:
        directory = self.state_dir / "coredns"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "Corefile").write_text(corefile(self.network, kubeconfig=kubeconfig))
        self.group.start(
            "coredns",
            [str(self.bin_dir / "coredns"), "-conf", str(directory / "Corefile")],
            cwd=directory,
        )

    # -- teardown -------------------------------------------------------------------

    def stop(self) -> None:
        """Kubelet first (so nothing restarts pods), then every pod through the CRI
        (containers die, CNI releases addresses, network namespaces go), then
        containerd, then what is not a process."""
        while len(self.group.components) > 1:  # all but containerd, in reverse order
            self.group.stop_last()
        with contextlib.suppress(Exception):
            self._remove_pods()
        self.group.stop()
        self._kill_orphan_shims()
        self._unmount_state()
        for name, value in self.saved_sysctls.items():
            with contextlib.suppress(OSError):
                (Path("/proc/sys") / name).write_text(value)
        if self.chains_before:
            remove_chains_added_since(self.chains_before)
        remove_cgroups_added_since(self.cgroups_before)
        self._remove_device_plugin_dir()
        if self.route is not None:
            self.route.remove()
        delete_network(self.network)

    def _remove_pods(self) -> None:
        if not self.socket.exists():
            return
        pods = self.crictl("pods", "--quiet").stdout.split()
        if pods:
            self.crictl("stopp", *pods)
        self.crictl("rmp", "--all", "--force")

    def _remove_device_plugin_dir(self) -> None:
        """The kubelet's fixed /var/lib/kubelet/device-plugins, if this node made it."""
        if DEVICE_PLUGIN_DIR in self.created_dirs:
            shutil.rmtree(DEVICE_PLUGIN_DIR, ignore_errors=True)
        else:
            for name in ("kubelet.sock", "kubelet_internal_checkpoint"):
                with contextlib.suppress(OSError):
                    (DEVICE_PLUGIN_DIR / name).unlink()
        for directory in reversed(self.created_dirs):
            with contextlib.suppress(OSError):
                directory.rmdir()

    def _kill_orphan_shims(self) -> None:
        """runc shims outlive containerd by design; ours name our socket."""
        marker = str(self.socket).encode()
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                cmdline = (proc / "cmdline").read_bytes()
                if b"containerd-shim" in cmdline and marker in cmdline:
                    os.kill(int(proc.name), 9)

    def _unmount_state(self) -> None:
        """Volumes the kubelet mounted (tmpfs, projected) live under the state dir."""
        targets = [
            line.split()[1]
            for line in Path("/proc/self/mounts").read_text().splitlines()
            if len(line.split()) > 1
        ]
        prefixes = (str(self.state_dir) + "/", str(CONTAINERD_ROOT) + "/")
        for target in sorted((t for t in targets if t.startswith(prefixes)), key=len, reverse=True):
            run("umount", "-l", target, check=False)
