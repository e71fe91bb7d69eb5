"""sObject Collections of the Salesforce sandbox: create, update, upsert, delete and get many records.

Each handler names the page of the REST API Developer Guide
(developer.salesforce.com/docs/atlas.en-us.api_rest.meta) it follows. Per-record errors are
``{"statusCode", "message", "fields"}``; with ``allOrNone`` one failure rolls back the whole call.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from replicator.sandbox.core import Request, Response

from .api import SalesforceApi, SalesforceError
from .schema import PREFIXES, SOBJECTS, RecordError, normalize_id

MAX_COLLECTION = 200  # "sObject Collections": up to 200 records per create/update/upsert/delete
MAX_COLLECTION_GET = 2000  # "Get Records Using sObject Collections": up to 2,000 ids
ROLLED_BACK = RecordError(
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "Record rolled back because not all records were valid and the request was using AllOrNone header",
)


class CollectionsMixin(SalesforceApi):
    """REST handlers under ``/composite/sobjects``."""

    def _collection_body(self, req: Request, sobject: str | None) -> tuple[list[dict[str, Any]], bool]:
        """(records, allOrNone) of a collections body; 400 for what the API refuses as a whole."""
        body = self._json(req)
        records = body.get("records") if isinstance(body, dict) else None
        if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
            raise SalesforceError("JSON_PARSER_ERROR", 'The body must be {"allOrNone": bool, "records": [{...}]}')
        if len(records) > MAX_COLLECTION:
            raise SalesforceError(
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_COLLECTION} records into this call",
            )
        for record in records:
            kind = (record.get("attributes") or {}).get("type") if isinstance(record.get("attributes"), dict) else None
            if not kind:
                raise SalesforceError("INVALID_TYPE", "Must send a concrete entity type.")
            if kind not in SOBJECTS or (sobject is not None and kind != sobject):
                raise SalesforceError(
                    "INVALID_TYPE",
                    f"Record type {kind} is not supported here"
                    + (f"; this request takes {sobject} records only" if sobject else ""),
                )
        all_or_none = body.get("allOrNone", False)
        if not isinstance(all_or_none, bool):
            raise SalesforceError("JSON_PARSER_ERROR", f"allOrNone must be true or false, got {all_or_none!r}")
        return records, all_or_none

    def _apply(self, records: list[Any], all_or_none: bool, one: Any) -> list[dict[str, Any]]:
        """Run `one(record) -> success dict` per record, per-record errors in place, allOrNone rollback."""
        results: list[dict[str, Any]] = []
        with self.lock, self.store.transaction():
            for record in records:
                try:
                    if self.partial_failure():
                        raise RecordError(
                            "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 records"
                        )
                    results.append(one(record))
                except RecordError as exc:
                    results.append({"success": False, "errors": [exc.as_json()]})
            if all_or_none and not all(r["success"] for r in results):
                self.store.rollback()
                results = [
                    r if not r["success"] else {"success": False, "errors": [ROLLED_BACK.as_json()]} for r in results
                ]
        return results

    def collection_upsert(self, req: Request, sobject: str, field: str) -> Response:
        """ "Upsert Records Using sObject Collections": PATCH /composite/sobjects/{SObject}/{ExternalIdField},
        up to 200 records of one type, per-record UpsertResults in request order."""
        otype = self._sobject(sobject)
        ext = self._ext_field(otype, field)
        records, all_or_none = self._collection_body(req, otype.name)

        def ext_value(record: dict[str, Any]) -> Any:
            return next((v for k, v in record.items() if k.lower() == ext.lower()), None)

        seen = Counter(str(v) for v in map(ext_value, records) if v not in (None, ""))

        def one(record: dict[str, Any]) -> dict[str, Any]:
            value = ext_value(record)
            values = {k: v for k, v in record.items() if k != "attributes" and k.lower() != ext.lower()}
            if value in (None, "") and ext != "Id":
                raise RecordError("MISSING_ARGUMENT", f"{ext} not specified", [ext])
            if value not in (None, "") and seen[str(value)] > 1:
                raise RecordError("DUPLICATE_VALUE", f"Duplicate external id specified: {value}", [ext])
            record_id, created = self.store.upsert(otype.name, ext, value, values)
            return {"id": record_id, "success": True, "errors": [], "created": created}

        return Response(200, self._apply(records, all_or_none, one))

    def collection_create(self, req: Request) -> Response:
        """ "Create Records Using sObject Collections": POST /composite/sobjects, SaveResults in order."""
        records, all_or_none = self._collection_body(req, None)

        def one(record: dict[str, Any]) -> dict[str, Any]:
            values = {k: v for k, v in record.items() if k != "attributes"}
            return {"id": self.store.insert(record["attributes"]["type"], values), "success": True, "errors": []}

        return Response(200, self._apply(records, all_or_none, one))

    def collection_update(self, req: Request) -> Response:
        """ "Update Records Using sObject Collections": PATCH /composite/sobjects, each record with its Id."""
        records, all_or_none = self._collection_body(req, None)

        def one(record: dict[str, Any]) -> dict[str, Any]:
            values = {k: v for k, v in record.items() if k not in ("attributes", "Id", "id")}
            record_id = record.get("Id") or record.get("id")
            if not record_id:
                raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
            self.store.update(record["attributes"]["type"], str(record_id), values)
            return {"id": normalize_id(str(record_id)), "success": True, "errors": []}

        return Response(200, self._apply(records, all_or_none, one))

    def collection_delete(self, req: Request) -> Response:
        """ "Delete Records Using sObject Collections": DELETE /composite/sobjects?ids=...&allOrNone=, up to 200."""
        ids = [i for i in (req.arg("ids") or "").split(",") if i]
        if not ids:
            raise SalesforceError("MISSING_ARGUMENT", "ids parameter is required: ?ids=001...,003...", 400)
        if len(ids) > MAX_COLLECTION:
            raise SalesforceError(
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {MAX_COLLECTION} records into this call",
            )
        all_or_none = (req.arg("allOrNone") or "false").lower() == "true"

        def one(record_id: str) -> dict[str, Any]:
            full = normalize_id(record_id)
            if full is None:
                raise RecordError("MALFORMED_ID", f"malformed id {record_id}")
            sobject = PREFIXES.get(full[:3])
            if sobject is None:
                raise RecordError("INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {record_id}")
            self.store.delete(sobject, full)
            return {"id": full, "success": True, "errors": []}

        return Response(200, self._apply(ids, all_or_none, one))

    def collection_get(self, req: Request, sobject: str) -> Response:
        """ "Get Records Using sObject Collections": GET /composite/sobjects/{SObject}?ids=&fields=;
        null for an id that matches no live record."""
        otype = self._sobject(sobject)
        ids = [i for i in (req.arg("ids") or "").split(",") if i]
        fields = self._field_list(otype, req.arg("fields"))
        if not ids or fields is None:
            raise SalesforceError("MISSING_ARGUMENT", "ids and fields parameters are required", 400)
        if len(ids) > MAX_COLLECTION_GET:
            raise SalesforceError(
                "EXCEEDED_ID_LIMIT", f"record limit reached. cannot submit more than {MAX_COLLECTION_GET} records"
            )
        version = self._version(req)
        out: list[Any] = []
        with self.lock:
            for record_id in ids:
                full = normalize_id(record_id)
                if full is None:
                    raise SalesforceError("MALFORMED_ID", f"malformed id {record_id}", 400)
                record = self.store.records[otype.name].get(full)
                live = record is not None and not record["IsDeleted"]
                out.append(self._render(otype, record, version, fields) if live and record else None)
        return Response(200, out)
