"""/metrics and /healthz through the WSGI app, as Prometheus and an orchestrator see them."""

from __future__ import annotations

from typing import Any

import orjson

from replicator.ops.health import Health
from replicator.ops.http import make_app


def get(app: Any, path: str) -> tuple[str, bytes]:
    status: list[str] = []

    def start_response(s: str, headers: list[tuple[str, str]]) -> None:
        status.append(s)

    body = b"".join(app({"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""}, start_response))
    return status[0], body


def test_healthy_gauge_is_current_at_every_scrape_without_healthz_calls() -> None:
    health = Health(stall_timeout_s=60)
    app = make_app(health)
    health.source_connected()
    status, body = get(app, "/metrics")
    assert status.startswith("200")
    assert b"replicator_healthy 1.0" in body
    health.source_failed("connection refused")
    _, body = get(app, "/metrics")
    assert b"replicator_healthy 0.0" in body


def test_healthz_answers_503_with_reasons() -> None:
    health = Health(stall_timeout_s=60)
    app = make_app(health)
    health.source_failed("slot replicator: server ended the replication stream")
    status, body = get(app, "/healthz")
    assert status.startswith("503")
    verdict = orjson.loads(body)
    assert verdict["healthy"] is False
    assert "server ended the replication stream" in verdict["reasons"][0]
    health.source_connected()
    status, body = get(app, "/healthz")
    assert status.startswith("200") and orjson.loads(body)["healthy"] is True


def test_unknown_path_is_404() -> None:
    status, body = get(make_app(Health(60)), "/nope")
    assert status.startswith("404") and b"/metrics" in body
