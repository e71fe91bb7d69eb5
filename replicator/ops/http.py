"""The service's HTTP side: /metrics for Prometheus, /healthz for orchestrators, and the
routes other parts mount on it (CRM webhook receivers)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import make_wsgi_app

from replicator.ops.health import Health
from replicator.ops.metrics import REGISTRY

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes every few seconds would flood the log
        pass


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


def make_app(health: Health, routes: dict[str, WsgiApp] | None = None) -> WsgiApp:
    """/metrics, /healthz, and each exact path in ``routes`` served by its app."""
    metrics_app = make_wsgi_app(REGISTRY)
    mounted = dict(routes or {})
    for path in mounted:
        if path in ("/metrics", "/healthz") or not path.startswith("/"):
            raise ValueError(f"route {path!r}: must start with / and not be /metrics or /healthz")

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            health.verdict()  # replicator_healthy must be current at every scrape, not only when /healthz is asked
            return metrics_app(environ, start_response)
        if path == "/healthz":
            v = health.verdict()
            body = orjson.dumps(
                {
                    "healthy": v.healthy,
                    "reasons": v.reasons,
                    "pending": v.pending,
                    "seconds_since_progress": round(v.seconds_since_progress, 1),
                }
            )
            status = "200 OK" if v.healthy else "503 Service Unavailable"
            start_response(status, [("Content-Type", "application/json")])
            return [body]
        route = mounted.get(path)
        if route is not None:
            return route(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"not found: try /metrics or /healthz\n"]

    return app


class HttpServer:
    def __init__(self, listen: str, health: Health, routes: dict[str, WsgiApp] | None = None) -> None:
        host, _, port = listen.rpartition(":")
        self._server = make_server(
            host or "0.0.0.0",
            int(port),
            make_app(health, routes),
            server_class=_ThreadingServer,
            handler_class=_QuietHandler,
        )
        self._thread = threading.Thread(target=self._server.serve_forever, name="http", daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
