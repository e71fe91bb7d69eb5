"""Reading request arguments and batch bodies, and shaping batch answers, the way HubSpot does.

Batch bodies are ``{"inputs": [...]}`` with at most 100 inputs (50 for a batch read with
``propertiesWithHistory``); answers are ``{status, results, numErrors?, errors?, startedAt,
completedAt}``, 207 when any input failed ("Error handling", "Multi-status errors").
"""

from __future__ import annotations

import time
from typing import Any

from replicator.sandbox.core import Request, Response

from .errors import HubSpotError
from .schema import iso_ms

MAX_BATCH = 100
MAX_BATCH_WITH_HISTORY = 50


def query_list(req: Request, key: str) -> list[str] | None:
    """A list query parameter, given repeated or comma-separated (``properties=a,b&properties=c``)."""
    values = req.query.get(key)
    if not values:
        return None
    return [name for value in values for name in value.split(",") if name]


def query_int(req: Request, name: str, default: int) -> int:
    raw = req.arg(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise HubSpotError(f"{name} must be an integer; was {raw!r}") from None


def batch_inputs(req: Request, limit: int = MAX_BATCH) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    body = req.json()
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise HubSpotError("Invalid input JSON: expected an object with an 'inputs' list")
    inputs = body["inputs"]
    if len(inputs) > limit:
        raise HubSpotError(
            f"The maximum number of inputs supported in a batch is {limit}. Please reduce the number of items "
            "and try again"
        )
    for index, item in enumerate(inputs):
        if not isinstance(item, dict):
            raise HubSpotError(f"Invalid input JSON: inputs[{index}] must be an object")
    return body, inputs


def batch_answer(status: int, results: list[dict[str, Any]], errors: list[dict[str, Any]], started: int) -> Response:
    body: dict[str, Any] = {"status": "COMPLETE", "results": results}
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
    body["startedAt"] = iso_ms(started)
    body["completedAt"] = iso_ms(int(time.time() * 1000))
    return Response(207 if errors else status, body)
