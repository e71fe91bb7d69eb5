"""The Salesforce sink: sObject Collections upserts keyed by an external-id field, Bulk API 2.0
for backfills, collection deletes.

Objects: account → ``Account``, contact → ``Contact``, product → ``Product2``, opportunity →
``Opportunity``. ``Operation.record`` holds Salesforce field API names, lookups included
(``AccountId``), written as they are.

Identity and idempotency. Every record carries the ERP key in a custom field marked
External ID (default ``ERP_Id__c``) on each of the four objects; ``check()`` verifies it
through ``GET /sobjects/{SObject}/describe`` (field ``externalId: true``). Upserts go
through "Upsert Records Using sObject Collections" (REST API Developer Guide):
``PATCH /composite/sobjects/{SObject}/{ExternalIdField}``, at most 200 records, answered
with one UpsertResult per record in order. Salesforce itself matches on the external id,
so replaying an upsert after a crash updates the record the first attempt created: the
sink needs no intent ledger and never calls it.

Backfills. When ``priority`` is ``Priority.BACKFILL`` and one call holds at least
``bulk_threshold`` upserts of one sObject, they go through a Bulk API 2.0 ingest job
(:mod:`replicator.sinks.salesforce.bulk`) instead: one job costs a handful of API calls
instead of one per 200 records.

Deletes use "Delete Records Using sObject Collections"
(``DELETE /composite/sobjects?ids=...&allOrNone=false``, at most 200 ids); a record
without a known CRM id is found by its external id first (one SOQL query per 100). A
record already deleted (``ENTITY_IS_DELETED``) or not found (purged from the Recycle Bin)
counts as done.

Archive. Only ``Product2`` has an active flag (``IsActive``): archiving a product sets
it to false (with the op's fields, when it has any), and an UPSERT carrying
``IsActive: true`` revives it. Accounts, contacts and opportunities have no such flag,
so archiving them deletes them: Salesforce keeps deleted records in the Recycle Bin for
15 days, where an admin can restore them; that is Salesforce's own soft delete. (So
``reconcile`` finds archived accounts, contacts and opportunities missing, not archived.)

Threading: one call's groups (same sObject and kind) run one after the other in the order
they first appear, since the caller puts parents first; the chunks of one group run on up
to ``concurrency`` threads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any
from urllib.parse import quote as url_quote

import httpx

from replicator.sinks.base import Action, CrmError, IntentLedger, Operation, Outcome, Result
from replicator.sinks.pool import LazyPool
from replicator.sinks.salesforce import soql
from replicator.sinks.salesforce.auth import Credentials
from replicator.sinks.salesforce.bulk import BulkUpsert
from replicator.sinks.salesforce.client import SalesforceClient, plain
from replicator.sinks.salesforce.describe import Schema
from replicator.sinks.salesforce.results import item_result, json_value
from replicator.state.budget import Budget, Priority, UnlimitedBudget

SOBJECTS: dict[str, str] = {
    "account": "Account",
    "contact": "Contact",
    "product": "Product2",
    "opportunity": "Opportunity",
}
ACTIVE_FLAG: dict[str, str] = {"Product2": "IsActive"}
COLLECTION_MAX = 200
LOOKUP_BATCH = 100  # external ids per SOQL IN (): keeps the query URL short
# External ids that can go into a URL path as they are; others are looked up with SOQL.
# At least one character is not a dot: "." and ".." are path segments URLs resolve away
# (RFC 3986, "Remove Dot Segments"), which would read another resource.
_PATH_SAFE = re.compile(r"[A-Za-z0-9._~-]*[A-Za-z0-9_~-][A-Za-z0-9._~-]*")

Indexed = list[tuple[int, Result]]


def _iso_utc(moment: datetime) -> str:
    if moment.tzinfo is None:
        raise ValueError(f"{moment!r} has no time zone; pass an aware datetime")
    return moment.astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True, slots=True)
class Task:
    """One request's worth of work and the ops whose results it answers."""

    indexes: list[int]
    run: Callable[[], Indexed]


class SalesforceSink:
    name = "salesforce"

    def __init__(
        self,
        login_url: str,
        *,
        client_id: str,
        client_secret: str,
        refresh_token: str | None = None,
        username: str | None = None,
        password: str | None = None,
        api_version: str = "v62.0",
        external_id_field: str = "ERP_Id__c",
        budget: Budget | None = None,
        timeout: float = 15.0,
        bulk_threshold: int = 2000,
        concurrency: int = 2,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.field = soql.field_name(external_id_field)
        self.bulk_threshold = bulk_threshold
        self.concurrency = concurrency
        self.client = SalesforceClient(
            login_url,
            Credentials(client_id, client_secret, refresh_token, username, password),
            api_version=api_version,
            budget=budget if budget is not None else UnlimitedBudget(),
            timeout=timeout,
            max_connections=max(concurrency, 2),
            transport=transport,
        )
        self.bulk = BulkUpsert(self.client)
        self.schema = Schema(self.client, self.field)
        self._pool = LazyPool(concurrency, "salesforce")

    @property
    def priority(self) -> Priority:
        return self.client.priority

    @priority.setter
    def priority(self, value: Priority) -> None:
        self.client.priority = value

    @property
    def api(self) -> str:
        return self.client.api

    # ------------------------------------------------------------------ setup

    def field_names(self, sobject: str) -> list[str]:
        return self.schema.field_names(sobject)

    def check(self) -> list[tuple[str, bool, str]]:
        """(name, ok, detail) for the credentials and each object's external-id field."""
        try:
            token = self.client.tokens.current()
        except CrmError as exc:
            return [("credentials", False, str(exc.result.error))]
        checks = [("credentials", True, f"token issued; instance {token.instance_url}")]
        for sobject in SOBJECTS.values():
            name = f"external id {sobject}.{self.field}"
            try:
                problem = self.schema.setup_problem(sobject)
            except CrmError as exc:
                checks.append((name, False, f"describe {sobject} failed: {exc.result.error}"))
                continue
            checks.append((name, problem is None, problem or "exists and is an External ID"))
        return checks

    def ensure_setup(self) -> None:
        """Fields cannot be created over the REST API: verify them and say how to create what is missing."""
        problems = [p for p in (self.schema.setup_problem(s) for s in SOBJECTS.values()) if p]
        if problems:
            raise CrmError(Result(Outcome.PERMANENT, error="; ".join(problems)))

    # ------------------------------------------------------------------ reads

    def _shaped(self, record: dict[str, Any]) -> dict[str, Any]:
        """Flat, without ``attributes``, plus ``external_id`` and ``id`` (what generic code keys on)."""
        out = plain(record)
        out["external_id"] = out.get(self.field)
        out["id"] = out.get("Id")
        return out

    def _sobject(self, object: str) -> str:
        sobject = SOBJECTS.get(object)
        if sobject is None:
            raise CrmError(
                Result(
                    Outcome.PERMANENT, error=f"Salesforce sink has no object {object!r}; use one of {list(SOBJECTS)}"
                )
            )
        return sobject

    def get(self, object: str, crm_id: str) -> dict[str, Any] | None:
        """``GET /sobjects/{SObject}/{id}``: every field; None when it does not exist (or was deleted)."""
        sobject = self._sobject(object)
        resp = self.client.request("GET", sobject, f"{self.api}/sobjects/{sobject}/{url_quote(crm_id, safe='')}")
        if resp.status_code == 404:
            return None
        return self._shaped(self.client.expect_json(resp, f"get {sobject} {crm_id}"))

    def lookup(self, object: str, external_id: str) -> dict[str, Any] | None:
        """``GET /sobjects/{SObject}/{ExternalIdField}/{value}``; a value a URL path cannot carry goes by SOQL."""
        sobject = self._sobject(object)
        if not _PATH_SAFE.fullmatch(external_id):
            where = f"{self.field} = {soql.quote(external_id)}"
            text = soql.select(self.field_names(sobject), sobject, where=where, limit=2)
            found = list(self.client.query(text, sobject))
            if len(found) > 1:
                raise CrmError(self._duplicates(sobject, external_id))
            return self._shaped(found[0]) if found else None
        resp = self.client.request("GET", sobject, f"{self.api}/sobjects/{sobject}/{self.field}/{external_id}")
        if resp.status_code == 404:
            return None
        if resp.status_code == 300:  # "Multiple Choices": several records hold the value
            raise CrmError(self._duplicates(sobject, external_id))
        return self._shaped(self.client.expect_json(resp, f"lookup {sobject} {self.field}={external_id}"))

    def _duplicates(self, sobject: str, external_id: str) -> Result:
        return Result(
            Outcome.PERMANENT,
            error=f"several {sobject} records have {self.field} = {external_id!r}; fix: remove the "
            f"duplicates and make {self.field} Unique in Setup → Object Manager → {sobject}",
            status_code=300,
        )

    def query(
        self,
        object: str,
        where: str | None = None,
        order_by: Sequence[str] = (),
        limit: int | None = None,
        fields: Sequence[str] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Records of `object` matching a SOQL condition built with :mod:`soql`, with ``fields``
        (default: every readable field)."""
        sobject = self._sobject(object)
        selected = fields if fields is not None else self.field_names(sobject)
        text = soql.select(selected, sobject, where=where, order_by=order_by, limit=limit)
        return (self._shaped(r) for r in self.client.query(text, sobject))

    def deleted(self, object: str, start: datetime, end: datetime) -> tuple[list[tuple[str, datetime]], datetime]:
        """ "sObject Get Deleted": the ids of `object`'s records deleted between `start` and `end`
        with their deletion times, and where Salesforce's answer stops (``latestDateCovered``,
        the start of the next call). Salesforce ignores the seconds of both times, wants them more
        than a minute apart and keeps its delete log for 15 days: the caller sees to all three."""
        sobject = self._sobject(object)
        params = {"start": _iso_utc(start), "end": _iso_utc(end)}
        resp = self.client.request("GET", sobject, f"{self.api}/sobjects/{sobject}/deleted/", params=params)
        data = self.client.expect_json(resp, f"deleted {sobject} records")
        covered = soql.parse_datetime(data.get("latestDateCovered")) if isinstance(data, dict) else None
        if covered is None or not isinstance(data.get("deletedRecords"), list):
            raise CrmError(
                Result(Outcome.TRANSIENT, error=f"deleted {sobject} records: unexpected answer {data!r:.300}")
            )
        found = []
        for item in data["deletedRecords"]:
            at = soql.parse_datetime(item.get("deletedDate")) if isinstance(item, dict) else None
            if at is None or not item.get("id"):
                raise CrmError(Result(Outcome.TRANSIENT, error=f"deleted {sobject} records: unreadable {item!r:.300}"))
            found.append((str(item["id"]), at))
        return found, covered

    def iter_records(self, object: str) -> Iterator[dict[str, Any]]:
        return self.query(object)

    def comparable(self, object: str, raw: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in raw.items() if k not in ("attributes", "external_id", "id")}

    def is_archived(self, object: str, raw: dict[str, Any]) -> bool:
        flag = ACTIVE_FLAG.get(SOBJECTS.get(object, ""))
        return flag is not None and raw.get(flag) is False

    def ids_by_external_id(self, sobject: str, external_ids: Sequence[str]) -> dict[str, str]:
        """CRM ids of the records holding these external ids (absent ones left out)."""
        found: dict[str, str] = {}
        for start in range(0, len(external_ids), LOOKUP_BATCH):
            batch = external_ids[start : start + LOOKUP_BATCH]
            text = soql.select(["Id", self.field], sobject, where=f"{self.field} IN {soql.in_list(batch)}")
            for record in self.client.query(text, sobject):
                found[str(record[self.field])] = str(record["Id"])
        return found

    # ------------------------------------------------------------------ writes

    def apply(self, ops: Sequence[Operation], ledger: IntentLedger) -> list[Result]:
        """One Result per op, same order. The ledger is not used: upserts are keyed by the external id."""
        results: list[Result | None] = [None] * len(ops)
        groups: dict[tuple[str, str], list[int]] = {}
        for i, op in enumerate(ops):
            sobject = SOBJECTS.get(op.object)
            if sobject is None:
                results[i] = Result(
                    Outcome.PERMANENT, error=f"Salesforce sink has no object {op.object!r}; use one of {list(SOBJECTS)}"
                )
            elif not op.external_id:
                results[i] = Result(Outcome.PERMANENT, error=f"{op.entity}: empty external id, nothing to key on")
            else:
                groups.setdefault((sobject, self._kind(sobject, op)), []).append(i)
        for (sobject, kind), indexes in groups.items():
            for i, result in self._run_group(sobject, kind, [(i, ops[i]) for i in indexes]):
                results[i] = result
        return [r or Result(Outcome.PERMANENT, error="no result (sink bug)") for r in results]

    @staticmethod
    def _kind(sobject: str, op: Operation) -> str:
        if op.action is Action.UPSERT:
            return "upsert"
        if op.action is Action.ARCHIVE and sobject in ACTIVE_FLAG:
            return "upsert" if op.record else "deactivate"
        return "delete"  # DELETE, and ARCHIVE of objects without an active flag

    def _values(self, sobject: str, op: Operation) -> dict[str, Any]:
        """The fields to write, values as the op holds them (Decimal, datetime, ...)."""
        # Upserts identify records by the external id only: an Id would be refused.
        skip = {"id", "attributes", self.field.lower()}
        fields = {k: v for k, v in op.record.items() if k.lower() not in skip}
        if op.action is Action.ARCHIVE:
            fields[ACTIVE_FLAG[sobject]] = False
        return fields

    def _fields(self, sobject: str, op: Operation) -> dict[str, Any]:
        """The fields to write as JSON values."""
        return {k: json_value(v) for k, v in self._values(sobject, op).items()}

    def _run_group(self, sobject: str, kind: str, items: list[tuple[int, Operation]]) -> Indexed:
        tasks: list[Task] = []
        if kind == "upsert":
            if self.priority is Priority.BACKFILL and len(items) >= self.bulk_threshold:
                tasks.append(Task([i for i, _ in items], partial(self._bulk_upsert, sobject, items)))
            else:
                for s in range(0, len(items), COLLECTION_MAX):
                    chunk = items[s : s + COLLECTION_MAX]
                    tasks.append(Task([i for i, _ in chunk], partial(self._upsert_chunk, sobject, chunk)))
            return self._run_tasks(tasks)
        try:
            resolved = self._resolve(sobject, items)
        except CrmError as exc:
            return [(i, exc.result) for i, _ in items]
        # Never reached the CRM, or already gone: nothing to delete or archive.
        done: Indexed = [(i, Result(Outcome.OK)) for i, _ in items if i not in resolved]
        known = list(resolved.items())
        run = self._delete_chunk if kind == "delete" else self._deactivate_chunk
        for s in range(0, len(known), COLLECTION_MAX):
            ids = known[s : s + COLLECTION_MAX]
            tasks.append(Task([i for i, _ in ids], partial(run, sobject, ids)))
        return done + self._run_tasks(tasks)

    def _run_tasks(self, tasks: list[Task]) -> Indexed:
        """Run tasks (on the pool when there are several); a failing task fails only its own ops."""

        def guarded(task: Task) -> Indexed:
            try:
                return task.run()
            except CrmError as exc:
                return [(i, exc.result) for i in task.indexes]
            except Exception as exc:  # a bug must fail its own ops, not the whole call
                failed = Result(Outcome.PERMANENT, error=f"unexpected {type(exc).__name__} in Salesforce sink: {exc}")
                return [(i, failed) for i in task.indexes]

        return [pair for chunk in self._pool.map(guarded, tasks) for pair in chunk]

    def _resolve(self, sobject: str, items: list[tuple[int, Operation]]) -> dict[int, str]:
        missing = [op.external_id for _, op in items if not op.crm_id]
        found = self.ids_by_external_id(sobject, missing) if missing else {}
        out: dict[int, str] = {}
        for i, op in items:
            crm_id = op.crm_id or found.get(op.external_id)
            if crm_id:
                out[i] = crm_id
        return out

    def _upsert_chunk(self, sobject: str, chunk: list[tuple[int, Operation]]) -> Indexed:
        body = {
            "allOrNone": False,
            "records": [
                {"attributes": {"type": sobject}, **self._fields(sobject, op), self.field: op.external_id}
                for _, op in chunk
            ],
        }
        resp = self.client.request("PATCH", sobject, f"{self.api}/composite/sobjects/{sobject}/{self.field}", json=body)
        if resp.status_code == 400 and len(chunk) > 1:
            # The whole request was refused (e.g. INVALID_FIELD: one record names a field that does
            # not exist): halve it until the records at fault stand alone, so only they fail. One
            # bad record in 200 costs about 2·log2(200) = 16 requests of the budget, not 200.
            half = len(chunk) // 2
            return self._upsert_part(sobject, chunk[:half]) + self._upsert_part(sobject, chunk[half:])
        what = (
            f"upsert {sobject} with {self.field} {chunk[0][1].external_id!r}"
            if len(chunk) == 1
            else f"upsert {len(chunk)} {sobject} records"
        )
        labels = [(i, f"upsert {sobject} with {self.field} {op.external_id!r}") for i, op in chunk]
        return self._per_record(resp, what, labels)

    def _upsert_part(self, sobject: str, part: list[tuple[int, Operation]]) -> Indexed:
        try:
            return self._upsert_chunk(sobject, part)
        except CrmError as exc:
            return [(i, exc.result) for i, _ in part]

    def _bulk_upsert(self, sobject: str, items: list[tuple[int, Operation]]) -> Indexed:
        results = self.bulk.upsert(
            sobject, self.field, [(op.external_id, self._values(sobject, op)) for _, op in items]
        )
        return [(i, r) for (i, _), r in zip(items, results, strict=True)]

    def _delete_chunk(self, sobject: str, chunk: list[tuple[int, str]]) -> Indexed:
        ids = ",".join(crm_id for _, crm_id in chunk)
        resp = self.client.request(
            "DELETE", sobject, f"{self.api}/composite/sobjects", params={"ids": ids, "allOrNone": "false"}
        )
        labels = [(i, f"delete {sobject} {crm_id}") for i, crm_id in chunk]
        return self._per_record(resp, f"delete {len(chunk)} {sobject} records", labels, gone_ok=True)

    def _deactivate_chunk(self, sobject: str, chunk: list[tuple[int, str]]) -> Indexed:
        """ "Update Records Using sObject Collections": ``PATCH /composite/sobjects`` with ids."""
        flag = ACTIVE_FLAG[sobject]
        body = {
            "allOrNone": False,
            "records": [{"attributes": {"type": sobject}, "id": crm_id, flag: False} for _, crm_id in chunk],
        }
        resp = self.client.request("PATCH", sobject, f"{self.api}/composite/sobjects", json=body)
        labels = [(i, f"archive {sobject} {crm_id}") for i, crm_id in chunk]
        return self._per_record(resp, f"archive {len(chunk)} {sobject} records", labels, gone_ok=True)

    def _per_record(
        self, resp: httpx.Response, what: str, labels: list[tuple[int, str]], *, gone_ok: bool = False
    ) -> Indexed:
        """One Result per record of a collection answer (same order as sent), labelled for its errors."""
        data = self.client.expect_json(resp, what)
        if not isinstance(data, list) or len(data) != len(labels):
            bad = Result(Outcome.TRANSIENT, error=f"{what}: expected {len(labels)} results, got {str(data)[:300]}")
            return [(i, bad) for i, _ in labels]
        return [(i, item_result(item, label, gone_ok=gone_ok)) for (i, label), item in zip(labels, data, strict=True)]

    def close(self) -> None:
        self._pool.shutdown()
        self.client.close()
