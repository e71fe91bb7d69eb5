"""A scripted Salesforce org over httpx.MockTransport, shared by the Salesforce unit tests.

It answers the token endpoint and checks bearer tokens itself; everything else is routed
to handlers the tests register per (method, path). No tests live here."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import orjson

from replicator.sinks.salesforce import SalesforceSink
from replicator.state.budget import Priority

LOGIN = "https://login.example.test"
INSTANCE = "https://org.example.test"
API = "/services/data/v62.0"

Handler = Callable[[httpx.Request], httpx.Response]


def sf_error(status: int, code: str, message: str = "it failed") -> httpx.Response:
    return httpx.Response(status, json=[{"errorCode": code, "message": message}])


class FakeOrg:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.requests: list[httpx.Request] = []
        self.token_forms: list[dict[str, str]] = []
        self.valid: set[str] = set()
        self.routes: dict[tuple[str, str], Handler] = {}
        self.token_answer: Callable[[dict[str, str]], httpx.Response] | None = None
        self.on_stale: Callable[[], None] | None = None  # runs before answering INVALID_SESSION_ID
        self.limit_info = "api-usage=18/5000"

    def route(self, method: str, path: str, handler: Handler) -> None:
        self.routes[(method, path)] = handler

    def expire_tokens(self) -> None:
        with self.lock:
            self.valid.clear()

    def api_requests(self) -> list[httpx.Request]:
        return [r for r in self.requests if r.url.path != "/services/oauth2/token"]

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self.lock:
            self.requests.append(request)
        if request.url.path == "/services/oauth2/token":
            assert request.url.host == "login.example.test"
            assert request.headers["content-type"] == "application/x-www-form-urlencoded"
            form = {k: v[0] for k, v in parse_qs(request.content.decode()).items()}
            with self.lock:
                self.token_forms.append(form)
            if self.token_answer is not None:
                return self.token_answer(form)
            with self.lock:
                token = f"tok-{len(self.token_forms)}"
                self.valid.add(token)
            return httpx.Response(200, json={"access_token": token, "instance_url": INSTANCE, "token_type": "Bearer"})
        assert request.url.host == "org.example.test", "API calls must go to the instance_url"
        bearer = request.headers.get("authorization", "").removeprefix("Bearer ")
        with self.lock:
            stale = bearer not in self.valid
        if stale:
            if self.on_stale is not None:
                self.on_stale()
            return sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
        handler = self.routes.get((request.method, request.url.path))
        if handler is None:
            return sf_error(404, "NOT_FOUND", f"no route {request.method} {request.url.path}")
        resp = handler(request)
        if "sforce-limit-info" not in resp.headers:
            resp.headers["Sforce-Limit-Info"] = self.limit_info
        return resp


def body(request: httpx.Request) -> Any:
    return orjson.loads(request.content)


class RecordingBudget:
    """Counts acquires and keeps reports; optionally refuses with BudgetExhausted."""

    def __init__(self, refuse: Exception | None = None) -> None:
        self.acquired: list[Priority] = []
        self.reports: list[tuple[int, float | None]] = []
        self.refuse = refuse
        self.daily: list[int] = []
        self.lock = threading.Lock()

    def acquire(self, priority: Priority = Priority.LIVE, *, max_wait_s: float = 60.0) -> None:
        if self.refuse is not None:
            raise self.refuse
        with self.lock:
            self.acquired.append(priority)

    def report(self, status: int, retry_after: float | None = None) -> None:
        with self.lock:
            self.reports.append((status, retry_after))

    def observe_daily(self, used: int) -> None:
        with self.lock:
            self.daily.append(used)


def make_sink(org: FakeOrg, **kwargs: Any) -> SalesforceSink:
    kwargs.setdefault("client_id", "cid")
    kwargs.setdefault("client_secret", "secret")
    sink = SalesforceSink(LOGIN, transport=httpx.MockTransport(org), **kwargs)
    sink.bulk.sleep = lambda _s: None
    return sink
