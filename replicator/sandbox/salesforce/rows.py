"""sObject rows of the Salesforce sandbox: create, get, update, delete by id or by external id.

Each handler names the page of the REST API Developer Guide
(developer.salesforce.com/docs/atlas.en-us.api_rest.meta) it follows.
"""

from __future__ import annotations

from datetime import UTC, timedelta

from replicator.sandbox.core import Request, Response

from .api import SalesforceApi, SalesforceError
from .schema import RecordError, SObjectType, format_datetime, normalize_id, parse_datetime
from .store import Record

# "sObject Get Deleted" / getDeleted(): the delete log answers for the last 15 days.
DELETE_LOG_DAYS = 15


class RowsMixin(SalesforceApi):
    """REST handlers for single records under ``/sobjects/{SObject}``."""

    def _row(self, otype: SObjectType, record_id: str) -> Record:
        full = normalize_id(record_id)
        if full is None:
            # The API reads a non-id path segment as an external id field name.
            raise SalesforceError(
                "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {record_id}", 404
            )
        record = self.store.records[otype.name].get(full)
        if record is None:
            raise SalesforceError("NOT_FOUND", "The requested resource does not exist", 404)
        if record["IsDeleted"]:
            raise SalesforceError("ENTITY_IS_DELETED", "entity is deleted", 404)
        return record

    def create_row(self, req: Request, sobject: str) -> Response:
        """ "Create a Record": POST /sobjects/{SObject} → 201 ``{"id", "success", "errors"}``."""
        otype = self._sobject(sobject)
        body = self._json(req)
        if not isinstance(body, dict):
            raise SalesforceError("JSON_PARSER_ERROR", f"The body must be a JSON object of {otype.name} fields")
        with self.lock:
            try:
                record_id = self.store.insert(otype.name, body)
            except RecordError as exc:
                raise SalesforceError.of(exc) from None
        return Response(201, {"id": record_id, "success": True, "errors": []})

    def get_row(self, req: Request, sobject: str, record_id: str) -> Response:
        """ "Get Field Values from a Standard Object Record": GET /sobjects/{SObject}/{id}[?fields=]."""
        otype = self._sobject(sobject)
        fields = self._field_list(otype, req.arg("fields"))
        with self.lock:
            return Response(200, self._render(otype, self._row(otype, record_id), self._version(req), fields))

    def update_row(self, req: Request, sobject: str, record_id: str) -> Response:
        """ "Update a Record": PATCH /sobjects/{SObject}/{id} → 204."""
        otype = self._sobject(sobject)
        body = self._json(req)
        if not isinstance(body, dict):
            raise SalesforceError("JSON_PARSER_ERROR", f"The body must be a JSON object of {otype.name} fields")
        with self.lock:
            record = self._row(otype, record_id)
            try:
                self.store.update(otype.name, record["Id"], body)
            except RecordError as exc:
                raise SalesforceError.of(exc) from None
        return Response(204)

    def delete_row(self, req: Request, sobject: str, record_id: str) -> Response:
        """ "Delete a Record": DELETE /sobjects/{SObject}/{id} → 204; 404 ENTITY_IS_DELETED when already deleted."""
        otype = self._sobject(sobject)
        with self.lock:
            record = self._row(otype, record_id)
            self.store.delete(otype.name, record["Id"])
        return Response(204)

    def get_by_external_id(self, req: Request, sobject: str, field: str, value: str) -> Response:
        """ "Get Records Using sObject External ID": GET /sobjects/{SObject}/{field}/{value}."""
        otype = self._sobject(sobject)
        ext = self._ext_field(otype, field)
        fields = self._field_list(otype, req.arg("fields"))
        with self.lock:
            record = self.store.find(otype.name, ext, value)
            if record is None:
                raise SalesforceError("NOT_FOUND", "The requested resource does not exist", 404)
            return Response(200, self._render(otype, record, self._version(req), fields))

    def upsert_row(self, req: Request, sobject: str, field: str, value: str) -> Response:
        """ "Insert or Update (Upsert) a Record Using an External ID": 201 created / 200 updated,
        both with ``{"id", "success", "errors", "created"}`` (API 46.0 and later)."""
        otype = self._sobject(sobject)
        ext = self._ext_field(otype, field)
        body = self._json(req)
        if not isinstance(body, dict):
            raise SalesforceError("JSON_PARSER_ERROR", f"The body must be a JSON object of {otype.name} fields")
        body = dict(body)
        for key in [k for k in body if k.lower() == ext.lower()]:
            if str(body.pop(key)) != value:
                raise SalesforceError(
                    "INVALID_FIELD", f"The {ext} value in the body differs from the one in the URL: {value}", 400, [ext]
                )
        with self.lock:
            if (req.arg("updateOnly") or "").lower() == "true" and self.store.find(otype.name, ext, value) is None:
                raise SalesforceError("NOT_FOUND", "The requested resource does not exist", 404)
            try:
                record_id, created = self.store.upsert(otype.name, ext, value, body)
            except RecordError as exc:
                raise SalesforceError.of(exc) from None
        return Response(201 if created else 200, {"id": record_id, "success": True, "errors": [], "created": created})

    def delete_by_external_id(self, req: Request, sobject: str, field: str, value: str) -> Response:
        """ "Delete Records Using sObject External ID": 204, 404 when no live record matches."""
        otype = self._sobject(sobject)
        ext = self._ext_field(otype, field)
        with self.lock:
            record = self.store.find(otype.name, ext, value)
            if record is None:
                raise SalesforceError("NOT_FOUND", "The requested resource does not exist", 404)
            self.store.delete(otype.name, record["Id"])
        return Response(204)

    def get_deleted(self, req: Request, sobject: str) -> Response:
        """ "sObject Get Deleted": GET /sobjects/{SObject}/deleted/?start=&end= (ISO 8601) →
        ``{"deletedRecords": [{"id", "deletedDate"}], "earliestDateAvailable", "latestDateCovered"}``.

        The SOAP guide's getDeleted() rules, which the REST resource refers to: start must
        precede end by more than one minute and lie within the delete log's 15 days, else 400
        INVALID_REPLICATION_DATE; `deletedDate` is the record's SystemModstamp;
        `latestDateCovered` is where the next call should start. Inferred: the seconds of both
        dates are ignored (documented for getUpdated(), assumed here too, the stricter
        reading), and the wording of the error messages."""
        otype = self._sobject(sobject)
        bounds = []
        for name in ("start", "end"):
            text = req.arg(name)
            moment = parse_datetime(text) if text else None
            if moment is None:
                raise SalesforceError(
                    "MALFORMED_QUERY", f"{name}: an ISO 8601 date and time is required, got {text!r}", 400
                )
            bounds.append(moment.astimezone(UTC).replace(second=0, microsecond=0))
        start, end = bounds
        with self.lock:
            now = parse_datetime(self.store.clock.now())
            assert now is not None
            if end - start <= timedelta(minutes=1):
                raise SalesforceError(
                    "INVALID_REPLICATION_DATE", "startDate must precede endDate by more than one minute", 400
                )
            if start < now - timedelta(days=DELETE_LOG_DAYS):
                raise SalesforceError(
                    "INVALID_REPLICATION_DATE", f"startDate must be within the last {DELETE_LOG_DAYS} days", 400
                )
            covered = min(end, now.replace(second=0, microsecond=0))
            deleted = []
            for record in self.store.records[otype.name].values():
                stamp = parse_datetime(record["SystemModstamp"])
                if record["IsDeleted"] and stamp is not None and start <= stamp < covered:
                    deleted.append((stamp, record["Id"]))
        return Response(
            200,
            {
                "deletedRecords": [{"id": rid, "deletedDate": format_datetime(at)} for at, rid in sorted(deleted)],
                "earliestDateAvailable": format_datetime(now - timedelta(days=DELETE_LOG_DAYS)),
                "latestDateCovered": format_datetime(covered),
            },
        )
