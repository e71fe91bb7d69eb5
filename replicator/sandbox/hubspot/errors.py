"""HubSpot's error shapes: the refusal raised by handlers and the bodies it is answered with.

Bodies follow HubSpot's "Error handling" page (``status``, ``message``, ``correlationId``,
``category``, ``subCategory``, ``context``, ``errors``; "Multi-status errors" for batch entries).
"""

from __future__ import annotations

import uuid
from typing import Any

from replicator.sandbox.core import BadRequest


class HubSpotError(BadRequest):
    """A refusal shaped like HubSpot's error body: status, message, correlationId, category, ..."""

    def __init__(
        self,
        message: str,
        status: int = 400,
        category: str = "VALIDATION_ERROR",
        *,
        context: dict[str, list[str]] | None = None,
        errors: list[dict[str, Any]] | None = None,
        sub_category: str | None = None,
    ) -> None:
        super().__init__(message, status, category)
        self.category = category
        self.context = context
        self.errors = errors
        self.sub_category = sub_category


def correlation_id() -> str:
    return str(uuid.uuid4())


def error_body(
    message: str,
    category: str,
    *,
    context: dict[str, list[str]] | None = None,
    errors: list[dict[str, Any]] | None = None,
    sub_category: str | None = None,
) -> dict[str, Any]:
    body: dict[str, Any] = {"status": "error", "message": message, "correlationId": correlation_id()}
    if context:
        body["context"] = context
    if errors:
        body["errors"] = errors
    body["category"] = category
    if sub_category:
        body["subCategory"] = sub_category
    return body


def batch_error(
    category: str, message: str, context: dict[str, list[str]], sub_category: str | None = None
) -> dict[str, Any]:
    """One entry of a multi-status answer's ``errors`` ("Error handling" page, "Multi-status errors")."""
    entry: dict[str, Any] = {"status": "error", "category": category, "message": message, "context": context}
    if sub_category:
        entry["subCategory"] = sub_category
    return entry
