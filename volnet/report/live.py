"""``volnet train --live``: a small HTTP server (standard library) showing the run's curves while it
trains. It serves two things, both read from the run's own files at each request: ``/`` (the live page,
:func:`volnet.report.page.live_page`) and ``/data.json`` (:func:`volnet.report.page.run_data`). It binds
to 127.0.0.1 unless a host is given. :class:`LiveView` is the callback that runs it for a Trainer."""

from __future__ import annotations

import errno
import json
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from volnet.errors import VolnetError
from volnet.train.callbacks import Callback


def _free_port(host: str, start: int) -> int | None:
    for p in range(start + 1, min(start + 50, 65536)):
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            try:
                s.bind((host, p))
                return p
            except OSError:
                continue
    return None


class LiveServer(ThreadingHTTPServer):
    """Serves the live page of the run directory ``run()`` (a callable: the trainer's directory may change
    from a staging folder to the run itself)."""

    daemon_threads = True

    def __init__(self, host: str, port: int, run: Callable[[], Path], spec: str = "") -> None:
        self.run_dir, self.spec = run, spec
        super().__init__((host, port), _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host if ':' not in str(host) else f'[{host}]'}:{port}/"

    def serve_in_background(self) -> threading.Thread:
        t = threading.Thread(target=self.serve_forever, name="volnet-live", daemon=True)
        t.start()
        return t


def open_server(run: Callable[[], Path], port: int = 8000, host: str = "127.0.0.1",
                spec: str = "") -> LiveServer:
    """Bind the live server (not serving yet); a port in use is a one-line VolnetError suggesting a free
    one."""
    if not 0 <= port <= 65535:
        raise VolnetError(f"--port must be between 0 and 65535, got {port}")
    try:
        return LiveServer(host, port, run, spec)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            free = _free_port(host, port)
            hint = f"; try --port {free}" if free else "; pick another --port"
            raise VolnetError(f"port {port} on {host} is in use{hint}") from None
        raise VolnetError(f"cannot serve on {host}:{port}: {e.strerror or e}") from None


class _Handler(BaseHTTPRequestHandler):
    server: LiveServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        from volnet.report.page import live_page, run_data

        path = self.path.split("?", 1)[0]
        run = self.server.run_dir()
        if path in ("/", "/index.html"):
            body, kind = live_page(run, self.server.spec).encode("utf-8"), "text/html; charset=utf-8"
        elif path == "/data.json":
            body, kind = json.dumps(run_data(run), allow_nan=False).encode("utf-8"), "application/json"
        elif path == "/favicon.ico":
            self.send_response(204)
            self.end_headers()
            return
        else:
            self.send_error(404, "the live view serves / and /data.json only")
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet: training prints its own lines
        pass


class LiveView(Callback):
    """Serves ``server`` (an :func:`open_server`) from the start of training to its end; says where."""

    def __init__(self, server: LiveServer, stream: Any = None, keep: bool = False) -> None:
        self.server, self.stream, self.keep = server, stream, keep
        self.thread: threading.Thread | None = None

    def on_train_begin(self, trainer: Any) -> None:
        import sys

        if self.thread is None:
            self.thread = self.server.serve_in_background()
            host = self.server.server_address[0]
            where = "this machine only (127.0.0.1)" if host in ("127.0.0.1", "localhost", "::1") else \
                f"{host}: reachable from other machines"
            print(f"volnet train: live view at {self.server.url} (bound to {where})",
                  file=self.stream or sys.stderr)

    def on_train_end(self, trainer: Any, status: str) -> None:
        if not self.keep:
            self.close()

    def close(self) -> None:
        if self.thread is not None:
            self.server.shutdown()
            self.thread = None
        self.server.server_close()
