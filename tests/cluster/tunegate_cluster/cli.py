"""`tunegate-cluster build|up`: the local test environment from the command line."""

from __future__ import annotations

import argparse
import shlex
import signal
import sys
import threading
import time
from pathlib import Path

from tunegate_cluster.cluster import (
    ClusterInfo,
    LocalCluster,
    ensure_binaries,
    ensure_images,
    real_node_wanted,
)


def _up(state_dir: Path) -> int:
    stop = threading.Event()
    # While starting (image builds can take minutes), a signal unwinds the start and
    # stops what already runs; once up, it ends the wait below.
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    state_dir.mkdir(parents=True, exist_ok=True)
    cluster = LocalCluster(state_dir=state_dir)
    with cluster as info:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, lambda *_: stop.set())
        env_file = state_dir / "cluster.env"
        env_file.write_text(
            "".join(f"export {k}={shlex.quote(v)}\n" for k, v in info.env().items())
        )
        env_file.chmod(0o600)
        print(f"local cluster ready in {cluster.startup_seconds:.1f}s", flush=True)
        if info.real_node:
            print(f"  real node:   {info.real_node} ready in {cluster.node_seconds:.1f}s")
        print(f"  kubeconfig:  {info.kubeconfig}")
        print(f"  S3 endpoint: {info.s3_endpoint} (bucket {info.s3_bucket})")
        print(f"  logs:        {state_dir / 'logs'}")
        print(f"use it from another shell:  source {env_file}")
        print(f"tests reuse it with:        TUNEGATE_CLUSTER={state_dir / 'cluster.json'}")
        print("Ctrl-C stops every process.", flush=True)
        while not stop.wait(2):
            try:
                cluster.group.check_alive()
            except RuntimeError as exc:
                print(exc, file=sys.stderr)
                return 1
    return 0


def _interrupt(*_: object) -> None:
    raise KeyboardInterrupt


def _demo(state_dir: Path) -> int:
    from tunegate_cluster.demo import run_demo

    reuse = state_dir / "cluster.json"
    workdir = state_dir / "demo"
    workdir.mkdir(parents=True, exist_ok=True)
    if reuse.exists() and _alive(ClusterInfo.load(reuse)):
        print(f"using the running local cluster ({reuse})", flush=True)
        run_demo(ClusterInfo.load(reuse), workdir, say=_say)
        return 0
    cluster = LocalCluster(state_dir=state_dir)
    with cluster as info:
        print(f"local cluster started in {cluster.startup_seconds:.1f}s", flush=True)
        run_demo(info, workdir, say=_say)
    return 0


def _images() -> int:
    if not real_node_wanted():
        print("TUNEGATE_REAL_NODE=0: no images needed")
        return 0
    from tunegate_cluster.images import ImageBuilder

    started = time.monotonic()
    builder = ImageBuilder(say=_say)
    images = ensure_images(ensure_binaries(), builder)
    for ref in images.all():
        print(f"  {ref}  {builder.size(ref)}")
    print(f"images ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
    return 0


def _alive(info: ClusterInfo) -> bool:
    return info.kubectl("get", "--raw=/readyz", "--request-timeout=3s").returncode == 0


def _say(text: str) -> None:
    print(text, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tunegate-cluster", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("build", help="build or reuse the cached control-plane binaries")
    sub.add_parser("images", help="build or reuse the real node's images (by content hash)")
    up = sub.add_parser("up", help="start the local cluster and keep it running")
    up.add_argument("--state-dir", type=Path, default=Path(".tunegate/cluster"))
    demo = sub.add_parser("demo", help="run the end-to-end demo (starts a cluster if none runs)")
    demo.add_argument("--state-dir", type=Path, default=Path(".tunegate/cluster"))
    args = parser.parse_args(argv)
    if args.command == "build":
        started = time.monotonic()
        print(ensure_binaries())
        print(f"binaries ready in {time.monotonic() - started:.1f}s", file=sys.stderr)
        return 0
    if args.command == "images":
        return _images()
    if args.command == "demo":
        return _demo(args.state_dir.resolve())
    return _up(args.state_dir.resolve())


if __name__ == "__main__":
    sys.exit(main())
