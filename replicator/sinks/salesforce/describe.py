"""What the org says about its objects ("sObject Describe", REST API Developer Guide:
``GET /services/data/vXX.X/sobjects/{SObject}/describe``), cached for the sink's life, and
the setup checks built on it.

Custom fields cannot be created over the REST API (that takes the Metadata API or Setup),
so setup is verification with instructions: the external-id field must exist on each
object, be visible to the integration user (describe lists only fields the user can
read) and be marked External ID (``externalId: true``).
"""

from __future__ import annotations

import threading
from typing import Any

from replicator.sinks.salesforce.client import SalesforceClient

# Compound fields repeat their components (BillingAddress = BillingStreet, ...): select the components.
_COMPOUND_TYPES = frozenset({"address", "location"})


class Schema:
    def __init__(self, client: SalesforceClient, external_id_field: str) -> None:
        self.client = client
        self.field = external_id_field
        self._describes: dict[str, dict[str, Any]] = {}
        self._lock = threading.Lock()

    def describe(self, sobject: str) -> dict[str, Any]:
        with self._lock:
            cached = self._describes.get(sobject)
        if cached is not None:
            return cached
        resp = self.client.request("GET", sobject, f"{self.client.api}/sobjects/{sobject}/describe")
        data: dict[str, Any] = self.client.expect_json(resp, f"describe {sobject}")
        with self._lock:
            self._describes[sobject] = data
        return data

    def field_names(self, sobject: str) -> list[str]:
        """Every field the integration user can read, compound fields left out (their parts are in)."""
        return [
            str(f["name"])
            for f in self.describe(sobject).get("fields") or []
            if f.get("type") not in _COMPOUND_TYPES and f.get("name")
        ]

    def setup_problem(self, sobject: str) -> str | None:
        """What is wrong with the external-id field of `sobject`, with the fix; None when all is well."""
        fields = {f.get("name"): f for f in self.describe(sobject).get("fields") or []}
        found = fields.get(self.field)
        fix = (
            f"in Salesforce Setup → Object Manager → {sobject} → Fields & Relationships, "
            f"{{}} {self.field} (Text, External ID, Unique), and give the integration user read and edit "
            "access to it (field-level security)"
        )
        if found is None:
            return f"{sobject} has no field {self.field} the integration user can see; fix: " + fix.format("create")
        if not found.get("externalId"):
            return f"{sobject}.{self.field} is not an External ID field; fix: " + fix.format(
                "edit the field and tick External ID on"
            )
        return None
