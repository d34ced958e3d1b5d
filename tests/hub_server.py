"""A small Hugging Face Hub protocol server for the test suite (standard library only).

Nothing in the tests may reach huggingface.co, yet every Hub flow (``HfApi``, ``hf_hub_download``,
``HfFileSystem``/``hf://``, ``push_to_hub``/``from_pretrained``, ``datasets.load_dataset``) must be
exercised for real over HTTP. :class:`LoopbackHubServer` implements the subset of the Hub HTTP API
that ``huggingface_hub``, ``transformers`` and ``datasets`` call, on ``127.0.0.1`` only:

* ``GET /api/whoami-v2``, ``POST /api/repos/create``, ``DELETE /api/repos/delete``,
  ``POST /api/validate-yaml``
* ``GET /api/{type}s/{repo}`` and ``.../revision/{rev}`` (``sha``, ``siblings``, ``blobs=true``, ...)
* ``GET .../tree/{rev}[/{path}]`` (``recursive``, ``expand``, cursor pagination via the ``Link`` header)
* ``POST .../paths-info/{rev}``, ``POST .../preupload/{rev}``, ``POST .../commit/{rev}`` (NDJSON:
  ``header``, ``file`` (base64), ``lfsFile``, ``deletedFile``, ``deletedFolder``; a stale
  ``parentCommit`` -> 412; ``create_pr=1`` -> ``refs/pr/N``)
* ``GET .../refs``, ``GET .../commits/{rev}``, ``POST/DELETE .../branch/{name}``,
  ``POST/DELETE .../tag/...``, ``PUT .../settings``, ``GET .../auth-check``
* ``POST /[{type}s/]{repo}.git/info/lfs/objects/batch`` (basic transfer), the signed ``PUT`` upload
  URL it hands out (``Content-Length`` or chunked bodies), and ``POST .../objects/verify``
* ``GET``/``HEAD /[{type}s/]{repo}/resolve/{rev}/{path}`` with ``ETag`` (git blob sha1 for regular
  files, sha256 for LFS files, plus ``X-Linked-Etag``/``X-Linked-Size``), ``X-Repo-Commit``,
  ``Content-Length``, single ``Range`` requests (206/416) and ``X-Error-Code`` (``RepoNotFound``,
  ``RevisionNotFound``, ``EntryNotFound``) on errors.

Authentication: a request carrying ``Authorization: Bearer <token>`` with a token other than the
configured one gets a 401 with ``X-Error-Message: Invalid credentials in Authorization header`` (like
the Hub). Writes need the configured token; private repositories are invisible (404 ``RepoNotFound``)
without it.

Repositories are versioned: every commit gets a 40-hex id and a full snapshot of the file table;
branches, tags and ``refs/pr/N`` refs map to commits; ``main`` holds an initial commit with a
``.gitattributes`` file, as on the Hub. File contents live in a content-addressed object store under
``storage_dir`` and the repository tables are mirrored as JSON next to it (a server started on an
existing ``storage_dir`` reloads them).

Everything is bounded: request bodies are size-limited (JSON/NDJSON and LFS uploads separately), the
number of concurrent connections is capped, sockets time out, listings are paginated and history walks
are capped.

Session use (see ``tests/conftest.py``)::

    from tests.hub_server import start_session_hub_server

    HUB_SERVER = start_session_hub_server()  # before anything imports huggingface_hub
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

__all__ = [
    "LoopbackHubServer",
    "configure_environment_for_hub",
    "start_session_hub_server",
]

REPO_TYPES = ("model", "dataset", "space")
_TYPE_PLURALS = {f"{t}s": t for t in REPO_TYPES}
_URL_PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_HEX_RE = re.compile(r"^[0-9a-f]{7,40}$")
_RANGE_RE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)
_PR_RE = re.compile(r"^refs/pr/(\d{1,9})$")
_FORBIDDEN_SEGMENTS = {"", ".", "..", ".git", ".cache"}
_INVALID_TOKEN_MESSAGE = "Invalid credentials in Authorization header"
# The Hub asks for LFS above 10 MB, for binary files and for paths matching .gitattributes LFS patterns.
_LFS_THRESHOLD = 10_000_000
_MAX_PATH_LENGTH = 1000
_MAX_HISTORY_WALK = 10_000
_CHUNK = 1 << 16
_MAX_DRAIN = 256 * 1024 * 1024  # unread request bodies up to this size are discarded before an error reply

# The `.gitattributes` the Hub writes in the initial commit of every new repository.
DEFAULT_GITATTRIBUTES = """\
*.7z filter=lfs diff=lfs merge=lfs -text
*.arrow filter=lfs diff=lfs merge=lfs -text
*.bin filter=lfs diff=lfs merge=lfs -text
*.bz2 filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.ftz filter=lfs diff=lfs merge=lfs -text
*.gz filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.joblib filter=lfs diff=lfs merge=lfs -text
*.lfs.* filter=lfs diff=lfs merge=lfs -text
*.mlmodel filter=lfs diff=lfs merge=lfs -text
*.model filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npy filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.ot filter=lfs diff=lfs merge=lfs -text
*.parquet filter=lfs diff=lfs merge=lfs -text
*.pb filter=lfs diff=lfs merge=lfs -text
*.pickle filter=lfs diff=lfs merge=lfs -text
*.pkl filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.rar filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
saved_model/**/* filter=lfs diff=lfs merge=lfs -text
*.tar.* filter=lfs diff=lfs merge=lfs -text
*.tar filter=lfs diff=lfs merge=lfs -text
*.tflite filter=lfs diff=lfs merge=lfs -text
*.tgz filter=lfs diff=lfs merge=lfs -text
*.wasm filter=lfs diff=lfs merge=lfs -text
*.xz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
*.zst filter=lfs diff=lfs merge=lfs -text
*tfevents* filter=lfs diff=lfs merge=lfs -text
*.flac filter=lfs diff=lfs merge=lfs -text
*.mp3 filter=lfs diff=lfs merge=lfs -text
*.ogg filter=lfs diff=lfs merge=lfs -text
*.wav filter=lfs diff=lfs merge=lfs -text
*.mp4 filter=lfs diff=lfs merge=lfs -text
"""


class HubError(Exception):
    """An error answered to the client as JSON ``{"error": message}`` plus ``X-Error-*`` headers."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        body: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.headers = headers or {}
        self.body = body


def _now_iso() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


def _git_blob_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _header_safe(text: str, limit: int = 500) -> str:
    text = " ".join(str(text).split())
    return text.encode("ascii", "replace").decode("ascii")[:limit]


def _validate_repo_path(path: str) -> str:
    """Validate a file path inside a repository (no traversal, no empty segments, no `.git`)."""
    if (
        not isinstance(path, str)
        or not path
        or len(path) > _MAX_PATH_LENGTH
        or "\x00" in path
        or "\\" in path
    ):
        raise HubError(400, f"Invalid path in repository: {path!r}")
    if path.startswith("/") or any(part in _FORBIDDEN_SEGMENTS for part in path.split("/")):
        raise HubError(400, f"Invalid path in repository: {path!r}")
    return path


def _gitattributes_lfs_patterns(content: bytes) -> list[str]:
    patterns = []
    for line in content.decode("utf-8", "replace").splitlines()[:10_000]:
        parts = line.split()
        if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def _matches_patterns(path: str, patterns: list[str]) -> bool:
    basename = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        pattern = pattern.lstrip("/")
        if not pattern or pattern.startswith("!"):
            continue
        if "/" in pattern:
            if fnmatch.fnmatchcase(path, pattern) or fnmatch.fnmatchcase(path, pattern.replace("**/", "")):
                return True
        elif fnmatch.fnmatchcase(basename, pattern):
            return True
    return False


def _card_metadata(readme: bytes) -> dict[str, Any]:
    """Flat `key: value` scalars and `tags` of a README's YAML front matter (enough for `pipeline_tag`)."""
    text = readme[:1_000_000].decode("utf-8", "replace")
    if not text.startswith("---"):
        return {}
    end = text.find("\n---", 3)
    if end < 0:
        return {}
    meta: dict[str, Any] = {}
    current_list: str | None = None
    for line in text[3:end].splitlines():
        if current_list and line.startswith(("- ", "  - ")):
            meta[current_list].append(line.strip()[2:].strip().strip("'\""))
            continue
        current_list = None
        match = re.match(r"^([A-Za-z_][\w-]*):\s*(.*)$", line)
        if not match:
            continue
        key, value = match.group(1), match.group(2).strip()
        if key in ("tags", "pipeline_tag", "library_name", "license", "language"):
            if value:
                meta[key] = value.strip("'\"")
            elif key in ("tags", "language"):
                meta[key] = []
                current_list = key
    return meta


class _Repo:
    """In-memory state of one repository (mirrored to ``repo.json``)."""

    def __init__(
        self, repo_type: str, repo_id: str, private: bool, state: dict[str, Any] | None = None
    ) -> None:
        self.repo_type = repo_type
        self.repo_id = repo_id
        self.private = private
        self.gated: str | bool = False
        self.created_at = _now_iso()
        self.branches: dict[str, str] = {}
        self.tags: dict[str, str] = {}
        self.prs: dict[int, str] = {}
        self.commits: dict[str, dict[str, Any]] = {}
        if state is not None:
            self.private = bool(state["private"])
            self.gated = state.get("gated", False)
            self.created_at = state["created_at"]
            self.branches = dict(state["branches"])
            self.tags = dict(state["tags"])
            self.prs = {int(k): v for k, v in state["prs"].items()}
            self.commits = dict(state["commits"])

    def to_state(self) -> dict[str, Any]:
        return {
            "repo_type": self.repo_type,
            "repo_id": self.repo_id,
            "private": self.private,
            "gated": self.gated,
            "created_at": self.created_at,
            "branches": self.branches,
            "tags": self.tags,
            "prs": {str(k): v for k, v in self.prs.items()},
            "commits": self.commits,
        }

    def resolve(self, revision: str) -> str:
        """Commit id of a branch, tag, ``refs/heads|tags/...``, ``refs/pr/N`` or (short) commit id."""
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        if revision.startswith("refs/heads/") and revision[11:] in self.branches:
            return self.branches[revision[11:]]
        if revision.startswith("refs/tags/") and revision[10:] in self.tags:
            return self.tags[revision[10:]]
        pr = _PR_RE.match(revision)
        if pr and int(pr.group(1)) in self.prs:
            return self.prs[int(pr.group(1))]
        if revision in self.commits:
            return revision
        if _HEX_RE.match(revision):
            matches = [sha for sha in self.commits if sha.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", code="RevisionNotFound")

    def files(self, commit: str) -> dict[str, dict[str, Any]]:
        return self.commits[commit]["files"]

    def history(self, commit: str) -> Iterator[dict[str, Any]]:
        """First-parent history from ``commit`` (newest first), capped."""
        seen = 0
        current: str | None = commit
        while current is not None and seen < _MAX_HISTORY_WALK:
            info = self.commits[current]
            yield info
            seen += 1
            current = info["parents"][0] if info["parents"] else None


class _HubHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, hub: LoopbackHubServer) -> None:
        self.hub = hub
        self._slots = threading.BoundedSemaphore(hub.max_connections)
        super().__init__(("127.0.0.1", 0), _HubRequestHandler)

    def process_request(self, request, client_address):  # type: ignore[no-untyped-def]
        # Bound the number of handler threads: wait (with a timeout) for a free slot, else drop the
        # connection.
        if not self._slots.acquire(timeout=30):
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address):  # type: ignore[no-untyped-def]
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class LoopbackHubServer:
    """Hub-protocol HTTP server on ``127.0.0.1`` (random port), storing repositories under ``storage_dir``.

    Args:
        storage_dir: where objects and repository tables are stored (created if missing). A temporary
            directory (removed by :meth:`stop`) when omitted.
        token: the one valid access token (random when omitted).
        username: the user the token belongs to (``whoami``; namespace of repos created without one).
        max_json_body: size limit of JSON / NDJSON request bodies (commits carry regular files in base64).
        max_upload_size: size limit of one LFS object upload.
        max_connections: concurrent connections served (further ones wait).
    """

    def __init__(
        self,
        storage_dir: str | os.PathLike[str] | None = None,
        *,
        token: str | None = None,
        username: str = "hub-test-user",
        max_json_body: int = 128 * 1024 * 1024,
        max_upload_size: int = 1024 * 1024 * 1024,
        max_connections: int = 128,
        tree_page_size: int = 1000,
        tree_expand_page_size: int = 50,
        commits_page_size: int = 50,
        socket_timeout: float = 60.0,
    ) -> None:
        self._owns_storage = storage_dir is None
        self.storage_dir = (
            Path(storage_dir) if storage_dir is not None else Path(tempfile.mkdtemp(prefix="hub-"))
        )
        self.token = token if token is not None else "hf_test_" + secrets.token_hex(16)
        self.username = username
        self.max_json_body = max_json_body
        self.max_upload_size = max_upload_size
        self.max_connections = max_connections
        self.tree_page_size = tree_page_size
        self.tree_expand_page_size = tree_expand_page_size
        self.commits_page_size = commits_page_size
        self.socket_timeout = socket_timeout
        self.request_log: deque[tuple[str, str, int, str | None]] = deque(maxlen=5000)
        self._count_lock = threading.Lock()
        self.request_count = 0  # total requests served (the log above is bounded)
        self._secret = secrets.token_bytes(32)
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._commit_counter = 0
        self._httpd: _HubHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # ----------------------------------------------------------------------------------------- lifecycle
    def start(self) -> LoopbackHubServer:
        if self._httpd is not None:
            return self
        for sub in ("objects", "repos", "tmp"):
            (self.storage_dir / sub).mkdir(parents=True, exist_ok=True)
        self._load_repos()
        self._httpd = _HubHTTPServer(self)
        host, port = self._httpd.server_address[:2]
        self.url = f"http://{host}:{port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2}, name="loopback-hub", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._owns_storage:
            shutil.rmtree(self.storage_dir, ignore_errors=True)

    def __enter__(self) -> LoopbackHubServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1]) if self.url else 0

    # --------------------------------------------------------------------------------- test helpers
    def repo_exists(self, repo_id: str, repo_type: str = "model") -> bool:
        with self._lock:
            return (repo_type, repo_id) in self._repos

    def requests_matching(
        self, method: str | None = None, contains: str = ""
    ) -> list[tuple[str, str, int, str | None]]:
        """Logged ``(method, path, status, range_header)`` entries (bounded log) for assertions in tests."""
        return [e for e in list(self.request_log) if (method is None or e[0] == method) and contains in e[1]]

    # ----------------------------------------------------------------------------------- persistence
    def _repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.storage_dir / "repos" / repo_type / repo_id

    def _load_repos(self) -> None:
        for state_file in sorted((self.storage_dir / "repos").glob("*/*/*/repo.json"))[:100_000]:
            try:
                state = json.loads(state_file.read_text("utf-8"))
                repo = _Repo(state["repo_type"], state["repo_id"], bool(state["private"]), state)
            except (OSError, ValueError, KeyError):
                continue
            self._repos[(repo.repo_type, repo.repo_id)] = repo

    def _save(self, repo: _Repo) -> None:
        folder = self._repo_dir(repo.repo_type, repo.repo_id)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / f"repo.json.{secrets.token_hex(4)}.tmp"
        tmp.write_text(json.dumps(repo.to_state()), "utf-8")
        os.replace(tmp, folder / "repo.json")

    # ---------------------------------------------------------------------------------- object store
    def _object_path(self, sha256: str) -> Path:
        return self.storage_dir / "objects" / sha256[:2] / sha256

    def _has_object(self, sha256: str, size: int | None = None) -> bool:
        path = self._object_path(sha256)
        return path.is_file() and (size is None or path.stat().st_size == size)

    def _store_bytes(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        if not self._has_object(sha256, len(data)):
            target = self._object_path(sha256)
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.storage_dir / "tmp" / f"{sha256}.{secrets.token_hex(4)}"
            tmp.write_bytes(data)
            os.replace(tmp, target)
        return sha256

    def _read_object(self, sha256: str, limit: int = 1_000_000) -> bytes:
        with open(self._object_path(sha256), "rb") as f:
            return f.read(limit)

    def _sign(self, *parts: str) -> str:
        return hmac.new(self._secret, "\x00".join(parts).encode(), hashlib.sha256).hexdigest()

    # ----------------------------------------------------------------------------------- repo access
    def _check_names(self, repo_id: str) -> None:
        parts = repo_id.split("/")
        if len(parts) != 2 or not all(
            _NAME_RE.match(p) and ".." not in p and not p.endswith(".git") for p in parts
        ):
            raise HubError(404, f"Repository Not Found: {repo_id}", code="RepoNotFound")

    def _get_repo(self, repo_type: str, repo_id: str, user: str | None, write: bool = False) -> _Repo:
        repo = self._repos.get((repo_type, repo_id))
        if repo is None or (repo.private and user is None):
            raise HubError(404, f"Repository not found: {repo_id}", code="RepoNotFound")
        if write and user is None:
            raise HubError(401, "You must be authenticated to write to this repository")
        return repo

    def _new_commit(
        self,
        repo: _Repo,
        parent: str | None,
        files: dict[str, dict[str, Any]],
        title: str,
        message: str,
        author: str,
    ) -> str:
        self._commit_counter += 1
        date = _now_iso()
        digest = hashlib.sha1(
            json.dumps(
                [repo.repo_type, repo.repo_id, parent, sorted(files.items()), title, message, date],
                sort_keys=True,
            ).encode()
            + f"{self._commit_counter}:{time.time_ns()}".encode()
        ).hexdigest()
        repo.commits[digest] = {
            "id": digest,
            "parents": [parent] if parent else [],
            "title": title,
            "message": message,
            "date": date,
            "authors": [author],
            "files": files,
        }
        return digest

    @staticmethod
    def _lfs_entry(sha256: str, size: int) -> dict[str, Any]:
        pointer = _lfs_pointer(sha256, size)
        return {
            "sha256": sha256,
            "size": size,
            "lfs": True,
            "oid": _git_blob_oid(pointer),
            "ptr": len(pointer),
        }

    def _regular_entry(self, data: bytes) -> dict[str, Any]:
        return {
            "sha256": self._store_bytes(data),
            "size": len(data),
            "lfs": False,
            "oid": _git_blob_oid(data),
        }

    def create_repo(
        self, repo_type: str, repo_id: str, private: bool = False, author: str = "system"
    ) -> _Repo:
        """Create a repository directly (test helper; the HTTP route uses it too)."""
        self._check_names(repo_id)
        with self._lock:
            if (repo_type, repo_id) in self._repos:
                raise HubError(
                    409,
                    f"You already created this {repo_type} repo",
                    body={"url": self._repo_url(repo_type, repo_id)},
                )
            repo = _Repo(repo_type, repo_id, private)
            files = {".gitattributes": self._regular_entry(DEFAULT_GITATTRIBUTES.encode())}
            repo.branches["main"] = self._new_commit(repo, None, files, "initial commit", "", "system")
            self._repos[(repo_type, repo_id)] = repo
            self._save(repo)
            return repo

    def _repo_url(self, repo_type: str, repo_id: str) -> str:
        return f"{self.url}/{_URL_PREFIXES[repo_type]}{repo_id}"

    # --------------------------------------------------------------------------------- tree helpers
    @staticmethod
    def _children(
        files: dict[str, dict[str, Any]], folder: str, recursive: bool
    ) -> tuple[list[str], list[str]]:
        """(directories, files) directly under `folder` (or below it when recursive), sorted."""
        prefix = folder + "/" if folder else ""
        dirs: set[str] = set()
        out_files: list[str] = []
        for path in files:
            if not path.startswith(prefix):
                continue
            rest = path[len(prefix) :]
            parts = rest.split("/")
            if len(parts) == 1:
                out_files.append(path)
            elif recursive:
                out_files.append(path)
                for depth in range(1, len(parts)):
                    dirs.add(prefix + "/".join(parts[:depth]))
            else:
                dirs.add(prefix + parts[0])
        return sorted(dirs), sorted(out_files)

    @staticmethod
    def _is_dir(files: dict[str, dict[str, Any]], path: str) -> bool:
        prefix = path + "/"
        return any(p.startswith(prefix) for p in files)

    @staticmethod
    def _dir_oid(files: dict[str, dict[str, Any]], path: str) -> str:
        prefix = path + "/" if path else ""
        h = hashlib.sha1()
        for p in sorted(files):
            if p.startswith(prefix):
                h.update(f"{p[len(prefix) :]}\x00{files[p]['oid']}\n".encode())
        return h.hexdigest()

    def _last_commit(self, repo: _Repo, commit: str, path: str, is_dir: bool) -> dict[str, Any]:
        def state(files: dict[str, dict[str, Any]]) -> Any:
            if is_dir:
                return self._dir_oid(files, path) if self._is_dir(files, path) else None
            entry = files.get(path)
            return entry["oid"] if entry else None

        last = None
        target = None
        for info in repo.history(commit):
            current = state(info["files"])
            if last is None:
                target = current
            elif current != target:
                break
            last = info
        assert last is not None
        return {"id": last["id"], "title": last["title"], "date": last["date"]}

    def _path_info(self, repo: _Repo, commit: str, path: str, is_dir: bool, expand: bool) -> dict[str, Any]:
        files = repo.files(commit)
        if is_dir:
            out: dict[str, Any] = {
                "type": "directory",
                "oid": self._dir_oid(files, path),
                "size": 0,
                "path": path,
            }
        else:
            entry = files[path]
            out = {"type": "file", "oid": entry["oid"], "size": entry["size"], "path": path}
            if entry["lfs"]:
                out["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": entry["ptr"]}
        if expand:
            out["lastCommit"] = self._last_commit(repo, commit, path, is_dir)
        return out

    def _info_json(self, repo: _Repo, commit: str, blobs: bool) -> dict[str, Any]:
        files = repo.files(commit)
        siblings = []
        for path in sorted(files):
            sibling: dict[str, Any] = {"rfilename": path}
            if blobs:
                entry = files[path]
                sibling.update(size=entry["size"], blobId=entry["oid"])
                if entry["lfs"]:
                    sibling["lfs"] = {
                        "size": entry["size"],
                        "sha256": entry["sha256"],
                        "pointerSize": entry["ptr"],
                    }
            siblings.append(sibling)
        namespace = repo.repo_id.split("/")[0]
        info: dict[str, Any] = {
            "_id": hashlib.sha1(f"{repo.repo_type}/{repo.repo_id}".encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": namespace,
            "sha": commit,
            "lastModified": repo.commits[commit]["date"],
            "createdAt": repo.created_at,
            "private": repo.private,
            "gated": repo.gated,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(entry["size"] for entry in files.values()),
        }
        readme = files.get("README.md")
        meta = _card_metadata(self._read_object(readme["sha256"])) if readme else {}
        tags = meta.get("tags")
        info["tags"] = [tags] if isinstance(tags, str) else list(tags or [])
        if repo.repo_type == "model":
            info["spaces"] = []
            if "pipeline_tag" in meta:
                info["pipeline_tag"] = meta["pipeline_tag"]
            config = files.get("config.json")
            if "library_name" in meta:
                info["library_name"] = meta["library_name"]
            elif config is not None:
                info["library_name"] = "transformers"
            if config is not None and config["size"] <= 1_000_000:
                with contextlib.suppress(ValueError, UnicodeDecodeError):
                    data = json.loads(self._read_object(config["sha256"]))
                    if isinstance(data, dict):
                        info["config"] = {k: data[k] for k in ("architectures", "model_type") if k in data}
        elif repo.repo_type == "dataset":
            info["mainSize"] = info["usedStorage"]
        return info

    def _upload_mode(self, files: dict[str, dict[str, Any]], path: str, size: int, sample: bytes) -> str:
        if size >= _LFS_THRESHOLD or b"\x00" in sample:
            return "lfs"
        attributes = files.get(".gitattributes")
        patterns = _gitattributes_lfs_patterns(self._read_object(attributes["sha256"])) if attributes else []
        return "lfs" if _matches_patterns(path, patterns) else "regular"


def _gitignore_patterns(content: str) -> list[str]:
    out = []
    for line in content.splitlines()[:10_000]:
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            out.append(line.rstrip("/"))
    return out


class _HubRequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LoopbackHub/1.0"
    server: _HubHTTPServer

    # ----------------------------------------------------------------------------- plumbing
    def setup(self) -> None:
        self.timeout = self.server.hub.socket_timeout
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # silence the default stderr logging
        return

    @property
    def hub(self) -> LoopbackHubServer:
        return self.server.hub

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        self._body_state = "unread"  # -> "partial" while reading -> "done"
        self._status = 0
        try:
            try:
                self._route(method)
            except HubError as err:
                self._send_error(err)
            except (ValueError, KeyError, TypeError) as err:  # malformed JSON, form or parameters
                self._send_error(HubError(400, f"Bad request: {type(err).__name__}: {err}"))
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        except Exception as err:  # never leave the client hanging
            with contextlib.suppress(Exception):
                self._send_error(HubError(500, f"Internal server error: {type(err).__name__}: {err}"))
            self.close_connection = True
        finally:
            if self._has_unread_body():
                self.close_connection = True
            self.hub.request_log.append((method, self.path[:300], self._status, self.headers.get("Range")))
            with self.hub._count_lock:
                self.hub.request_count += 1

    def _content_length(self) -> int:
        try:
            return max(int(self.headers.get("Content-Length") or 0), 0)
        except ValueError:
            return 0

    def _is_chunked(self) -> bool:
        return "chunked" in (self.headers.get("Transfer-Encoding") or "").lower()

    def _has_unread_body(self) -> bool:
        return self._body_state != "done" and (self._is_chunked() or self._content_length() > 0)

    def _iter_body(self, limit: int) -> Iterator[bytes]:
        """Yield the request body in chunks (Content-Length or chunked); 413 beyond `limit` bytes."""
        if self._body_state != "unread":
            raise HubError(500, "Request body read twice")
        total = 0
        if self._is_chunked():
            self._body_state = "partial"
            for _ in range(10_000_000):
                line = self.rfile.readline(1024)
                if not line.endswith(b"\n"):
                    raise HubError(400, "Malformed chunked body")
                size = int(line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    for _ in range(100):  # trailers
                        if self.rfile.readline(1024) in (b"\r\n", b"\n", b""):
                            break
                    self._body_state = "done"
                    return
                total += size
                if total > limit:
                    raise HubError(413, f"Request body too large (limit {limit} bytes)")
                remaining = size
                while remaining:
                    data = self.rfile.read(min(remaining, _CHUNK))
                    if not data:
                        raise HubError(400, "Truncated chunked body")
                    remaining -= len(data)
                    yield data
                self.rfile.readline(1024)
            raise HubError(400, "Too many chunks")
        length = self._content_length()
        if length > limit:
            raise HubError(413, f"Request body too large (limit {limit} bytes)")
        self._body_state = "partial"
        remaining = length
        while remaining:
            data = self.rfile.read(min(remaining, _CHUNK))
            if not data:
                raise HubError(400, "Truncated body")
            remaining -= len(data)
            yield data
        self._body_state = "done"

    def _drain_body(self) -> None:
        """Discard an unread request body (bounded) so that the client reads the error response cleanly."""
        if self._body_state == "unread" and self._has_unread_body():
            with contextlib.suppress(HubError):
                for _ in self._iter_body(_MAX_DRAIN):
                    pass

    def _read_body(self) -> bytes:
        return b"".join(self._iter_body(self.hub.max_json_body))

    def _read_json(self) -> Any:
        body = self._read_body()
        return json.loads(body) if body.strip() else {}

    def _send(
        self,
        status: int,
        body: bytes = b"",
        content_type: str = "application/json",
        headers: dict[str, str] | None = None,
    ) -> None:
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        if self.close_connection or self._has_unread_body():
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers=headers)

    def _send_error(self, err: HubError) -> None:
        self._drain_body()
        headers = dict(err.headers)
        headers["X-Error-Message"] = _header_safe(err.message)
        if err.code:
            headers["X-Error-Code"] = err.code
        self._send_json(err.status, {"error": err.message, **(err.body or {})}, headers=headers)

    def _user(self) -> str | None:
        """The authenticated user, None when anonymous; 401 on a wrong or malformed token."""
        header = self.headers.get("Authorization")
        if not header:
            return None
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), self.hub.token.encode()
        ):
            raise HubError(401, _INVALID_TOKEN_MESSAGE)
        return self.hub.username

    def _require_user(self) -> str:
        user = self._user()
        if user is None:
            raise HubError(401, "You must be authenticated to do this (no Authorization header)")
        return user

    # ------------------------------------------------------------------------------------ routing
    def _route(self, method: str) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query, keep_blank_values=True)
        segs = split.path.split("/")[1:]
        if len(segs) > 2000:
            raise HubError(414, "Path too long")
        user = self._user()

        if segs[:1] == ["api"]:
            self._route_api(method, segs[1:], query, user)
            return
        if segs[:1] == ["lfs-upload"] and len(segs) == 2 and method == "PUT":
            self._lfs_put(unquote(segs[1]), query)
            return

        repo_type = "model"
        if segs and segs[0] in ("datasets", "spaces"):
            repo_type = _TYPE_PLURALS[segs[0]]
            segs = segs[1:]
        if len(segs) >= 6 and segs[1].endswith(".git") and segs[2:5] == ["info", "lfs", "objects"]:
            repo_id = f"{unquote(segs[0])}/{unquote(segs[1])[:-4]}"
            if method == "POST" and segs[5] == "batch" and len(segs) == 6:
                self._lfs_batch(repo_type, repo_id, user)
                return
            if method == "POST" and segs[5] == "verify" and len(segs) == 6:
                self._lfs_verify(repo_type, repo_id, user)
                return
        if len(segs) >= 4 and segs[2] == "resolve" and method in ("GET", "HEAD"):
            repo_id = f"{unquote(segs[0])}/{unquote(segs[1])}"
            revision, rest = _split_revision(segs[3:])
            self._resolve(repo_type, repo_id, revision, "/".join(unquote(s) for s in rest), user)
            return
        raise HubError(404, f"Not found: {method} {split.path}")

    def _route_api(self, method: str, segs: list[str], query: dict[str, list[str]], user: str | None) -> None:
        head = segs[0] if segs else ""
        if head == "whoami-v2" and method == "GET":
            if user is None:
                raise HubError(401, "You must be authenticated to call whoami (no Authorization header)")
            self._send_json(200, self._whoami())
            return
        if head == "repos" and len(segs) == 2:
            if segs[1] == "create" and method == "POST":
                self._create_repo(self._require_user())
                return
            if segs[1] == "delete" and method == "DELETE":
                self._delete_repo(self._require_user())
                return
        if head == "validate-yaml" and method == "POST":
            self._read_body()
            self._send_json(200, {"errors": [], "warnings": []})
            return
        if head in _TYPE_PLURALS:
            repo_type = _TYPE_PLURALS[head]
            if len(segs) < 3:
                raise HubError(404, f"Repository not found: {'/'.join(segs[1:])}", code="RepoNotFound")
            repo_id = f"{unquote(segs[1])}/{unquote(segs[2])}"
            self.hub._check_names(repo_id)
            self._route_repo_api(method, repo_type, repo_id, segs[3:], query, user)
            return
        raise HubError(404, f"Not found: {method} /api/{'/'.join(segs)}")

    def _route_repo_api(
        self,
        method: str,
        repo_type: str,
        repo_id: str,
        rest: list[str],
        query: dict[str, list[str]],
        user: str | None,
    ) -> None:
        action = rest[0] if rest else ""
        if not rest or (action == "revision" and len(rest) >= 2):
            if method != "GET":
                raise HubError(405, "Method not allowed")
            revision = "/".join(unquote(s) for s in rest[1:]) if rest else "main"
            self._repo_info(repo_type, repo_id, revision, _flag(query, "blobs"), user)
            return
        if action == "tree" and len(rest) >= 2 and method == "GET":
            revision, path_segs = _split_revision(rest[1:])
            self._tree(
                repo_type, repo_id, revision, "/".join(unquote(s) for s in path_segs).strip("/"), query, user
            )
            return
        if action == "paths-info" and len(rest) >= 2 and method == "POST":
            self._paths_info(repo_type, repo_id, _join_revision(rest[1:]), user)
            return
        if action == "preupload" and len(rest) >= 2 and method == "POST":
            self._preupload(repo_type, repo_id, _join_revision(rest[1:]), query, user)
            return
        if action == "commit" and len(rest) >= 2 and method == "POST":
            self._commit(repo_type, repo_id, _join_revision(rest[1:]), query, user)
            return
        if action == "refs" and len(rest) == 1 and method == "GET":
            self._refs(repo_type, repo_id, _flag(query, "include_prs"), user)
            return
        if action == "commits" and len(rest) >= 2 and method == "GET":
            self._list_commits(repo_type, repo_id, _join_revision(rest[1:]), query, user)
            return
        if action == "branch" and len(rest) >= 2 and method in ("POST", "DELETE"):
            self._branch(method, repo_type, repo_id, "/".join(unquote(s) for s in rest[1:]), user)
            return
        if action == "tag" and len(rest) >= 2 and method in ("POST", "DELETE"):
            self._tag(method, repo_type, repo_id, "/".join(unquote(s) for s in rest[1:]), user)
            return
        if action == "settings" and len(rest) == 1 and method == "PUT":
            self._settings(repo_type, repo_id, user)
            return
        if action == "auth-check" and len(rest) == 1 and method == "GET":
            with self.hub._lock:
                self.hub._get_repo(repo_type, repo_id, user)
            self._send_json(200, {"ok": True})
            return
        raise HubError(404, f"Not found: {method} {'/'.join(rest)}")

    # ----------------------------------------------------------------------------------- handlers
    def _whoami(self) -> dict[str, Any]:
        return {
            "type": "user",
            "id": hashlib.sha1(self.hub.username.encode()).hexdigest()[:24],
            "name": self.hub.username,
            "fullname": "Hub Test User",
            "email": f"{self.hub.username}@example.invalid",
            "emailVerified": True,
            "canPay": False,
            "isPro": False,
            "periodEnd": None,
            "avatarUrl": "",
            "orgs": [],
            "auth": {
                "type": "access_token",
                "accessToken": {
                    "displayName": "loopback",
                    "role": "write",
                    "createdAt": "2024-01-01T00:00:00.000Z",
                },
            },
        }

    def _create_repo(self, user: str) -> None:
        payload = self._read_json()
        name = payload.get("name")
        namespace = payload.get("organization") or user
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES or not isinstance(name, str):
            raise HubError(400, f"Invalid repo type or name: {repo_type!r} {name!r}")
        visibility = payload.get("visibility")
        private = bool(payload.get("private")) or visibility == "private"
        repo_id = f"{namespace}/{name}"
        if not all(_NAME_RE.match(p) and ".." not in p and not p.endswith(".git") for p in (namespace, name)):
            raise HubError(400, f"Invalid repository name: {repo_id!r}")
        self.hub.create_repo(repo_type, repo_id, private=private, author=user)
        url = self.hub._repo_url(repo_type, repo_id)
        self._send_json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _delete_repo(self, user: str) -> None:
        payload = self._read_json()
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type: {repo_type!r}")
        repo_id = f"{payload.get('organization') or user}/{payload.get('name')}"
        self.hub._check_names(repo_id)
        with self.hub._lock:
            self.hub._get_repo(repo_type, repo_id, user, write=True)
            del self.hub._repos[(repo_type, repo_id)]
            shutil.rmtree(self.hub._repo_dir(repo_type, repo_id), ignore_errors=True)
        self._send_json(200, {})

    def _settings(self, repo_type: str, repo_id: str, user: str | None) -> None:
        payload = self._read_json()
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user, write=True)
            if "private" in payload:
                repo.private = bool(payload["private"])
            if "visibility" in payload:
                repo.private = payload["visibility"] == "private"
            if "gated" in payload:
                repo.gated = payload["gated"]
            self.hub._save(repo)
        self._send_json(200, {})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str, blobs: bool, user: str | None) -> None:
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            commit = repo.resolve(revision)
            info = self.hub._info_json(repo, commit, blobs)
        self._send_json(200, info)

    def _tree(
        self,
        repo_type: str,
        repo_id: str,
        revision: str,
        path: str,
        query: dict[str, list[str]],
        user: str | None,
    ) -> None:
        recursive = _flag(query, "recursive")
        expand = _flag(query, "expand")
        page_size = self.hub.tree_expand_page_size if expand else self.hub.tree_page_size
        if query.get("limit"):
            page_size = max(1, min(page_size, int(query["limit"][0])))
        cursor = int(query.get("cursor", ["0"])[0] or 0)
        if cursor < 0:
            raise HubError(400, "Invalid cursor")
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            commit = repo.resolve(revision)
            files = repo.files(commit)
            if path and not self.hub._is_dir(files, path):
                raise HubError(
                    404,
                    f"{path} does not exist on {revision}",
                    code="EntryNotFound",
                    headers={"X-Repo-Commit": commit},
                )
            dirs, file_paths = self.hub._children(files, path, recursive)
            entries = [(d, True) for d in dirs] + [(f, False) for f in file_paths]
            entries.sort(key=lambda item: item[0])
            page = entries[cursor : cursor + page_size]
            out = [self.hub._path_info(repo, commit, p, is_dir, expand) for p, is_dir in page]
        headers = {"X-Repo-Commit": commit}
        if cursor + page_size < len(entries):
            next_query = {k: v[0] for k, v in query.items()}
            next_query["cursor"] = str(cursor + page_size)
            split = urlsplit(self.path)
            headers["Link"] = f'<{self.hub.url}{split.path}?{urlencode(next_query)}>; rel="next"'
        self._send_json(200, out, headers=headers)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str, user: str | None) -> None:
        body = self._read_body()
        content_type = (self.headers.get("Content-Type") or "").lower()
        if "json" in content_type:
            payload = json.loads(body or b"{}")
            paths, expand = payload.get("paths", []), bool(payload.get("expand"))
        else:
            form = parse_qs(body.decode("utf-8"), keep_blank_values=True)
            paths, expand = form.get("paths", []), _flag(form, "expand")
        if isinstance(paths, str):
            paths = [paths]
        if len(paths) > 10_000:
            raise HubError(400, "Too many paths")
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            commit = repo.resolve(revision)
            files = repo.files(commit)
            out = []
            for raw in paths:
                path = str(raw).strip("/")
                if path in files:
                    out.append(self.hub._path_info(repo, commit, path, False, expand))
                elif path and self.hub._is_dir(files, path):
                    out.append(self.hub._path_info(repo, commit, path, True, expand))
        self._send_json(200, out, headers={"X-Repo-Commit": commit})

    def _preupload(
        self, repo_type: str, repo_id: str, revision: str, query: dict[str, list[str]], user: str | None
    ) -> None:
        payload = self._read_json()
        items = payload.get("files", [])
        if not isinstance(items, list) or len(items) > 10_000:
            raise HubError(400, "Invalid preupload payload")
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user, write=True)
            commit = repo.resolve(revision)
            files = repo.files(commit)
            gitignore = payload.get("gitIgnore")
            if gitignore is None and ".gitignore" in files:
                gitignore = self.hub._read_object(files[".gitignore"]["sha256"]).decode("utf-8", "replace")
            ignore_patterns = _gitignore_patterns(gitignore or "")
            out = []
            for item in items:
                path = _validate_repo_path(str(item["path"]))
                sample = base64.b64decode(item.get("sample", ""))[:512]
                mode = self.hub._upload_mode(files, path, int(item["size"]), sample)
                result: dict[str, Any] = {
                    "path": path,
                    "uploadMode": mode,
                    "shouldIgnore": _matches_patterns(path, ignore_patterns),
                }
                existing = files.get(path)
                if existing is not None:
                    result["oid"] = existing["sha256"] if existing["lfs"] else existing["oid"]
                out.append(result)
        self._send_json(200, {"files": out, "commitOid": commit})

    def _commit(
        self, repo_type: str, repo_id: str, revision: str, query: dict[str, list[str]], user: str | None
    ) -> None:
        body = self._read_body()
        user = user or self._require_user()
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "The first line of a commit must be its header")
        header = lines[0]["value"]
        operations = lines[1:]
        if len(operations) > 100_000:
            raise HubError(400, "Too many operations in one commit")
        create_pr = _flag(query, "create_pr")

        # Store regular file contents before taking the lock (content-addressed, idempotent).
        staged: list[tuple[str, str, dict[str, Any] | None]] = []
        for op in operations:
            key, value = op.get("key"), op.get("value") or {}
            path = _validate_repo_path(
                str(value.get("path", "")).strip("/") if key == "deletedFolder" else value.get("path")
            )
            if key == "file":
                if value.get("encoding", "base64") != "base64":
                    raise HubError(400, f"Unsupported encoding {value.get('encoding')!r}")
                data = base64.b64decode(value.get("content", ""), validate=True)
                staged.append(("file", path, self.hub._regular_entry(data)))
            elif key == "lfsFile":
                oid = str(value.get("oid", ""))
                if (
                    value.get("algo", "sha256") != "sha256"
                    or not _SHA256_RE.match(oid)
                    or not self.hub._has_object(oid)
                ):
                    raise HubError(
                        400,
                        "Your push was rejected because an LFS pointer pointed to a file that does not"
                        f" exist: {path}",
                    )
                size = self.hub._object_path(oid).stat().st_size
                if value.get("size") is not None and int(value["size"]) != size:
                    raise HubError(400, f"LFS object size mismatch for {path}")
                staged.append(("file", path, self.hub._lfs_entry(oid, size)))
            elif key in ("deletedFile", "deletedFolder"):
                staged.append((key, path, None))
            else:
                raise HubError(400, f"Unknown commit operation {key!r}")

        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user, write=True)
            pr_num: int | None = None
            if create_pr:
                base = repo.resolve(revision)
                pr_num = max(repo.prs, default=0) + 1
                branch_ref = f"refs/pr/{pr_num}"
                head = base
            else:
                branch_ref = revision
                pr = _PR_RE.match(revision)
                if pr and int(pr.group(1)) in repo.prs:
                    head = repo.prs[int(pr.group(1))]
                elif revision in repo.branches or revision.removeprefix("refs/heads/") in repo.branches:
                    branch_ref = revision.removeprefix("refs/heads/")
                    head = repo.branches[branch_ref]
                else:
                    repo.resolve(revision)  # 404 RevisionNotFound when it does not exist at all
                    raise HubError(400, f"Cannot commit to {revision}: not a branch")
            parent_commit = header.get("parentCommit")
            if parent_commit and parent_commit != head:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(repo.files(head))
            for kind, path, entry in staged:
                if kind == "file":
                    files[path] = entry  # type: ignore[assignment]
                elif kind == "deletedFile":
                    if path not in files:
                        raise HubError(
                            404, f"A file with this name doesn't exist: {path}", code="EntryNotFound"
                        )
                    del files[path]
                else:
                    removed = [p for p in files if p.startswith(path + "/")]
                    if not removed:
                        raise HubError(
                            404, f"A folder with this name doesn't exist: {path}", code="EntryNotFound"
                        )
                    for p in removed:
                        del files[p]
            for path in files:
                parts = path.split("/")
                for depth in range(1, len(parts)):
                    if "/".join(parts[:depth]) in files:
                        raise HubError(400, f"{path}: a parent of this path is a file")
            commit = self.hub._new_commit(
                repo,
                head,
                files,
                str(header.get("summary") or "Commit"),
                str(header.get("description") or ""),
                user,
            )
            if pr_num is not None:
                repo.prs[pr_num] = commit
            elif branch_ref.startswith("refs/pr/"):
                repo.prs[int(branch_ref.rsplit("/", 1)[1])] = commit
            else:
                repo.branches[branch_ref] = commit
            self.hub._save(repo)
        repo_url = self.hub._repo_url(repo_type, repo_id)
        response: dict[str, Any] = {
            "success": True,
            "commitOid": commit,
            "commitUrl": f"{repo_url}/commit/{commit}",
        }
        if pr_num is not None:
            response["pullRequestUrl"] = f"{repo_url}/discussions/{pr_num}"
        self._send_json(200, response)

    def _refs(self, repo_type: str, repo_id: str, include_prs: bool, user: str | None) -> None:
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            out: dict[str, Any] = {
                "branches": [
                    {"name": b, "ref": f"refs/heads/{b}", "targetCommit": c}
                    for b, c in sorted(repo.branches.items())
                ],
                "converts": [],
                "tags": [
                    {"name": t, "ref": f"refs/tags/{t}", "targetCommit": c}
                    for t, c in sorted(repo.tags.items())
                ],
            }
            if include_prs:
                out["pullRequests"] = [
                    {"name": str(n), "ref": f"refs/pr/{n}", "targetCommit": c}
                    for n, c in sorted(repo.prs.items())
                ]
        self._send_json(200, out)

    def _list_commits(
        self, repo_type: str, repo_id: str, revision: str, query: dict[str, list[str]], user: str | None
    ) -> None:
        cursor = int(query.get("cursor", ["0"])[0] or 0)
        size = self.hub.commits_page_size
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            history = list(repo.history(repo.resolve(revision)))
        page = [
            {
                "id": c["id"],
                "title": c["title"],
                "message": c["message"],
                "date": c["date"],
                "authors": [{"user": a, "avatar": ""} for a in c["authors"]],
            }
            for c in history[max(cursor, 0) : max(cursor, 0) + size]
        ]
        headers = {}
        if cursor + size < len(history):
            next_query = {k: v[0] for k, v in query.items()}
            next_query["cursor"] = str(cursor + size)
            headers["Link"] = (
                f'<{self.hub.url}{urlsplit(self.path).path}?{urlencode(next_query)}>; rel="next"'
            )
        self._send_json(200, page, headers=headers)

    def _branch(self, method: str, repo_type: str, repo_id: str, branch: str, user: str | None) -> None:
        payload = self._read_json() if method == "POST" else {}
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user, write=True)
            if method == "DELETE":
                if branch == "main":
                    raise HubError(403, "Cannot delete the default branch")
                if branch not in repo.branches:
                    raise HubError(404, f"Invalid rev id: {branch}", code="RevisionNotFound")
                del repo.branches[branch]
            else:
                if branch.startswith("refs/") or not re.match(r"^[\w.\-/]{1,200}$", branch) or ".." in branch:
                    raise HubError(400, f"Invalid reference for a branch: {branch}")
                if branch in repo.branches:
                    raise HubError(409, f"Reference already exists: refs/heads/{branch}")
                starting_point = payload.get("startingPoint") or "main"
                repo.branches[branch] = repo.resolve(str(starting_point))
            self.hub._save(repo)
        self._send_json(200, {})

    def _tag(self, method: str, repo_type: str, repo_id: str, target: str, user: str | None) -> None:
        payload = self._read_json() if method == "POST" else {}
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user, write=True)
            if method == "DELETE":
                if target not in repo.tags:
                    raise HubError(404, f"Invalid rev id: {target}", code="RevisionNotFound")
                del repo.tags[target]
            else:
                tag = str(payload.get("tag", ""))
                if not re.match(r"^[\w.\-]{1,200}$", tag):
                    raise HubError(400, f"Invalid tag name: {tag!r}")
                commit = repo.resolve(target)
                if tag in repo.tags:
                    raise HubError(409, f"Tag already exists: {tag}")
                repo.tags[tag] = commit
            self.hub._save(repo)
        self._send_json(200, {})

    # ------------------------------------------------------------------------------------- LFS
    def _lfs_batch(self, repo_type: str, repo_id: str, user: str | None) -> None:
        payload = self._read_json()
        objects = payload.get("objects", [])
        if payload.get("operation") != "upload" or not isinstance(objects, list) or len(objects) > 10_000:
            raise HubError(400, "Only the 'upload' operation of the LFS batch API is supported")
        with self.hub._lock:
            self.hub._get_repo(repo_type, repo_id, user, write=True)
        user = user or self._require_user()
        prefix = _URL_PREFIXES[repo_type]
        out = []
        for obj in objects:
            oid, size = str(obj.get("oid", "")), obj.get("size")
            if not _SHA256_RE.match(oid) or not isinstance(size, int) or size < 0:
                out.append(
                    {
                        "oid": oid,
                        "size": size if isinstance(size, int) else 0,
                        "error": {"code": 422, "message": "Invalid object"},
                    }
                )
                continue
            if size > self.hub.max_upload_size:
                out.append({"oid": oid, "size": size, "error": {"code": 422, "message": "Object too large"}})
                continue
            item: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not self.hub._has_object(oid, size):
                signature = self.hub._sign(oid, str(size))
                item["actions"] = {
                    "upload": {"href": f"{self.hub.url}/lfs-upload/{oid}?size={size}&sig={signature}"},
                    "verify": {"href": f"{self.hub.url}/{prefix}{repo_id}.git/info/lfs/objects/verify"},
                }
            out.append(item)
        self._send(
            200,
            json.dumps({"transfer": "basic", "objects": out}).encode(),
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_put(self, oid: str, query: dict[str, list[str]]) -> None:
        size_text, signature = query.get("size", [""])[0], query.get("sig", [""])[0]
        if not _SHA256_RE.match(oid) or not size_text.isdigit():
            raise HubError(400, "Invalid upload URL")
        if not hmac.compare_digest(signature.encode(), self.hub._sign(oid, size_text).encode()):
            raise HubError(403, "Invalid upload signature")
        size = int(size_text)
        tmp = self.hub.storage_dir / "tmp" / f"upload-{oid}-{secrets.token_hex(6)}"
        digest = hashlib.sha256()
        received = 0
        try:
            with open(tmp, "wb") as f:
                for chunk in self._iter_body(size):
                    digest.update(chunk)
                    f.write(chunk)
                    received += len(chunk)
            if received != size or digest.hexdigest() != oid:
                raise HubError(
                    400, f"Uploaded content does not match oid {oid} / size {size} (got {received} bytes)"
                )
            target = self.hub._object_path(oid)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        self._send(200, b"", headers={"ETag": f'"{oid}"'})

    def _lfs_verify(self, repo_type: str, repo_id: str, user: str | None) -> None:
        payload = self._read_json()
        with self.hub._lock:
            self.hub._get_repo(repo_type, repo_id, user, write=True)
        oid, size = str(payload.get("oid", "")), payload.get("size")
        if not _SHA256_RE.match(oid) or not self.hub._has_object(
            oid, size if isinstance(size, int) else None
        ):
            raise HubError(404, f"LFS object {oid} not found")
        self._send_json(200, {"oid": oid, "size": size})

    # --------------------------------------------------------------------------------- downloads
    def _resolve(self, repo_type: str, repo_id: str, revision: str, path: str, user: str | None) -> None:
        with self.hub._lock:
            repo = self.hub._get_repo(repo_type, repo_id, user)
            commit = repo.resolve(revision)
            entry = repo.files(commit).get(path)
        if entry is None:
            raise HubError(
                404,
                f"Entry not found: {path} at {revision}",
                code="EntryNotFound",
                headers={"X-Repo-Commit": commit},
            )
        size = entry["size"]
        etag = entry["sha256"] if entry["lfs"] else entry["oid"]
        headers = {
            "ETag": f'"{etag}"',
            "X-Repo-Commit": commit,
            "Accept-Ranges": "bytes",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(path.rsplit('/', 1)[-1])}",
        }
        if entry["lfs"]:
            headers["X-Linked-Etag"] = f'"{entry["sha256"]}"'
            headers["X-Linked-Size"] = str(size)
        start, end, status = 0, size - 1, 200
        range_header = self.headers.get("Range")
        if range_header and self.command == "GET":
            match = _RANGE_RE.match(range_header)
            if match and (match.group(1) or match.group(2)):
                first, last = match.group(1), match.group(2)
                if first:
                    start = int(first)
                    end = min(int(last), size - 1) if last else size - 1
                else:
                    start = max(size - int(last), 0)
                if start >= size or start > end:
                    raise HubError(
                        416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"}
                    )
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = max(end - start + 1, 0)
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(length))
        for key, value in headers.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command == "HEAD" or length == 0:
            return
        with open(self.hub._object_path(entry["sha256"]), "rb") as f:
            f.seek(start)
            remaining = length
            while remaining:
                data = f.read(min(remaining, _CHUNK))
                if not data:
                    raise ConnectionError("object truncated on disk")
                self.wfile.write(data)
                remaining -= len(data)


def _flag(query: dict[str, list[str]], name: str) -> bool:
    values = query.get(name)
    return bool(values) and values[0].lower() in ("1", "true", "yes")


def _split_revision(segs: list[str]) -> tuple[str, list[str]]:
    """Split raw URL segments into (revision, rest). Handles quoted revisions and unquoted special refs."""
    first = unquote(segs[0])
    if first == "refs" and len(segs) >= 3 and segs[1] in ("convert", "pr", "heads", "tags"):
        return f"refs/{unquote(segs[1])}/{unquote(segs[2])}", segs[3:]
    return first, segs[1:]


def _join_revision(segs: list[str]) -> str:
    return "/".join(unquote(s) for s in segs)


# ------------------------------------------------------------------------------------------- session setup
def configure_environment_for_hub(server: LoopbackHubServer, hf_home: str | os.PathLike[str]) -> None:
    """Point huggingface_hub / transformers / datasets at `server` through the environment.

    Must run before anything imports huggingface_hub (it reads most of these at import time).
    """
    hf_home = Path(hf_home)
    for sub in ("hub", "datasets", "xet", "assets", "modules"):
        (hf_home / sub).mkdir(parents=True, exist_ok=True)
    for name in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_DATASETS_OFFLINE",
        "HF_HUB_ENABLE_HF_TRANSFER",
        "HUGGINGFACE_HUB_CACHE",
        "TRANSFORMERS_CACHE",
        "HF_HUB_DISABLE_IMPLICIT_TOKEN",
        "HF_API_TOKEN",
        "HUGGING_FACE_HUB_TOKEN",
    ):
        os.environ.pop(name, None)
    os.environ.update(
        {
            "HF_ENDPOINT": server.url,
            "HF_TOKEN": server.token,
            "HF_HOME": str(hf_home),
            "HF_HUB_CACHE": str(hf_home / "hub"),
            "HF_ASSETS_CACHE": str(hf_home / "assets"),
            "HF_XET_CACHE": str(hf_home / "xet"),
            "HF_MODULES_CACHE": str(hf_home / "modules"),
            "HF_DATASETS_CACHE": str(hf_home / "datasets"),
            "HF_TOKEN_PATH": str(hf_home / "token"),
            "HF_HUB_DISABLE_XET": "1",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_UPDATE_DOWNLOAD_COUNTS": "0",  # datasets would otherwise HEAD an s3.amazonaws.com URL
            "DO_NOT_TRACK": "1",
        }
    )
    no_proxy = [p for p in os.environ.get("NO_PROXY", os.environ.get("no_proxy", "")).split(",") if p]
    for host in ("127.0.0.1", "localhost"):
        if host not in no_proxy:
            no_proxy.append(host)
    os.environ["NO_PROXY"] = os.environ["no_proxy"] = ",".join(no_proxy)


_SESSION_SERVER: LoopbackHubServer | None = None


def start_session_hub_server() -> LoopbackHubServer:
    """Start (once per process) the test-session Hub server and configure the environment for it."""
    global _SESSION_SERVER
    if _SESSION_SERVER is not None:
        return _SESSION_SERVER
    root = Path(tempfile.mkdtemp(prefix="demixers-hub-session-"))
    server = LoopbackHubServer(storage_dir=root / "storage").start()
    configure_environment_for_hub(server, root / "hf_home")

    def _cleanup() -> None:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)

    atexit.register(_cleanup)
    _SESSION_SERVER = server
    return server
