"""Pure parts of the real node: its configs and the image cache keys."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import yaml

from tunegate_cluster import images
from tunegate_cluster.real_node_config import (
    NodeNetwork,
    cni_conflist,
    containerd_config,
    corefile,
    kubelet_config,
)

ROOT = Path(__file__).resolve().parents[2]
NETWORK = NodeNetwork(bridge="tg0", subnet="10.88.7.0/24")


def test_the_gateway_is_the_subnets_first_address() -> None:
    assert NETWORK.gateway == "10.88.7.1"
    assert NETWORK.prefix_length == 24


def test_containerd_config_is_valid_toml_with_the_cri_settings_this_machine_needs() -> None:
    config = tomllib.loads(
        containerd_config(
            root=Path("/r"),
            state=Path("/s"),
            socket=Path("/s/c.sock"),
            sandbox_image="localhost/tunegate/pause:abc",
            cni_conf_dir=Path("/n"),
        )
    )
    cri = config["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True  # no CAP_SYS_RESOURCE here
    assert cri["sandbox_image"] == "localhost/tunegate/pause:abc"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["cni"]["conf_dir"] == "/n"
    assert config["grpc"]["address"] == "/s/c.sock"


def test_pods_get_addresses_on_the_bridge_and_dns_at_its_gateway() -> None:
    conflist = json.loads(cni_conflist(NETWORK, ipam_dir=Path("/ipam")))
    bridge = conflist["plugins"][0]
    assert bridge["bridge"] == "tg0"
    assert bridge["ipam"]["ranges"] == [[{"subnet": "10.88.7.0/24", "gateway": "10.88.7.1"}]]
    kubelet = yaml.safe_load(
        kubelet_config(
            runtime_socket=Path("/s/c.sock"),
            network=NETWORK,
            port=10250,
            healthz_port=10248,
            client_ca=Path("/ca.crt"),
            pod_logs_dir=Path("/logs"),
        )
    )
    assert kubelet["clusterDNS"] == ["10.88.7.1"]
    assert kubelet["cgroupDriver"] == "cgroupfs"
    assert kubelet["oomScoreAdj"] >= 0
    assert "bind 10.88.7.1" in corefile(NETWORK, kubeconfig=Path("/k"))


def test_the_image_cache_key_covers_exactly_what_the_dockerfiles_copy() -> None:
    for image in images.PROJECT_IMAGES:
        sources = images.copied_sources(ROOT / image.dockerfile)
        assert "constraints.txt" in sources and "pyproject.toml" in sources
        for source in sources:
            assert (ROOT / source).exists(), f"{image.dockerfile} copies missing {source}"


def test_the_cache_key_changes_with_a_copied_file_and_not_with_another(tmp_path: Path) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text("a = 1\n")
    (tmp_path / "other.txt").write_text("x")

    def key() -> str:
        return images.content_tag(context=tmp_path, sources=["pkg"], extra=["base@1"])

    before = key()
    (tmp_path / "other.txt").write_text("y")
    (tmp_path / "pkg" / "__pycache__").mkdir()
    (tmp_path / "pkg" / "__pycache__" / "a.pyc").write_bytes(b"\0")
    assert key() == before
    (tmp_path / "pkg" / "a.py").write_text("a = 2\n")
    assert key() != before
    assert images.content_tag(context=tmp_path, sources=["pkg"], extra=["base@2"]) != key()


def test_copy_lines_with_flags_and_continuations_are_parsed(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        "FROM x\nCOPY --chown=1:1 a.txt \\\n  b/ /dst/\nCOPY --from=build /out /out\n"
        "RUN echo COPY nope\nADD c.tar /\n"
    )
    assert images.copied_sources(dockerfile) == ["a.txt", "b/", "c.tar"]
