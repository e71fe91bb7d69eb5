"""What every vendor sandbox shares: an HTTP server, rate limits, fault injection, inspection.

A sandbox stands in for a SaaS CRM we cannot reach from tests (HubSpot, Salesforce). Each
vendor module implements the subset of the vendor's documented contract that our connector
uses (paths, status codes, error bodies, batch limits, per-record result shapes); this module
adds what a real service does to a client on a bad day, at configurable rates:

- latency on every API request;
- a rate limit: at most ``Limits.burst`` requests in any rolling ``window_s`` and ``daily``
  per rolling 24 h, answered the vendor's way (``Sandbox.rate_limited``);
- injected faults: 429 with ``Retry-After``, 5xx, timeouts (no answer until the client
  gives up), connection resets (RST, no answer), and per-record failures inside batches
  (handlers ask ``Sandbox.partial_failure()`` for each record).

Requests under ``/__sandbox/`` are never limited or faulted: they are how tests, the
quickstart and benchmarks read and steer the sandbox:

- ``GET  /__sandbox/objects/{object}``       every record of a vendor object
- ``POST /__sandbox/objects/{object}/{id}``  a CRM *user's* edit (JSON fields)
- ``GET  /__sandbox/stats``                  request, limit and fault counters
- ``POST /__sandbox/faults``, ``/__sandbox/limits``   replace the settings (JSON)
- ``POST /__sandbox/reset``                  forget all records and counters
"""

from __future__ import annotations

import random
import re
import socket
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

INSPECT = "/__sandbox/"


class Faults(BaseModel):
    """Rates are probabilities per API request (``rate_partial``: per record of a batch)."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(0.0, ge=0)
    rate_429: float = Field(0.0, ge=0, le=1)
    retry_after_s: float = Field(1.0, ge=0)
    rate_5xx: float = Field(0.0, ge=0, le=1)
    rate_timeout: float = Field(0.0, ge=0, le=1)
    timeout_s: float = Field(30.0, ge=0, description="how long a 'timeout' request hangs before the socket closes")
    rate_reset: float = Field(0.0, ge=0, le=1)
    rate_partial: float = Field(0.0, ge=0, le=1)
    seed: int | None = None


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    burst: int | None = Field(None, ge=1, description="requests allowed in any rolling window_s")
    window_s: float = Field(10.0, gt=0)
    daily: int | None = Field(None, ge=1, description="requests allowed in any rolling 24 h")


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    url: str  # as the client addressed it: scheme://host:port/path?query

    def arg(self, name: str, default: str | None = None) -> str | None:
        values = self.query.get(name)
        return values[0] if values else default

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())

    def json(self) -> Any:
        """The body as JSON; raises BadRequest with the parser's reason."""
        try:
            return orjson.loads(self.body) if self.body else None
        except orjson.JSONDecodeError as exc:
            raise BadRequest(f"body is not JSON: {exc}") from None


@dataclass
class Response:
    status: int
    body: Any = None  # dict/list -> JSON; bytes/str sent as they are
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/json;charset=UTF-8"

    def encoded(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        if isinstance(self.body, str):
            return self.body.encode()
        return orjson.dumps(self.body)


class BadRequest(Exception):
    """Raised by a handler for a request the vendor would refuse; vendors shape the body."""

    def __init__(self, message: str, status: int = 400, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


class _Hang:
    """Send nothing until the client gives up (its read timeout), then close."""


class _Reset:
    """Abort the connection with a TCP RST, sending nothing."""


Handler = Callable[..., Response]


class Sandbox:
    """Base of the vendor sandboxes: routing, limits, faults, inspection, counters.

    Vendors register routes with ``self.route(method, pattern, handler)`` (pattern: a
    regular expression over the path with named groups, passed to the handler as keyword
    arguments) and override the hooks that shape answers the vendor's way.
    """

    vendor = "sandbox"
    # Whether `Limits.daily` is enforced here, over every request; a vendor whose daily
    # allocation counts only some requests enforces it itself and sets this False.
    enforces_daily = True

    def __init__(self, *, faults: Faults | None = None, limits: Limits | None = None) -> None:
        self.lock = threading.RLock()
        self.faults = faults or Faults()
        self.limits = limits or Limits()
        self.rng = random.Random(self.faults.seed)
        self.stats: Counter[str] = Counter()
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._recent: deque[float] = deque()  # grant times within the burst window
        self._daily: deque[float] = deque()  # grant times within 24 h

    # ------------------------------------------------------------ vendor hooks

    def authenticate(self, req: Request) -> Response | None:
        """None when the request's credentials are good, else the vendor's refusal."""
        return None

    def rate_limited(self, req: Request, retry_after: float, daily: bool) -> Response:
        """The vendor's answer to a request over its limits (or an injected 429)."""
        return Response(429, {"error": "rate limited"}, {"Retry-After": _seconds(retry_after)})

    def server_error(self, req: Request) -> Response:
        return Response(503, {"error": "service unavailable"})

    def bad_request(self, req: Request, exc: BadRequest) -> Response:
        return Response(exc.status, {"error": exc.message, "code": exc.code})

    def not_found(self, req: Request) -> Response:
        return Response(404, {"error": f"no route for {req.method} {req.path}"})

    def decorate(self, req: Request, resp: Response) -> None:
        """Add headers every API answer carries (e.g. rate-limit counters)."""

    def inspect_objects(self, object: str) -> list[dict[str, Any]]:
        raise BadRequest(f"{self.vendor} sandbox has no object {object!r}", 404)

    def user_edit(self, object: str, record_id: str, fields: dict[str, Any]) -> dict[str, Any]:
        raise BadRequest(f"{self.vendor} sandbox cannot edit {object!r}", 404)

    def reset_state(self) -> None:
        """Forget every record (the base forgets counters and limit windows)."""

    # ------------------------------------------------------------ routing

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        self._routes.append((method, re.compile(pattern + r"\Z"), handler))

    def partial_failure(self) -> bool:
        """Whether to fail this one record of a batch (``Faults.rate_partial``)."""
        with self.lock:
            hit = self.faults.rate_partial > 0 and self.rng.random() < self.faults.rate_partial
            if hit:
                self.stats["injected_partial"] += 1
            return hit

    def count(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.stats[name] += n

    def window_usage(self) -> tuple[int, int]:
        """(requests in the current burst window, requests in the last 24 h)."""
        with self.lock:
            now = time.monotonic()
            self._expire(now)
            return len(self._recent), len(self._daily)

    # ------------------------------------------------------------ dispatch

    def dispatch(self, req: Request) -> Response | _Hang | _Reset:
        if req.path.startswith(INSPECT):
            return self._inspect(req)
        self.count("requests")
        faults = self.faults
        if faults.latency_ms:
            time.sleep(faults.latency_ms / 1000)
        with self.lock:
            roll = self.rng.random
            if faults.rate_reset and roll() < faults.rate_reset:
                self.stats["injected_reset"] += 1
                return _Reset()
            if faults.rate_timeout and roll() < faults.rate_timeout:
                self.stats["injected_timeout"] += 1
                return _Hang()
        refused = self.authenticate(req)
        if refused is not None:
            self.count("unauthorized")
            return refused
        over = self._take_slot()
        if over is not None:
            retry_after, daily = over
            self.count("limited_daily" if daily else "limited_burst")
            return self.rate_limited(req, retry_after, daily)
        with self.lock:
            roll = self.rng.random
            if faults.rate_429 and roll() < faults.rate_429:
                self.stats["injected_429"] += 1
                return self.rate_limited(req, faults.retry_after_s, False)
            if faults.rate_5xx and roll() < faults.rate_5xx:
                self.stats["injected_5xx"] += 1
                return self.server_error(req)
        resp = self._handle(req)
        self.decorate(req, resp)
        self.count(f"status_{resp.status}")
        return resp

    def _handle(self, req: Request) -> Response:
        allowed: list[str] = []
        for method, pattern, handler in self._routes:
            match = pattern.match(req.path)
            if match is None:
                continue
            if method != req.method:
                allowed.append(method)
                continue
            try:
                return handler(req, **match.groupdict())
            except BadRequest as exc:
                return self.bad_request(req, exc)
        if allowed:
            return self.bad_request(req, BadRequest(f"method {req.method} not allowed; use {allowed}", 405))
        return self.not_found(req)

    def _expire(self, now: float) -> None:
        while self._recent and self._recent[0] <= now - self.limits.window_s:
            self._recent.popleft()
        while self._daily and self._daily[0] <= now - 86_400:
            self._daily.popleft()

    def _take_slot(self) -> tuple[float, bool] | None:
        """Count the request against the limits; (retry_after, daily?) when it is over them."""
        limits = self.limits
        with self.lock:
            now = time.monotonic()
            self._expire(now)
            if self.enforces_daily and limits.daily is not None and len(self._daily) >= limits.daily:
                return self._daily[0] + 86_400 - now, True
            if limits.burst is not None and len(self._recent) >= limits.burst:
                return self._recent[0] + limits.window_s - now, False
            self._recent.append(now)
            self._daily.append(now)
            return None

    def _inspect(self, req: Request) -> Response:
        parts = [p for p in req.path[len(INSPECT) :].split("/") if p]
        try:
            if req.method == "GET" and parts == ["stats"]:
                burst, daily = self.window_usage()
                with self.lock:
                    return Response(200, {**self.stats, "window_used": burst, "daily_used": daily})
            if req.method == "POST" and parts == ["faults"]:
                with self.lock:
                    self.faults = Faults.model_validate(req.json() or {})
                    self.rng = random.Random(self.faults.seed)
                return Response(200, self.faults.model_dump())
            if req.method == "POST" and parts == ["limits"]:
                with self.lock:
                    self.limits = Limits.model_validate(req.json() or {})
                return Response(200, self.limits.model_dump())
            if req.method == "POST" and parts == ["reset"]:
                with self.lock:
                    self.stats.clear()
                    self._recent.clear()
                    self._daily.clear()
                    self.reset_state()
                return Response(200, {"reset": True})
            if req.method == "GET" and len(parts) == 2 and parts[0] == "objects":
                return Response(200, {"results": self.inspect_objects(parts[1])})
            if req.method == "POST" and len(parts) == 3 and parts[0] == "objects":
                fields = req.json()
                if not isinstance(fields, dict):
                    raise BadRequest("a user edit is a JSON object of fields")
                return Response(200, self.user_edit(parts[1], parts[2], fields))
        except ValidationError as exc:
            return Response(400, {"error": str(exc)})
        except BadRequest as exc:
            return Response(exc.status, {"error": exc.message})
        return Response(404, {"error": f"unknown sandbox endpoint {req.method} {req.path}"})


def _seconds(value: float) -> str:
    """Retry-After is whole seconds (RFC 9110); round up so a client never comes back early."""
    return str(max(int(-(-value // 1)), 0))


class _RequestHandler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive: connectors pool connections
    # Headers and body go out in two writes; with Nagle on, a keep-alive client's delayed ACK
    # holds the body back ~40 ms per request, which would dwarf every latency we measure.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        split = urlsplit(self.path)
        host = self.headers.get("Host") or self.server.authority
        req = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            url=f"http://{host}{self.path}",
        )
        try:
            outcome = self.server.sandbox.dispatch(req)
        except Exception as exc:  # a sandbox bug must show as a 500 naming it, not a dropped socket
            outcome = Response(500, {"error": f"sandbox bug: {type(exc).__name__}: {exc}"})
        if isinstance(outcome, _Reset):
            self._reset()
            return
        if isinstance(outcome, _Hang):
            self.server.stopping.wait(self.server.sandbox.faults.timeout_s)
            self.close_connection = True
            return
        payload = outcome.encoded()
        self.send_response(outcome.status)
        if outcome.body is not None:
            self.send_header("Content-Type", outcome.content_type)
        for name, value in outcome.headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if payload and self.command != "HEAD":
            self.wfile.write(payload)

    def _reset(self) -> None:
        # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], sandbox: Sandbox) -> None:
        super().__init__(address, _RequestHandler)
        self.sandbox = sandbox
        self.stopping = threading.Event()

    @property
    def authority(self) -> str:
        host, port = self.server_address[:2]
        return f"{host!s}:{port}"


class Running:
    """A sandbox serving on a port, in a background thread."""

    def __init__(self, sandbox: Sandbox, server: _Server) -> None:
        self.sandbox = sandbox
        self._server = server
        self.url = f"http://{server.authority}"
        self._thread = threading.Thread(
            target=server.serve_forever, args=(0.05,), name=f"{sandbox.vendor}-sandbox", daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def stop(self) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        close = getattr(self.sandbox, "close", None)  # vendors with background senders (webhooks)
        if close is not None:
            close()


def serve(sandbox: Sandbox, host: str = "127.0.0.1", port: int = 0) -> Running:
    return Running(sandbox, _Server((host, port), sandbox))
