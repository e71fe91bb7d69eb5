"""sObject rows of the Salesforce sandbox: create, get, update, delete by id or by external id.

Each handler names the page of the REST API Developer Guide
(developer.salesforce.com/docs/atlas.en-us.api_rest.meta) it follows.
"""

from __future__ import annotations

from replicator.sandbox.core import Request, Response

from .api import SalesforceApi, SalesforceError
from .schema import RecordError, SObjectType, normalize_id
from .store import Record


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
