"""A loopback HTTP file server for the catalogue tests (standard library only, 127.0.0.1).

It stands in for the original hosts (dl.fbaipublicfiles.com, modelscope.cn): files are served at the
original URL paths (query included: ModelScope names the file in the query), and the catalogue
reaches them through ``DEMIXERS_MIRROR_URL``. It answers ``GET``/``HEAD`` with ``Content-Length``,
single ``Range: bytes=N-`` requests (206, or 416 past the end), logs every request for assertions
(``requests``), can cut the connection once in the middle of a file (``cut_after``) to test
resumed downloads, and pause halfway through a file (``pause_midway``) to test concurrent ones.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_RANGE = re.compile(r"^bytes=(\d+)-$")


class LoopbackFileServer:
    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.cut_after: dict[str, int] = {}  # path -> bytes sent before the connection is cut (once)
        self.pause_midway: dict[str, float] = {}  # path -> seconds to pause halfway through the file
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        assert self._server is not None, "server not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, data: bytes) -> None:
        with self._lock:
            self.files[path] = data

    def requests_for(self, path: str) -> list[tuple[str, str, str | None]]:
        with self._lock:
            return [entry for entry in self.requests if entry[1] == path]

    def clear_log(self) -> None:
        with self._lock:
            self.requests.clear()

    def start(self) -> LoopbackFileServer:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                self._answer(body=False)

            def do_GET(self) -> None:
                self._answer(body=True)

            def _answer(self, body: bool) -> None:
                range_header = self.headers.get("Range")
                with server._lock:
                    server.requests.append((self.command, self.path, range_header))
                    data = server.files.get(self.path)
                    cut = server.cut_after.pop(self.path, None) if body else None
                    pause = server.pause_midway.get(self.path, 0.0)
                if data is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                start = 0
                if range_header:
                    match = _RANGE.match(range_header.strip())
                    if match is None or int(match.group(1)) >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    start = int(match.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if not body:
                    return
                payload = data[start:]
                if cut is not None:
                    self.wfile.write(payload[:cut])
                    self.wfile.flush()
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)  # mid-file, as a dropped connection
                    return
                if pause:
                    self.wfile.write(payload[: len(payload) // 2])
                    self.wfile.flush()
                    time.sleep(pause)
                    payload = payload[len(payload) // 2 :]
                self.wfile.write(payload)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
