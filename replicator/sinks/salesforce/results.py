"""Reading Salesforce's per-record answers (SaveResult, UpsertResult, DeleteResult) into Results,
and writing field values the way the REST API reads them.

"sObject Collections" (REST API Developer Guide) answer one result per record, in the order
sent: ``{"id", "success", "created", "errors": [{"statusCode", "message", "fields"}]}``.
Status codes are the StatusCode list of the SOAP API Developer Guide.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from replicator.sinks.base import Outcome, Result
from replicator.sinks.salesforce.client import TRANSIENT_CODES
from replicator.sinks.timestamps import utc_ms

# A delete or archive by id of a record that is already gone has done its job: in the Recycle
# Bin (ENTITY_IS_DELETED), or purged, so the id resolves to nothing (the only reference such
# a request carries is the id itself, hence INVALID_CROSS_REFERENCE_KEY).
GONE_CODES = frozenset({"ENTITY_IS_DELETED", "NOT_FOUND", "INVALID_CROSS_REFERENCE_KEY"})


def json_value(value: Any) -> Any:
    """Decimals as JSON numbers (exact for integers; money fits a double's 15 digits), datetimes in UTC."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, datetime):
        return utc_ms(value)
    return value


def _record_errors(item: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    return [
        (str(e.get("statusCode", "")), str(e.get("message", "")), list(e.get("fields") or []))
        for e in item.get("errors") or []
        if isinstance(e, dict)
    ]


def item_result(item: Any, what: str, *, gone_ok: bool = False) -> Result:
    """One Result from an UpsertResult / SaveResult / DeleteResult."""
    if not isinstance(item, dict):
        return Result(Outcome.TRANSIENT, error=f"{what}: unreadable result {item!r}")
    crm_id = str(item["id"]) if item.get("id") else None
    if item.get("success"):
        return Result(Outcome.OK, crm_id=crm_id, created=bool(item.get("created")))
    errors = _record_errors(item)
    codes = {code for code, _, _ in errors}
    if gone_ok and codes and codes <= GONE_CODES:
        return Result(Outcome.OK, crm_id=crm_id)
    text = "; ".join(f"{c}: {m}" + (f" (fields: {', '.join(f)})" if f else "") for c, m, f in errors)
    outcome = Outcome.TRANSIENT if codes & TRANSIENT_CODES else Outcome.PERMANENT
    return Result(outcome, crm_id=crm_id, error=f"{what}: {text or 'failed without an error'}")
