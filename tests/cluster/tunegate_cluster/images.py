"""Container images for the real node, built offline and cached by content hash.

No registry is reachable, so the base image is a Debian rootfs made by mmdebstrap
from Debian's packages (a stand-in for `python:3.11-slim`), and the project's own
Dockerfiles are built on it by buildah with pip reading the wheelhouse. Every tag is
a hash of what went into the image: an unchanged tree finds its images and builds
nothing. `tunegate-cluster images` builds them; the real node imports them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
CACHE_ROOT = Path(os.environ.get("TUNEGATE_CACHE", Path.home() / ".cache" / "tunegate"))
WHEELHOUSE = Path(os.environ.get("WHEELHOUSE", CACHE_ROOT / "wheels"))
REPOSITORY = "localhost/tunegate"
DEBIAN_SUITE = "bookworm"
# What python:3.11-slim offers that the Dockerfiles use: python/pip on PATH, CA
# certificates (pip over TLS), useradd. Debian bookworm's python3 is 3.11.
BASE_PACKAGES = (
    "python3",
    "python3-pip",
    "python3-venv",
    "python-is-python3",
    "ca-certificates",
    "passwd",
)
# pip may install system-wide, as in the official Python images.
BASE_CUSTOMIZE = (
    'rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED; '
    'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*'
)
BASE_SLIM = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "LANG": "C.UTF-8",
}


@dataclass(frozen=True)
class ProjectImage:
    name: str
    dockerfile: str  # relative to the repository root, which is the build context


OPERATOR = ProjectImage("operator", "operator/Dockerfile")
TRAINER = ProjectImage("trainer", "trainer-image/Dockerfile")
AUDIT = ProjectImage("audit", "trainer-image/audit.Dockerfile")
PROJECT_IMAGES = (OPERATOR, TRAINER, AUDIT)


@dataclass(frozen=True)
class ImageSet:
    """Tags of every image the real node runs."""

    pause: str
    operator: str
    trainer: str
    audit: str

    def all(self) -> tuple[str, ...]:
        return (self.pause, self.operator, self.trainer, self.audit)


class ImageBuildError(RuntimeError):
    pass


def copied_sources(dockerfile: Path) -> list[str]:
    """The context paths a Dockerfile's COPY/ADD instructions read (no `--from`)."""
    sources: list[str] = []
    logical = dockerfile.read_text().replace("\\\n", " ").splitlines()
    for line in logical:
        words = shlex.split(line, comments=True) if line.strip() else []
        if not words or words[0].upper() not in {"COPY", "ADD"}:
            continue
        arguments = [w for w in words[1:] if not w.startswith("--")]
        if any(w.startswith("--from") for w in words[1:]):
            continue
        sources.extend(arguments[:-1])
    return sources


def _files_under(path: Path) -> Iterable[Path]:
    if path.is_file():
        yield path
        return
    for child in sorted(path.rglob("*")):
        if child.is_file() and "__pycache__" not in child.parts and child.suffix != ".pyc":
            yield child


def content_tag(*, context: Path, sources: Iterable[str], extra: Iterable[str]) -> str:
    """A hash of every file the build reads plus the build's own parameters."""
    digest = hashlib.sha256()
    for item in extra:
        digest.update(item.encode() + b"\0")
    for source in sources:
        for path in _files_under(context / source):
            digest.update(str(path.relative_to(context)).encode() + b"\0")
            digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()[:16]


def _disk_hint(output: str) -> str:
    """Where the space went, when a build ran out of it (a trainer image is gigabytes,
    and committing one needs about three times that free for a while)."""
    if "no space left on device" not in output:
        return ""
    free_gib = shutil.disk_usage(CACHE_ROOT).free / 2**30
    return (
        f"\n{CACHE_ROOT} has {free_gib:.1f} GiB free; building the trainer image needs about"
        " 20 GiB. Its image stores are images/buildah and node/containerd there; other"
        " checkouts' .venv directories take about 7 GiB each."
    )


class ImageBuilder:
    """buildah with its storage in the cache, outside the repository."""

    def __init__(self, *, say: Callable[[str], None] = print) -> None:
        self.storage = CACHE_ROOT / "images" / "buildah"
        self.say = say
        self.timings: dict[str, float] = {}

    def buildah(self, *args: str, capture: bool = True) -> str:
        argv = [
            "buildah",
            f"--root={self.storage / 'storage'}",
            f"--runroot={self.storage / 'run'}",
            "--storage-driver=overlay",
            *args,
        ]
        result = subprocess.run(argv, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-30:])
            raise ImageBuildError(f"buildah {' '.join(args[:2])} failed:\n{tail}{_disk_hint(tail)}")
        return result.stdout

    def exists(self, ref: str) -> bool:
        try:
            self.buildah("inspect", "--type=image", ref)
        except ImageBuildError:
            return False
        return True

    def image_id(self, ref: str) -> str:
        return self.buildah("inspect", "--type=image", "--format={{.FromImageID}}", ref).strip()

    def size(self, ref: str) -> str:
        """Unpacked size as buildah reports it (e.g. '564 MB')."""
        return str(json.loads(self.buildah("images", "--json", ref))[0]["size"])

    def _timed(self, ref: str, build: Callable[[], None]) -> str:
        if self.exists(ref):
            return ref
        self.say(f"building image {ref}")
        started = time.monotonic()
        build()
        self.timings[ref] = time.monotonic() - started
        self.say(f"built {ref} in {self.timings[ref]:.0f}s")
        return ref

    def base(self) -> str:
        tag = content_tag(
            context=REPO_ROOT,
            sources=[],
            extra=[DEBIAN_SUITE, *BASE_PACKAGES, BASE_CUSTOMIZE, *BASE_SLIM, repr(BASE_ENV)],
        )
        ref = f"{REPOSITORY}/python-base:{tag}"
        return self._timed(ref, lambda: self._build_base(ref))

    def _build_base(self, ref: str) -> None:
        with tempfile.TemporaryDirectory(prefix="tunegate-rootfs-") as tmp:
            rootfs = Path(tmp) / "rootfs.tar"
            argv = [
                "mmdebstrap",
                "--variant=minbase",
                "--mode=root",
                "--quiet",
                f"--include={','.join(BASE_PACKAGES)}",
                *(f"--dpkgopt=path-exclude={path}" for path in BASE_SLIM),
                f"--customize-hook={BASE_CUSTOMIZE}",
                DEBIAN_SUITE,
                str(rootfs),
            ]
            result = subprocess.run(argv, capture_output=True, text=True, check=False)
            if result.returncode != 0:
                raise ImageBuildError(f"mmdebstrap failed:\n{result.stderr.strip()[-3000:]}")
            container = self.buildah("from", "scratch").strip()
            try:
                self.buildah("add", container, str(rootfs), "/")
                self.buildah(
                    "config",
                    *(f"--env={key}={value}" for key, value in BASE_ENV.items()),
                    "--cmd=python3",
                    container,
                )
                self.buildah("commit", "--quiet", container, ref)
            finally:
                self.buildah("rm", container)

    def pause(self, pause_binary: Path) -> str:
        tag = content_tag(context=pause_binary.parent, sources=[pause_binary.name], extra=["pause"])
        ref = f"{REPOSITORY}/pause:{tag}"

        def build() -> None:
            container = self.buildah("from", "scratch").strip()
            try:
                self.buildah("copy", "--chmod=0755", container, str(pause_binary), "/pause")
                self.buildah("config", '--entrypoint=["/pause"]', "--user=65535:65535", container)
                self.buildah("commit", "--quiet", container, ref)
            finally:
                self.buildah("rm", container)

        return self._timed(ref, build)

    def project_ref(self, image: ProjectImage, *, base: str) -> str:
        """The tag `project` builds: known before building, so stale images can go
        first."""
        dockerfile = REPO_ROOT / image.dockerfile
        tag = content_tag(
            context=REPO_ROOT,
            sources=[image.dockerfile, *copied_sources(dockerfile)],
            extra=[
                self.image_id(base),
                *(f"{k}={v}" for k, v in sorted(self._build_args(base).items())),
            ],
        )
        return f"{REPOSITORY}/{image.name}:{tag}"

    @staticmethod
    def _build_args(base: str) -> dict[str, str]:
        return {"BASE_IMAGE": base, "PIP_INSTALL_OPTIONS": "--no-index --find-links /wheels"}

    def project(self, image: ProjectImage, *, base: str) -> str:
        dockerfile = REPO_ROOT / image.dockerfile
        build_args = self._build_args(base)
        ref = self.project_ref(image, base=base)

        def build() -> None:
            self.buildah(
                "build",
                "--pull-never",
                # pip reads only the mounted wheelhouse (--no-index), so no network is used.
                "--isolation=chroot",
                "--layers=false",
                f"--file={dockerfile}",
                *(f"--build-arg={k}={v}" for k, v in build_args.items()),
                f"--volume={WHEELHOUSE}:/wheels:ro",
                f"--tag={ref}",
                str(REPO_ROOT),
            )

        return self._timed(ref, build)

    def build_all(self, *, pause_binary: Path) -> ImageSet:
        base = self.base()
        pause = self.pause(pause_binary)
        projects = (OPERATOR, TRAINER, AUDIT)
        # Earlier builds go before building: committing a trainer image needs about
        # three times its size free for a while, and the old one is as large.
        self.prune(keep={base, pause, *(self.project_ref(p, base=base) for p in projects)})
        operator, trainer, audit = (self.project(p, base=base) for p in projects)
        return ImageSet(pause=pause, operator=operator, trainer=trainer, audit=audit)

    def prune(self, *, keep: set[str]) -> None:
        """Earlier builds of our images go, with the working containers an interrupted
        build leaves and the layers nothing uses any more: each trainer image is
        gigabytes."""
        self.buildah("rm", "--all")
        listed = json.loads(self.buildah("images", "--json") or "[]")
        for image in listed:
            names = image.get("names") or []
            ours = [n for n in names if n.startswith(f"{REPOSITORY}/")]
            if ours and not set(names) & keep:
                self.buildah("rmi", "--force", image["id"])
        self.buildah("rmi", "--prune")

    def export_oci(self, ref: str, target: Path) -> None:
        """An uncompressed OCI archive (compressing gigabytes of wheels costs minutes
        on two cores and saves nothing: it is imported on the same disk)."""
        self.buildah("push", "--disable-compression", "--quiet", ref, f"oci-archive:{target}:{ref}")
