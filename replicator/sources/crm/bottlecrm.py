"""What the CRM change source needs to know about BottleCRM: which webhook events name
which object, the fields of each object's full record, and how to fetch that record.

The field lists were read off BottleCRM 1.35.0's detail serializers and checked
against a running server (tests/integration/test_crm_source.py keeps them honest).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from typing import Any

from replicator.sinks.bottlecrm import BottleCrmSink
from replicator.sinks.timestamps import parse_aware_datetime

# Webhook event prefix -> our object. deal.won and deal.lost are updates of an opportunity.
EVENT_OBJECTS: dict[str, str] = {"account": "account", "contact": "contact", "deal": "opportunity"}


def object_of_event(event: str) -> str | None:
    """The object a webhook event is about ("deal.won" -> "opportunity"), None for other kinds."""
    prefix, dot, action = event.partition(".")
    if not dot or not action:
        return None
    return EVENT_OBJECTS.get(prefix)


_COMMON = frozenset({"id", "created_at", "custom_fields", "external_id", "is_active"})

# Every field of a record as `BottleCrmSink.get()` answers it ("external_id" is added by the sink,
# "line_items" of an opportunity by `BottleCrmRecords.fetch`).
CRM_FIELDS: dict[str, frozenset[str]] = {
    "account": _COMMON
    | {
        "address_line",
        "annual_revenue",
        "assigned_to",
        "cases",
        "city",
        "contacts",
        "country",
        "country_display",
        "created_by",
        "currency",
        "description",
        "email",
        "industry",
        "name",
        "number_of_employees",
        "opportunities",
        "org",
        "phone",
        "postcode",
        "rollups",
        "state",
        "tags",
        "tasks",
        "teams",
        "website",
    },
    "contact": _COMMON
    | {
        "account",
        "account_detail",
        "address_line",
        "assigned_to",
        "city",
        "country",
        "created_by",
        "department",
        "description",
        "do_not_call",
        "email",
        "first_name",
        "last_name",
        "linked_accounts",
        "linkedin_url",
        "org",
        "organization",
        "phone",
        "phone_e164",
        "postcode",
        "source",
        "source_detail",
        "source_ref",
        "state",
        "tags",
        "teams",
        "title",
        "updated_at",
    },
    # Products carry no custom fields: the SKU is their external id.
    "product": (_COMMON - {"custom_fields"})
    | {"category", "currency", "description", "name", "price", "sku", "updated_at", "used_on"},
    "opportunity": _COMMON
    | {
        "account",
        "aging_status",
        "amount",
        "amount_source",
        "assigned_to",
        "closed_by",
        "closed_on",
        "contacts",
        "created_by",
        "created_on_arrow",
        "currency",
        "days_in_stage",
        "description",
        "lead_source",
        "line_items",
        "line_items_total",
        "name",
        "opportunity_type",
        "org",
        "pipeline",
        "probability",
        "source_detail",
        "source_ref",
        "stage",
        "stage_changed_at",
        "stage_kind",
        "stage_label",
        "tags",
        "teams",
    },
}

# Fields of a listed record that change without anyone editing the record: counts and
# sums over other records, "3 minutes ago" texts, ageing. A content hash leaves them out,
# or every poll would find every record changed.
VOLATILE_FIELDS: dict[str, frozenset[str]] = {
    "account": frozenset({"rollups", "cases", "contacts", "opportunities", "tasks"}),
    "contact": frozenset(),
    "product": frozenset({"used_on"}),
    "opportunity": frozenset({"created_on_arrow", "days_in_stage", "aging_status", "next_activity"}),
}

# Objects whose records carry a modification time (accounts and opportunities have none).
TIMESTAMPED: frozenset[str] = frozenset({"contact", "product"})


# BottleCRM's ISO 8601 timestamps ("2026-11-25T05:18:49.864809Z"), None when absent or unreadable.
parse_timestamp = parse_aware_datetime


class BottleCrmRecords:
    """Full current records of BottleCRM objects, the way the CRM change source hands them on."""

    def __init__(self, sink: BottleCrmSink) -> None:
        self.sink = sink

    def fetch(self, object: str, crm_id: str) -> dict[str, Any] | None:
        """The record with its external id, and an opportunity's line items; None when it is gone.

        Raises CrmError on any other failure (TRANSIENT for 5xx and transport errors)."""
        record = self.sink.get(object, crm_id)
        if record is None or object != "opportunity":
            return record
        client = self.sink.client
        resp = client.request("GET", "line_item", f"/api/opportunities/{crm_id}/line-items/")
        if resp.status_code == 404:  # deleted between the two requests
            return None
        data = client.expect_json(resp, f"list line items of opportunity {crm_id}")
        return {**record, "line_items": data.get("line_items") or []}

    def modified_at(self, record: dict[str, Any]) -> datetime | None:
        return parse_timestamp(record.get("updated_at"))

    def iter_records(self, object: str) -> Iterator[dict[str, Any]]:
        """Every record of the object as listed (one full scan; BottleCRM lists have no modified-since filter)."""
        return self.sink.iter_records(object)

    def volatile(self, object: str) -> frozenset[str]:
        return VOLATILE_FIELDS.get(object, frozenset())
