"""SOQL endpoints of the Salesforce sandbox: ``/query`` and its query locators.

Follows "Execute a SOQL Query" in the REST API Developer Guide
(developer.salesforce.com/docs/atlas.en-us.api_rest.meta); see ``soql`` for the subset of SOQL.
"""

from __future__ import annotations

import time
from typing import Any

from replicator.sandbox.core import Request, Response

from . import soql
from .api import SalesforceApi, SalesforceError
from .schema import make_id

CURSOR_IDLE_S = 15 * 60  # "Execute a SOQL Query": a query locator expires after 15 minutes idle


class QueryMixin(SalesforceApi):
    """REST handlers for ``/query``; pages past the first are kept as cursors until read or idle."""

    query_page_size: int
    _cursors: dict[str, tuple[list[dict[str, Any]], float]]
    _cursor_serial: int

    def query(self, req: Request) -> Response:
        """ "Execute a SOQL Query": ``{"totalSize", "done", "records", "nextRecordsUrl"?}`` in pages of up
        to 2,000 (or ``Sforce-Query-Options: batchSize=n``, 200-2,000; or the sandbox's query_page_size)."""
        text = req.arg("q")
        if not text:
            raise SalesforceError("MALFORMED_QUERY", "A SOQL query is required in the q parameter: /query?q=SELECT...")
        try:
            parsed = soql.parse(text)
        except soql.QueryError as exc:
            raise SalesforceError(exc.code, exc.message) from None
        version = self._version(req)
        names = [f.name for f in parsed.fields]
        with self.lock:
            rows = soql.execute(parsed, list(self.store.live(parsed.sobject.name)))
            rendered = [self._render(parsed.sobject, r, version, names) for r in rows]
            return Response(200, self._page(rendered, 0, self._page_size(req), version, None))

    def query_more(self, req: Request, locator: str) -> Response:
        """ "Execute a SOQL Query" → nextRecordsUrl: GET /query/{locator}-{offset}."""
        cursor_id, _, offset_text = locator.rpartition("-")
        with self.lock:
            self._expire_cursors()
            cursor = self._cursors.get(cursor_id)
            if cursor is None or not offset_text.isdigit() or int(offset_text) > len(cursor[0]):
                raise SalesforceError("INVALID_QUERY_LOCATOR", "invalid query locator")
            rows = cursor[0]
            return Response(
                200, self._page(rows, int(offset_text), self._page_size(req), self._version(req), cursor_id)
            )

    def _page_size(self, req: Request) -> int:
        size = self.query_page_size
        for option in (req.header("Sforce-Query-Options") or "").split(","):
            name, _, value = option.strip().partition("=")
            if name == "batchSize" and value.isdigit():
                size = min(size, max(200, min(int(value), 2000)))
        return size

    def _page(
        self, rows: list[dict[str, Any]], offset: int, size: int, version: str, cursor_id: str | None
    ) -> dict[str, Any]:
        page = rows[offset : offset + size]
        body: dict[str, Any] = {"totalSize": len(rows), "done": offset + size >= len(rows), "records": page}
        if not body["done"]:
            if cursor_id is None:
                self._cursor_serial += 1
                cursor_id = make_id("01g", self._cursor_serial)[:15]
            self._cursors[cursor_id] = (rows, time.monotonic())
            body["nextRecordsUrl"] = f"/services/data/{version}/query/{cursor_id}-{offset + size}"
        elif cursor_id is not None:
            self._cursors.pop(cursor_id, None)
        return body

    def _expire_cursors(self) -> None:
        now = time.monotonic()
        for cursor_id in [c for c, (_, used) in self._cursors.items() if used < now - CURSOR_IDLE_S]:
            del self._cursors[cursor_id]
