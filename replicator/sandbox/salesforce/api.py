"""Shared plumbing of the Salesforce sandbox's REST handlers: the error shape and request helpers.

Errors follow the REST API Developer Guide (developer.salesforce.com/docs/atlas.en-us.api_rest.meta),
"Status Codes and Error Responses": a JSON array ``[{"message", "errorCode", "fields"?}]``.
"""

from __future__ import annotations

from typing import Any

from replicator.sandbox.core import BadRequest, Request, Sandbox

from .schema import SOBJECTS, RecordError, SObjectType
from .store import Record, Store


class SalesforceError(BadRequest):
    """An API error answered as ``[{"message", "errorCode", "fields"}]``."""

    def __init__(self, code: str, message: str, status: int = 400, fields: list[str] | None = None) -> None:
        super().__init__(message, status, code)
        self.fields = fields or []

    @classmethod
    def of(cls, exc: RecordError, status: int = 400) -> SalesforceError:
        if exc.status_code in ("ENTITY_IS_DELETED", "NOT_FOUND"):
            status = 404
        return cls(exc.status_code, exc.message, status, exc.fields)


class SalesforceApi(Sandbox):
    """What every group of Salesforce handlers shares: the store and the request helpers."""

    store: Store

    def _sobject(self, name: str) -> SObjectType:
        otype = SOBJECTS.get(name) or next((t for n, t in SOBJECTS.items() if n.lower() == name.lower()), None)
        if otype is None:
            raise SalesforceError("NOT_FOUND", "The requested resource does not exist", 404)
        return otype

    def _ext_field(self, otype: SObjectType, name: str) -> str:
        f = otype.field(name)
        if f is None:
            raise SalesforceError(
                "NOT_FOUND", f"Provided external ID field does not exist or is not accessible: {name}", 404
            )
        if not (f.external_id or f.type == "id"):
            raise SalesforceError(
                "INVALID_FIELD",
                f"Field name provided, {f.name} is not an External ID or indexed field for {otype.name}",
            )
        return f.name

    @staticmethod
    def _json(req: Request) -> Any:
        try:
            return req.json()
        except BadRequest as exc:
            raise SalesforceError("JSON_PARSER_ERROR", exc.message) from None

    def _render(self, otype: SObjectType, record: Record, version: str, fields: list[str] | None = None) -> Record:
        out: Record = {
            "attributes": {"type": otype.name, "url": f"/services/data/{version}/sobjects/{otype.name}/{record['Id']}"}
        }
        for name in fields if fields is not None else list(otype.fields):
            out[name] = record.get(name)
        return out

    def _field_list(self, otype: SObjectType, text: str | None) -> list[str] | None:
        if not text:
            return None
        names = []
        for name in text.split(","):
            f = otype.field(name.strip())
            if f is None:
                raise SalesforceError(
                    "INVALID_FIELD", f"No such column '{name.strip()}' on sobject of type {otype.name}", 400
                )
            names.append(f.name)
        return names

    def _version(self, req: Request) -> str:
        return "v" + req.path.split("/services/data/v", 1)[1].split("/", 1)[0]
