"""
A separate, read-only listener for Prometheus: ``GET /metrics`` and nothing else.

``serve --metrics-listen 127.0.0.1:9464`` starts it beside the API, so Prometheus
can scrape without an API token; the API's own ``/metrics`` keeps requiring a
reader token. With ``--metrics-token-file`` the listener asks for that token
instead (``Authorization: Bearer …``, Prometheus's ``authorization.credentials_file``).

It serves the same registry as the API (the API's rendering of it, when given), over plain
HTTP from a stdlib WSGI server in daemon threads: bind it to a loopback or
private address. It answers 404 to any other path and 405 to any other method,
and reads nothing but the metrics, which hold no secret (counts, sizes, ages
and partition ids).
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

__all__ = ["MetricsServer", "parse_listen"]

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def parse_listen(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:9464`` for IPv6) → ``(host, port)``; raises ValueError."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST:PORT")
    return host.strip("[]") or "127.0.0.1", int(port)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes are not logged (one line every 15 s per Prometheus is noise)."""


class MetricsServer:
    """Serves *registry* at ``http://HOST:PORT/metrics`` until ``stop``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str,
        port: int,
        token: str | None = None,
        *,
        render: Callable[[], bytes] | None = None,
    ) -> None:
        self._render = render or (lambda: generate_latest(registry))
        self._digest = hashlib.sha256(token.encode()).digest() if token else None
        self._server = make_server(
            host, port, self._app, server_class=_Server, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="safehold-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        """The port it listens on (useful with port 0)."""
        return int(self._server.server_address[1])

    def start(self) -> MetricsServer:
        """Start serving in a daemon thread; return self."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()

    def _allowed(self, environ: dict[str, Any]) -> bool:
        if self._digest is None:
            return True
        scheme, _, given = str(environ.get("HTTP_AUTHORIZATION", "")).partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(hashlib.sha256(given.strip().encode()).digest(), self._digest)

    def _app(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        text = [("Content-Type", "text/plain; charset=utf-8")]
        if environ.get("PATH_INFO") != "/metrics":
            start_response("404 Not Found", text)
            return [b"only /metrics is served here\n"]
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [*text, ("Allow", "GET, HEAD")])
            return [b"read-only\n"]
        if not self._allowed(environ):
            start_response("401 Unauthorized", [*text, ("WWW-Authenticate", "Bearer")])
            return [b"a scrape token is needed\n"]
        body = self._render()
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else body]
