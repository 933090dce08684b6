"""A Hugging Face Hub stand-in on loopback: the three HTTP calls a snapshot download
makes (revision info, file tree, resolve), for one repository with named revisions
and an optional access token. No model can be downloaded here, so hf:// models are
tested against this instead of the real Hub (HF_ENDPOINT points the client at it)."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


@dataclass(frozen=True)
class Revision:
    commit: str  # 40 hex digits, as the Hub names commits
    files: dict[str, bytes]


def revision_from_dir(directory: Path) -> Revision:
    files = {
        p.relative_to(directory).as_posix(): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }
    digest = hashlib.sha1()
    for name, body in files.items():
        digest.update(name.encode() + b"\0" + body)
    return Revision(digest.hexdigest(), files)


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _send(self, code: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, document: object) -> None:
        self._send(200, json.dumps(document).encode(), {"Content-Type": "application/json"})

    def _revision(self, name: str) -> Revision | None:
        by_commit = {r.commit: r for r in self.hub.revisions.values()}
        return self.hub.revisions.get(name) or by_commit.get(name)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        hub = self.hub
        self.hub.requests.append(self.path)
        if hub.token and self.headers.get("Authorization") != f"Bearer {hub.token}":
            self._send(401, b'{"error": "Invalid credentials"}', {"X-Error-Code": "GatedRepo"})
            return
        path = unquote(urlparse(self.path).path)
        api = f"/api/models/{hub.repo_id}/"
        resolve = f"/{hub.repo_id}/resolve/"
        if path.startswith(api + "revision/"):
            revision = self._revision(path.removeprefix(api + "revision/"))
            if revision is None:
                self._send(404, b"{}", {"X-Error-Code": "RevisionNotFound"})
                return
            self._json(
                {
                    "id": hub.repo_id,
                    "sha": revision.commit,
                    "siblings": [{"rfilename": name} for name in revision.files],
                }
            )
        elif path.startswith(api + "tree/"):
            revision = self._revision(path.removeprefix(api + "tree/").split("/")[0])
            if revision is None:
                self._send(404, b"{}", {"X-Error-Code": "RevisionNotFound"})
                return
            self._json(
                [
                    {
                        "type": "file",
                        "path": name,
                        "size": len(body),
                        "oid": hashlib.sha1(body).hexdigest(),
                    }
                    for name, body in revision.files.items()
                ]
            )
        elif path.startswith(resolve):
            commit, _, name = path.removeprefix(resolve).partition("/")
            revision = self._revision(commit)
            if revision is None or name not in revision.files:
                self._send(404, b"{}", {"X-Error-Code": "EntryNotFound"})
                return
            body = revision.files[name]
            self._send(
                200,
                body,
                {
                    "X-Repo-Commit": revision.commit,
                    "ETag": f'"{hashlib.sha1(body).hexdigest()}"',
                    "Content-Type": "application/octet-stream",
                },
            )
        else:
            self._send(404, b"{}", {"X-Error-Code": "RepoNotFound"})


class FakeHub:
    def __init__(self, repo_id: str, revisions: dict[str, Revision], token: str = "") -> None:
        self.repo_id, self.revisions, self.token = repo_id, revisions, token
        self.requests: list[str] = []

    @contextmanager
    def serving(self) -> Iterator[str]:
        """The endpoint URL (HF_ENDPOINT) while the server runs."""
        handler = type("Handler", (_Handler,), {"hub": self})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()
