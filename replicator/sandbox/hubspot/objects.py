"""The objects v3 single-record endpoints: get, create, update, delete, list and search."""

from __future__ import annotations

from typing import Any

from replicator.sandbox.core import Request, Response

from .errors import HubSpotError
from .payloads import query_int, query_list
from .records import Record, RecordStore
from .schema import OBJECT_TYPES
from .search import MAX_PAGE, SearchError, check_limits, matches, sort_value

MAX_LIST_PAGE = 100


class ObjectsAPI(RecordStore):
    """/crm/v3/objects/{objectType}[/{objectId}] and POST /crm/v3/objects/{objectType}/search."""

    search_cap: int

    # ------------------------------------------------------------ single records and listing

    def _found(self, obj: str, record_id: str, id_property: str | None, *, archived: bool = False) -> Record:
        """The record, or HubSpot's 404 OBJECT_NOT_FOUND."""
        rec = self._find(obj, record_id, id_property, archived=archived)
        if rec is None:
            raise HubSpotError(
                f"Object not found.  objectId are usually numeric. ({OBJECT_TYPES[obj][1]} {record_id})",
                404,
                "OBJECT_NOT_FOUND",
                context={"id": [record_id]},
            )
        return rec

    def get_record(self, req: Request, object_type: str, record_id: str) -> Response:
        """GET /crm/v3/objects/{objectType}/{objectId} ("Retrieve records"): ``idProperty``,
        ``properties``, ``propertiesWithHistory``, ``associations``, ``archived``; 404 OBJECT_NOT_FOUND."""
        obj = self._object(object_type)
        id_property = req.arg("idProperty")
        with self.lock:
            self._check_id_property(obj, id_property)
            rec = self._found(obj, record_id, id_property, archived=req.arg("archived", "false") == "true")
            return Response(
                200,
                self._render(
                    obj,
                    rec,
                    query_list(req, "properties"),
                    with_history=query_list(req, "propertiesWithHistory"),
                    associations=query_list(req, "associations"),
                ),
            )

    def create_record(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/objects/{objectType} ("Create records"): 201; a unique-value clash → 409 CONFLICT."""
        obj = self._object(object_type)
        body = req.json()
        if not isinstance(body, dict):
            raise HubSpotError("Invalid input JSON: expected {properties: {...}}")
        with self.lock:
            values = self._validated(obj, body.get("properties") or {})
            links = self._input_associations(obj, body.get("associations") or [])
            clash = self._conflict(obj, values, None)
            if clash is not None:
                raise clash
            rec = self._create(obj, values, "INTEGRATION", self.now_ms())
            for other, other_id in links:
                self._link(obj, rec.id, other, other_id)
            return Response(201, self._render(obj, rec, list(values) or None))

    def update_record(self, req: Request, object_type: str, record_id: str) -> Response:
        """PATCH /crm/v3/objects/{objectType}/{objectId} ("Update records"), optionally by ``idProperty``."""
        obj = self._object(object_type)
        body = req.json()
        if not isinstance(body, dict):
            raise HubSpotError("Invalid input JSON: expected {properties: {...}}")
        id_property = req.arg("idProperty")
        with self.lock:
            self._check_id_property(obj, id_property)
            rec = self._found(obj, record_id, id_property)
            values = self._validated(obj, body.get("properties") or {})
            clash = self._conflict(obj, values, rec.id)
            if clash is not None:
                raise clash
            self._write(obj, rec, values, source="INTEGRATION", now=self.now_ms())
            return Response(200, self._render(obj, rec, list(values) or None))

    def archive_record(self, req: Request, object_type: str, record_id: str) -> Response:
        """DELETE /crm/v3/objects/{objectType}/{objectId} ("Delete records": moved to the recycling bin): 204."""
        obj = self._object(object_type)
        with self.lock:
            rec = self._find(obj, record_id, None)
            if rec is not None:
                self._archive(obj, rec, self.now_ms())
        return Response(204)

    def list_records(self, req: Request, object_type: str) -> Response:
        """GET /crm/v3/objects/{objectType} ("Retrieve records", list): ``limit`` ≤ 100, ``after`` cursor,
        ``properties``, ``archived``; ordered by id."""
        obj = self._object(object_type)
        limit = query_int(req, "limit", 10)
        if not 1 <= limit <= MAX_LIST_PAGE:
            raise HubSpotError(f"limit must be between 1 and {MAX_LIST_PAGE}; was {limit}")
        after = query_int(req, "after", 0)
        archived = req.arg("archived", "false") == "true"
        with self.lock:
            ordered = sorted(
                (r for r in self._records[obj].values() if r.archived == archived and int(r.id) > after),
                key=lambda r: int(r.id),
            )
            page = ordered[:limit]
            body: dict[str, Any] = {
                "results": [
                    self._render(obj, r, query_list(req, "properties"), associations=query_list(req, "associations"))
                    for r in page
                ]
            }
            if len(ordered) > limit:
                token = page[-1].id
                body["paging"] = {"next": {"after": token, "link": f"{req.url.split('?')[0]}?after={token}"}}
            return Response(200, body)

    # ------------------------------------------------------------ search

    def search(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/objects/{objectType}/search ("Search the CRM"); see search.py for the rules.

        Real search results are eventually consistent (a write shows up after a few seconds); the
        sandbox answers from its current state.
        """
        obj = self._object(object_type)
        body = req.json() or {}
        if not isinstance(body, dict):
            raise HubSpotError("Invalid input JSON: expected a search request object")
        try:
            groups = check_limits(body.get("filterGroups"))
        except SearchError as exc:
            raise HubSpotError(str(exc)) from None
        limit = body.get("limit", 10)
        if not isinstance(limit, int) or not 0 <= limit <= MAX_PAGE:
            raise HubSpotError(f"limit must be an integer between 0 and {MAX_PAGE}; was {limit!r}")
        try:
            offset = int(body.get("after") or 0)
        except (TypeError, ValueError):
            raise HubSpotError(
                f"after must be the paging.next.after of a previous page; was {body.get('after')!r}"
            ) from None
        if offset >= self.search_cap:
            raise HubSpotError(
                f"The search API pages through at most {self.search_cap} results per query; after={offset} is "
                "beyond it. Narrow the query (e.g. filter on hs_lastmodifieddate) and page within it."
            )
        sorts = body.get("sorts") or []
        if not isinstance(sorts, list) or len(sorts) > 1:
            raise HubSpotError("sorts takes at most one sort: [{propertyName, direction}]")
        with self.lock:
            kind = self._kind(obj)
            hits = [r for r in self._records[obj].values() if not r.archived and matches(r.properties, groups, kind)]
            hits.sort(key=lambda r: int(r.id))
            if sorts:
                sort = sorts[0] if isinstance(sorts[0], dict) else {"propertyName": sorts[0]}
                name = str(sort.get("propertyName", "hs_object_id"))
                descending = str(sort.get("direction", "ASCENDING")).upper() == "DESCENDING"
                present = [r for r in hits if sort_value(r.properties, name, kind) is not None]
                absent = [r for r in hits if sort_value(r.properties, name, kind) is None]
                present.sort(key=lambda r: sort_value(r.properties, name, kind), reverse=descending)
                hits = present + absent
            end = min(offset + limit, self.search_cap)
            page = hits[offset:end]
            names = list(body.get("properties") or []) or None
            answer: dict[str, Any] = {"total": len(hits), "results": [self._render(obj, r, names) for r in page]}
            if end < len(hits) and end < self.search_cap:
                answer["paging"] = {"next": {"after": str(end), "link": f"?after={end}"}}
            return Response(200, answer)
