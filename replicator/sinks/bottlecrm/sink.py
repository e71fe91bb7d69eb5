"""The BottleCRM sink: idempotent upserts keyed by an external-id custom field.

Identity. Accounts, contacts and opportunities carry the ERP key in a per-org custom
field (``custom_fields.<external_id_field>``, default ``erp_id``, type text), created by
``ensure_setup()`` and looked up with ``?cf_erp_id=<id>``. BottleCRM does not make those
values unique. Products have no custom fields in BottleCRM 1.35: their SKU (unique per
org) is the external id, so a product record's ``sku`` must equal ``op.external_id``
(the sink fills it in when absent).

Record fields (``op.record`` holds BottleCRM API names; unknown names are ignored by
BottleCRM, except ``custom_fields`` keys, which must be defined custom fields):

- account: name (required, unique per org, case-insensitive), email, phone, website,
  industry, number_of_employees, annual_revenue, currency, address_line, city, state,
  postcode, country (ISO-2), description, is_active, contacts / tags / teams /
  assigned_to (lists of CRM ids), custom_fields.
- contact: first_name and last_name (both required), email (unique per org), phone, title,
  department, organization, account (CRM id of an account), source, linkedin_url,
  do_not_call, address_line, city, state, postcode, country, description, is_active,
  tags / teams / assigned_to, custom_fields.
- product: name (required), sku (= external id), price, currency, category,
  description, is_active.
- opportunity: name (required, unique per org), account (CRM id), stage (a stage code
  of the pipeline, e.g. PROSPECTING, QUALIFICATION, PROPOSAL, NEGOTIATION,
  CLOSED_WON, CLOSED_LOST; a closed stage needs closed_on, a won one an amount),
  amount, currency, probability (0-100), closed_on (YYYY-MM-DD), opportunity_type,
  lead_source, description, is_active, pipeline (CRM id), contacts / tags /
  assigned_to, custom_fields.

Updates are partial (PATCH; PUT for products, which BottleCRM treats as partial), so
fields the ERP does not map are left as CRM users set them.

ARCHIVE sets ``is_active: false`` on every object (all four have it; accounts and
contacts show it as "inactive", products drop out of the line-item picker). An
archived record is still found by lookup and iter_records; an UPSERT carrying
``is_active: true`` revives it.

Threading: ``apply`` runs one call's operations on up to ``concurrency`` threads; the
ledger is only ever called under one lock, so it needs no thread safety of its own.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Any

from replicator.sinks.base import Action, CrmError, IntentLedger, Operation, Outcome, Result
from replicator.sinks.bottlecrm.client import (
    SPECS,
    BottleCrmClient,
    ObjectSpec,
    body_text,
    classify,
    unique_violation,
)
from replicator.sinks.pool import LazyPool

_FIELD_KEY = re.compile(r"[a-z][a-z0-9_]*")


class _LockedLedger:
    def __init__(self, ledger: IntentLedger) -> None:
        self._ledger = ledger
        self._lock = threading.Lock()

    def begin_create(self, op: Operation) -> bool:
        with self._lock:
            return self._ledger.begin_create(op)

    def finish_create(self, op: Operation, crm_id: str) -> None:
        with self._lock:
            self._ledger.finish_create(op, crm_id)


class BottleCrmSink:
    name = "bottlecrm"

    def __init__(
        self,
        url: str,
        token: str,
        *,
        external_id_field: str = "erp_id",
        concurrency: int = 4,
        timeout: float = 15.0,
    ) -> None:
        if not _FIELD_KEY.fullmatch(external_id_field):
            raise ValueError(
                f"external_id_field {external_id_field!r} is not a valid BottleCRM custom-field key: "
                "use lowercase letters, digits and _, starting with a letter (e.g. erp_id)"
            )
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.field = external_id_field
        self.concurrency = concurrency
        self.client = BottleCrmClient(url, token, timeout=timeout, max_connections=max(concurrency, 4))
        self._pool = LazyPool(concurrency, "bottlecrm")

    # ------------------------------------------------------------------ setup

    def _definitions(self, target: str) -> list[dict[str, Any]]:
        resp = self.client.request(
            "GET",
            "custom_field",
            "/api/custom-fields/",
            params={"target_model": target, "include_counts": "false"},
        )
        data = self.client.expect_json(resp, f"list {target} custom fields")
        return [d for d in data.get("definitions", []) if d.get("key") == self.field]

    def ensure_setup(self) -> None:
        """Create (or re-activate) the external-id custom field on every object that has them."""
        for spec in SPECS.values():
            if spec.cf_target is None:
                continue
            found = self._definitions(spec.cf_target)
            if found and found[0].get("is_active"):
                continue
            if found:
                resp = self.client.request(
                    "PUT",
                    "custom_field",
                    f"/api/custom-fields/{found[0]['id']}/",
                    body={"is_active": True, "is_filterable": True},
                )
            else:
                resp = self.client.request(
                    "POST",
                    "custom_field",
                    "/api/custom-fields/",
                    body={
                        "target_model": spec.cf_target,
                        "key": self.field,
                        "label": "ERP ID",
                        "field_type": "text",
                        "is_filterable": True,
                    },
                )
            # A concurrent ensure_setup may have won the race: trust a re-read over the error.
            if not resp.is_success and not any(d.get("is_active") for d in self._definitions(spec.cf_target)):
                raise CrmError(classify(resp, f"create custom field {spec.cf_target}.{self.field}"))

    def check(self) -> list[tuple[str, bool, str]]:
        """(name, ok, detail) for the credentials and each external-id custom field."""
        checks: list[tuple[str, bool, str]] = []
        try:
            resp = self.client.request("GET", "product", SPECS["product"].path, params={"limit": 1, "offset": 0})
        except CrmError as exc:
            return [("credentials", False, f"BottleCRM unreachable at {self.client.url}: {exc}")]
        if resp.status_code != 200:
            checks.append(
                (
                    "credentials",
                    False,
                    f"{self.client.url} answered HTTP {resp.status_code} ({body_text(resp, 200)}); "
                    "fix: create a Personal Access Token for an org ADMIN in BottleCRM and configure it",
                )
            )
            return checks
        checks.append(("credentials", True, f"token accepted by {self.client.url}"))
        for spec in SPECS.values():
            name = f"custom field {spec.cf_target or 'Product'}.{self.field}"
            if spec.cf_target is None:
                checks.append((name, True, "products have no custom fields in BottleCRM: the SKU is the id"))
                continue
            try:
                found = self._definitions(spec.cf_target)
            except CrmError as exc:
                checks.append((name, False, str(exc)))
                continue
            if found and found[0].get("is_active"):
                checks.append((name, True, "present"))
            else:
                state = "inactive" if found else "missing"
                checks.append(
                    (
                        name,
                        False,
                        f"{state}: without it external ids are silently dropped; fix: run the sink's "
                        f"ensure_setup() or add a text custom field '{self.field}' on {spec.cf_target} "
                        "in BottleCRM settings",
                    )
                )
        return checks

    # ------------------------------------------------------------------ reads

    def _external_id(self, spec: ObjectSpec, record: dict[str, Any]) -> str | None:
        if spec.cf_target is None:
            return record.get("sku") or None
        value = (record.get("custom_fields") or {}).get(self.field)
        return None if value in (None, "") else str(value)

    def _with_external_id(self, spec: ObjectSpec, record: dict[str, Any]) -> dict[str, Any]:
        return {**record, "external_id": self._external_id(spec, record)}

    def lookup(self, object: str, external_id: str) -> dict[str, Any] | None:
        """The record holding this external id (the first, should BottleCRM hold several), or None."""
        spec = SPECS[object]
        if spec.cf_target is None:
            return self._find_natural(spec, external_id)
        records, _ = self.client.list_page(spec, {f"cf_{self.field}": external_id}, 0, limit=10)
        for record in records:
            if self._external_id(spec, record) == external_id:
                return self._with_external_id(spec, record)
        return None

    def _find_natural(self, spec: ObjectSpec, value: Any) -> dict[str, Any] | None:
        """The record whose natural key equals ``value`` (BottleCRM compares names/emails
        case-insensitively; its list filters are substring matches, so match exactly here)."""
        wanted = str(value).casefold() if spec.natural_key != "sku" else str(value)
        for record in self.client.iter_list(spec, {spec.natural_key_query: str(value)}):
            have = record.get(spec.natural_key)
            if have is None:
                continue
            if (str(have).casefold() if spec.natural_key != "sku" else str(have)) == wanted:
                return self._with_external_id(spec, record)
        return None

    def iter_records(self, object: str) -> Iterator[dict[str, Any]]:
        """Every record of ``object`` (active and archived), each with an added ``external_id`` key.

        Offset pagination: records created or deleted meanwhile may shift pages.
        """
        spec = SPECS[object]
        for record in self.client.iter_list(spec, {}):
            yield self._with_external_id(spec, record)

    def comparable(self, object: str, raw: dict[str, Any]) -> dict[str, Any]:
        """BottleCRM answers a reference as a nested object ({"id": ..., "name": ...}); we write its id."""
        return {k: v["id"] if isinstance(v, dict) and "id" in v else v for k, v in raw.items()}

    def is_archived(self, object: str, raw: dict[str, Any]) -> bool:
        return raw.get("is_active") is False  # ARCHIVE sets is_active=false on every object

    def get(self, object: str, crm_id: str) -> dict[str, Any] | None:
        spec = SPECS[object]
        resp = self.client.request("GET", spec.name, f"{spec.path}{crm_id}/")
        if resp.status_code == 404:
            return None
        data = self.client.expect_json(resp, f"get {object} {crm_id}")
        record = data.get(spec.detail_key) if spec.detail_key else data
        return self._with_external_id(spec, record) if isinstance(record, dict) else None

    # ----------------------------------------------------------------- writes

    def apply(self, ops: Sequence[Operation], ledger: IntentLedger) -> list[Result]:
        locked = _LockedLedger(ledger)
        return self._pool.map(lambda op: self._apply_one(op, locked), ops)

    def _apply_one(self, op: Operation, ledger: IntentLedger) -> Result:
        spec = SPECS.get(op.object)
        if spec is None:
            return Result(
                Outcome.PERMANENT,
                error=f"BottleCRM sink has no object {op.object!r}; use one of {list(SPECS)}",
            )
        try:
            if op.action is Action.UPSERT:
                return self._upsert(spec, op, ledger)
            if op.action is Action.DELETE:
                return self._delete(spec, op)
            if op.action is Action.ARCHIVE:
                return self._archive(spec, op, ledger)
            return Result(Outcome.PERMANENT, error=f"unknown action {op.action!r}")
        except CrmError as exc:
            return exc.result
        except Exception as exc:  # a bug must fail its own op, not the whole batch
            return Result(Outcome.PERMANENT, error=f"unexpected {type(exc).__name__} in BottleCRM sink: {exc}")

    def _body(self, spec: ObjectSpec, op: Operation) -> dict[str, Any]:
        body = dict(op.record)
        if spec.cf_target is None:
            sku = body.get("sku")
            if sku not in (None, "") and str(sku) != op.external_id:
                raise CrmError(
                    Result(
                        Outcome.PERMANENT,
                        error=f"product sku {sku!r} differs from external id {op.external_id!r}: BottleCRM "
                        "products have no custom fields, so the SKU is the external id; map the product's "
                        "external id from its SKU",
                    )
                )
            body["sku"] = op.external_id
        else:
            body["custom_fields"] = {**(body.get("custom_fields") or {}), self.field: op.external_id}
        return body

    def _update(self, spec: ObjectSpec, crm_id: str, body: dict[str, Any]) -> Result | None:
        """Update in place; None when the record is gone (404)."""
        resp = self.client.request(spec.update_method, spec.name, f"{spec.path}{crm_id}/", body=body)
        if resp.status_code == 404:
            return None
        if resp.is_success:
            return Result(Outcome.OK, crm_id=crm_id, status_code=resp.status_code)
        return classify(resp, f"update {spec.name} {crm_id}")

    def _adopt(
        self, spec: ObjectSpec, op: Operation, crm_id: str, body: dict[str, Any], ledger: IntentLedger
    ) -> Result:
        result = self._update(spec, crm_id, body)
        if result is None:  # deleted between our read and our write: let a retry create it
            return Result(Outcome.TRANSIENT, error=f"{spec.name} {crm_id} vanished while being adopted")
        if result.outcome is Outcome.OK:
            ledger.finish_create(op, crm_id)
        return result

    def _upsert(self, spec: ObjectSpec, op: Operation, ledger: IntentLedger) -> Result:
        body = self._body(spec, op)
        if op.crm_id:
            result = self._update(spec, op.crm_id, body)
            if result is not None:
                return result
            # 404: deleted in the CRM since we last wrote it; recreate.
        if ledger.begin_create(op):
            # An earlier create may have reached the CRM before we crashed.
            found = self.lookup(spec.name, op.external_id)
            if found:
                return self._adopt(spec, op, found["id"], body, ledger)
        resp = self.client.request("POST", spec.name, spec.path, body=body)
        if resp.is_success:
            crm_id = self._created_id(spec, self.client.expect_json(resp, f"create {spec.name}"))
            ledger.finish_create(op, crm_id)
            return Result(Outcome.OK, crm_id=crm_id, created=True, status_code=resp.status_code)
        if unique_violation(resp, spec):
            return self._resolve_conflict(spec, op, body, resp, ledger)
        return classify(resp, f"create {spec.name} {op.external_id}")

    @staticmethod
    def _created_id(spec: ObjectSpec, data: dict[str, Any]) -> str:
        # Accounts, contacts and deals answer {"error": false, "id": ...}; products
        # answer {"product": {...}}.
        crm_id = data.get("id") or (data.get(spec.name) or {}).get("id")
        if not crm_id:
            raise CrmError(Result(Outcome.PERMANENT, error=f"create {spec.name}: no id in answer {data!r}"))
        return str(crm_id)

    def _resolve_conflict(
        self, spec: ObjectSpec, op: Operation, body: dict[str, Any], resp: Any, ledger: IntentLedger
    ) -> Result:
        """A create clashed (or may have) on the natural key: adopt, claim, or refuse."""
        found = self.lookup(spec.name, op.external_id)
        if found:
            return self._adopt(spec, op, found["id"], body, ledger)
        key_value = body.get(spec.natural_key)
        holder = self._find_natural(spec, key_value) if key_value not in (None, "") else None
        if holder is not None:
            owner = holder["external_id"]
            if owner in (None, op.external_id):
                # Made in the CRM by hand (or by an import): claim it by writing our id into it.
                return self._adopt(spec, op, holder["id"], body, ledger)
            return Result(
                Outcome.PERMANENT,
                error=f"{spec.name} {spec.natural_key} {key_value!r} is already used by CRM record "
                f"{holder['id']} with external id {owner!r}; cannot create it for external id "
                f"{op.external_id!r} (BottleCRM keeps {spec.natural_key} unique per org)",
                status_code=resp.status_code,
            )
        # Nothing holds the key now: the 500 came from a concurrent create that has since
        # gone, or from something else; a retry settles which.
        return classify(resp, f"create {spec.name} {op.external_id}")

    def _resolve_id(self, spec: ObjectSpec, op: Operation) -> str | None:
        if op.crm_id:
            return op.crm_id
        found = self.lookup(spec.name, op.external_id)
        return str(found["id"]) if found else None

    def _delete(self, spec: ObjectSpec, op: Operation) -> Result:
        crm_id = self._resolve_id(spec, op)
        if crm_id is None:
            return Result(Outcome.OK)  # never reached the CRM, or already deleted
        resp = self.client.request("DELETE", spec.name, f"{spec.path}{crm_id}/")
        if resp.is_success or resp.status_code == 404:
            return Result(Outcome.OK, crm_id=crm_id, status_code=resp.status_code)
        # 409: an account that still has invoices/projects (BottleCRM protects them).
        return classify(resp, f"delete {spec.name} {crm_id}")

    def _archive(self, spec: ObjectSpec, op: Operation, ledger: IntentLedger) -> Result:
        if op.record:
            # A soft-deleted row with its fields: keep the record (and its history) current, inactive.
            archived = replace(op, action=Action.UPSERT, record={**op.record, "is_active": False})
            return self._upsert(spec, archived, ledger)
        crm_id = self._resolve_id(spec, op)
        if crm_id is None:
            return Result(Outcome.OK)  # nothing in the CRM to archive
        result = self._update(spec, crm_id, {"is_active": False})
        if result is None:
            return Result(Outcome.OK, crm_id=crm_id, status_code=404)  # deleted meanwhile: as good
        return result

    def close(self) -> None:
        self._pool.shutdown()
        self.client.close()
