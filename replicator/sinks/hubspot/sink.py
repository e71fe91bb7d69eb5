"""The HubSpot sink: batch upserts keyed by a unique id property, parents as associations.

Identity. Every object type carries the ERP key in a custom string property
(``id_property``, default ``erp_id``) created by ``ensure_setup()`` with
``hasUniqueValue: true`` (Properties API, developers.hubspot.com/docs/api-reference/
crm-properties-v3). Writes use ``POST /crm/v3/objects/{type}/batch/upsert`` with that
property as ``idProperty`` ("Create or update a batch of objects by unique property
values"): HubSpot creates the record when no record holds the value and updates it
otherwise, atomically. Replaying an upsert after a crash therefore updates the record it
created the first time, so the IntentLedger is not needed (nor used) for creates.

Record fields. ``op.record`` holds HubSpot property names (``name``, ``domain``,
``firstname``, ``dealstage``, ...). A ``None`` value clears the property (HubSpot clears
with an empty string). Lookup fields (``contact.account``, ``opportunity.account``,
``line_item.opportunity``) hold the parent's HubSpot id and become default associations
(see ``associations.py``); they are not sent as properties.

DELETE and ARCHIVE both archive (``batch/archive``; HubSpot keeps archived records 90
days in its recycle bin). ARCHIVE carrying a record upserts it first, so the archived
copy holds the ERP's last values. A record already gone counts as done.

Reads answer flat dicts: ``{"id", **properties, "external_id", "archived", "createdAt",
"updatedAt"}`` plus each lookup field with the associated parent's id. HubSpot returns
only the properties asked for: the id property, the modification time (``hs_lastmodifieddate``;
``lastmodifieddate`` on contacts), the names given
as ``properties`` and every property this sink has written.

Threading: the batches of one (object, action) group run on up to ``concurrency``
threads; groups run one after the other in the order of the operations, so parents
written in a call are written before their children, and children deleted before parents.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from replicator.sinks.base import Action, CrmError, IntentLedger, Operation, Outcome, Result
from replicator.sinks.hubspot.associations import LOOKUPS, Associations, parent_of, plan_associations
from replicator.sinks.hubspot.batch import BatchArchive, BatchUpsert, UpsertInput, batch_read, chunks
from replicator.sinks.hubspot.client import (
    MODIFIED_PROPERTY,
    OBJECT_TYPES,
    HubSpotClient,
    body_text,
    classify,
    object_type,
)
from replicator.sinks.pool import LazyPool
from replicator.state.budget import Budget, Priority, UnlimitedBudget

# The default property group of each object type, where ensure_setup() puts the id property.
PROPERTY_GROUPS: dict[str, str] = {
    "companies": "companyinformation",
    "contacts": "contactinformation",
    "deals": "dealinformation",
    "products": "productinformation",
    "line_items": "lineiteminformation",
}
PAGE = 100


def _property_value(value: Any) -> Any:
    return "" if value is None else value


class HubSpotSink:
    name = "hubspot"
    # DELETE archives too: reconcile takes an archived record whose ERP row is gone as deleted.
    deletes_archive = True

    def __init__(
        self,
        url: str = "https://api.hubapi.com",
        token: str = "",
        *,
        id_property: str = "erp_id",
        budget: Budget | None = None,
        timeout: float = 15.0,
        concurrency: int = 2,
        properties: Mapping[str, Iterable[str]] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not token:
            raise ValueError("HubSpot needs a private app access token (token=...)")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.id_property = id_property
        self.concurrency = concurrency
        self.priority: Priority = Priority.LIVE
        self.client = HubSpotClient(
            url,
            token,
            budget=budget if budget is not None else UnlimitedBudget(),
            priority=lambda: self.priority,
            timeout=timeout,
            max_connections=max(concurrency, 2),
            transport=transport,
        )
        self._read: dict[str, set[str]] = {obj: {id_property, MODIFIED_PROPERTY[obj]} for obj in OBJECT_TYPES}
        for obj, names in (properties or {}).items():
            object_type(obj)
            self._read[obj] |= set(names)
        self._read_lock = threading.Lock()
        self._pool = LazyPool(concurrency, "hubspot")

    # ------------------------------------------------------------------ setup

    def _property(self, type_: str) -> dict[str, Any] | None:
        resp = self.client.request("GET", "property", f"/crm/v3/properties/{type_}/{self.id_property}")
        if resp.status_code == 404:
            return None
        data = self.client.expect_json(resp, f"read property {type_}.{self.id_property}")
        return data if isinstance(data, dict) and not data.get("archived") else None

    def ensure_setup(self, objects: Iterable[str] | None = None) -> None:
        """Create the unique id property on each object type that lacks it."""
        for obj in objects if objects is not None else OBJECT_TYPES:
            type_ = object_type(obj)
            found = self._property(type_)
            if found is None:
                resp = self.client.request(
                    "POST",
                    "property",
                    f"/crm/v3/properties/{type_}",
                    body={
                        "name": self.id_property,
                        "label": "ERP ID",
                        "type": "string",
                        "fieldType": "text",
                        "groupName": PROPERTY_GROUPS[type_],
                        "hasUniqueValue": True,
                        "description": "The record's key in the ERP, written by the replicator",
                    },
                )
                # A concurrent ensure_setup may have won the race (409): trust a re-read over the error.
                if not resp.is_success:
                    found = self._property(type_)
                    if found is None:
                        raise CrmError(classify(resp, f"create property {type_}.{self.id_property}"))
                else:
                    found = resp.json()
            if not found.get("hasUniqueValue"):
                raise CrmError(
                    Result(
                        Outcome.PERMANENT,
                        error=f"property {type_}.{self.id_property} exists but is not unique (hasUniqueValue "
                        "false), so it cannot key upserts; HubSpot cannot change that afterwards: delete the "
                        "property in HubSpot settings, or configure another id_property",
                    )
                )

    def check(self) -> list[tuple[str, bool, str]]:
        """(name, ok, detail) for the token and the id property on each object type."""
        try:
            resp = self.client.request("GET", "contacts", "/crm/v3/objects/contacts", params={"limit": 1})
        except CrmError as exc:
            return [("credentials", False, f"HubSpot unreachable at {self.client.url}: {exc}")]
        if resp.status_code in (401, 403):
            return [
                (
                    "credentials",
                    False,
                    f"{self.client.url} answered HTTP {resp.status_code} ({body_text(resp, 200)}); fix: create a "
                    "private app in HubSpot (Settings > Integrations > Private apps) with the CRM object and "
                    "schema read/write scopes and configure its access token",
                )
            ]
        checks = [
            (
                "credentials",
                resp.is_success,
                f"token accepted by {self.client.url}"
                if resp.is_success
                else f"HTTP {resp.status_code}: {body_text(resp, 200)}",
            )
        ]
        for obj, type_ in OBJECT_TYPES.items():
            name = f"property {type_}.{self.id_property}"
            try:
                found = self._property(type_)
            except CrmError as exc:
                checks.append((name, False, str(exc)))
                continue
            if found is None:
                checks.append((name, False, f"missing; fix: run `replicator setup` (creates it for {obj})"))
            elif not found.get("hasUniqueValue"):
                checks.append((name, False, "present but not unique (hasUniqueValue false): upserts cannot use it"))
            else:
                checks.append((name, True, "present, unique"))
        return checks

    # ------------------------------------------------------------------ reads

    def read_properties(self, object: str) -> list[str]:
        with self._read_lock:
            return sorted(self._read[object])

    def flatten(self, object: str, raw: dict[str, Any], parents: Mapping[str, set[str]]) -> dict[str, Any]:
        """A HubSpot object as the flat record this sink answers."""
        properties = raw.get("properties") or {}
        external = properties.get(self.id_property)
        record: dict[str, Any] = {
            "id": str(raw["id"]),
            **properties,
            "external_id": None if external in (None, "") else str(external),
            "archived": bool(raw.get("archived", False)),
            "createdAt": raw.get("createdAt"),
            "updatedAt": raw.get("updatedAt"),
        }
        for lookup, parent in LOOKUPS.get(object, {}).items():
            record[lookup] = parent_of(parents.get(OBJECT_TYPES[parent], set()))
        return record

    @staticmethod
    def _embedded_parents(raw: dict[str, Any]) -> dict[str, set[str]]:
        """Associations a GET/list answer embeds: {"companies": {"results": [{"id": ...}]}}."""
        out: dict[str, set[str]] = {}
        for to_type, block in (raw.get("associations") or {}).items():
            ids = {str(r["id"]) for r in (block or {}).get("results") or [] if r.get("id") is not None}
            out[to_type] = ids
        return out

    def _association_param(self, object: str) -> dict[str, str]:
        parents = [OBJECT_TYPES[p] for p in LOOKUPS.get(object, {}).values()]
        return {"associations": ",".join(parents)} if parents else {}

    def _with_parents(self, object: str, raws: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Flat records with their parents, read in one v4 call per lookup and 100 records."""
        parents: dict[str, dict[str, set[str]]] = {str(r["id"]): {} for r in raws}
        for parent in LOOKUPS.get(object, {}).values():
            current = Associations(self.client, object, parent).read(list(parents))
            for crm_id, ids in parents.items():
                ids[OBJECT_TYPES[parent]] = current.get(crm_id, set())
        return [self.flatten(object, r, parents[str(r["id"])]) for r in raws]

    def lookup(self, object: str, external_id: str) -> dict[str, Any] | None:
        """The (unarchived) record holding this external id, or None."""
        found = self.lookup_many(object, [external_id])
        return found.get(external_id)

    def lookup_many(self, object: str, external_ids: list[str]) -> dict[str, dict[str, Any]]:
        """external id -> record, for those HubSpot holds (one call per 100, plus their parents)."""
        raws = batch_read(
            self.client,
            object_type(object),
            external_ids,
            properties=self.read_properties(object),
            id_property=self.id_property,
        )
        return {r["external_id"]: r for r in self._with_parents(object, raws) if r["external_id"]}

    def get(self, object: str, crm_id: str) -> dict[str, Any] | None:
        """The record with this HubSpot id (with its parents), None when missing or archived."""
        type_ = object_type(object)
        resp = self.client.request(
            "GET",
            type_,
            f"/crm/v3/objects/{type_}/{crm_id}",
            params={"properties": ",".join(self.read_properties(object)), **self._association_param(object)},
        )
        if resp.status_code == 404:
            return None
        raw = self.client.expect_json(resp, f"get {object} {crm_id}")
        return self.flatten(object, raw, self._embedded_parents(raw))

    def iter_records(self, object: str) -> Iterator[dict[str, Any]]:
        """Every record of ``object``, active ones then archived ones, 100 per call."""
        for archived in (False, True):
            yield from self._list(object, archived)

    def _list(self, object: str, archived: bool) -> Iterator[dict[str, Any]]:
        params = {"properties": ",".join(self.read_properties(object)), **self._association_param(object)}
        for raw in self._pages(object, archived, params):
            yield self.flatten(object, raw, self._embedded_parents(raw))

    def archived_records(self, object: str) -> Iterator[tuple[str, str | None]]:
        """(id, archivedAt) of every archived record of ``object`` (HubSpot keeps them 90 days)."""
        for raw in self._pages(object, True, {"properties": self.id_property}):
            yield str(raw["id"]), raw.get("archivedAt")

    def _pages(self, object: str, archived: bool, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """``GET /crm/v3/objects/{type}`` page by page: the raw results."""
        type_ = object_type(object)
        after: str | None = None
        while True:
            page: dict[str, Any] = {"limit": PAGE, "archived": str(archived).lower(), **params}
            if after:
                page["after"] = after
            resp = self.client.request("GET", type_, f"/crm/v3/objects/{type_}", params=page)
            data = self.client.expect_json(resp, f"list {object}")
            yield from data.get("results") or []
            after = ((data.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                return

    def comparable(self, object: str, raw: dict[str, Any]) -> dict[str, Any]:
        """Records are already flat, lookups already parent ids: the read shape is the written one."""
        return dict(raw)

    def is_archived(self, object: str, raw: dict[str, Any]) -> bool:
        return raw.get("archived") is True

    # ----------------------------------------------------------------- writes

    def apply(self, ops: Sequence[Operation], ledger: IntentLedger) -> list[Result]:
        """One Result per op, in op order. The ledger is not used: see the module docstring."""
        results: list[Result | None] = [None] * len(ops)
        groups: dict[tuple[str, Action], list[int]] = {}
        for index, op in enumerate(ops):
            groups.setdefault((op.object, op.action), []).append(index)
        for (obj, action), indexes in groups.items():
            try:
                object_type(obj)
                group = [ops[i] for i in indexes]
                if action is Action.UPSERT:
                    answers = self._upsert(obj, group)
                elif action in (Action.DELETE, Action.ARCHIVE):
                    answers = self._archive(obj, group)
                else:
                    answers = [Result(Outcome.PERMANENT, error=f"unknown action {action!r}")] * len(group)
            except CrmError as exc:
                answers = [exc.result] * len(indexes)
            except Exception as exc:  # a bug must fail its own group, not the whole call
                error = f"unexpected {type(exc).__name__} in HubSpot sink ({obj} {action}): {exc}"
                answers = [Result(Outcome.PERMANENT, error=error)] * len(indexes)
            for i, answer in zip(indexes, answers, strict=True):
                results[i] = answer
        return [r if r is not None else Result(Outcome.PERMANENT, error="no result") for r in results]

    def _map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        return self._pool.map(fn, items)

    def _upsert(self, object: str, ops: list[Operation]) -> list[Result]:
        lookups = LOOKUPS.get(object, {})
        inputs: list[UpsertInput] = []
        for op in ops:
            properties = {k: _property_value(v) for k, v in op.record.items() if k not in lookups}
            # Written too (unchanged by an update), so every result echoes the value it belongs to.
            properties[self.id_property] = op.external_id
            inputs.append(UpsertInput(op.external_id, properties))
            with self._read_lock:
                self._read[object] |= properties.keys()
        upsert = BatchUpsert(self.client, object_type(object), self.id_property)
        answers: dict[str, Result] = {}
        for part in self._map(upsert.run, chunks(inputs)):
            answers |= part
        results = [answers[op.external_id] for op in ops]
        for field, parent in lookups.items():
            wanted = [
                (op, r) for op, r in zip(ops, results, strict=True) if r.outcome is Outcome.OK and field in op.record
            ]
            if wanted:
                self._associate(object, parent, field, wanted)
        return results

    def _associate(self, object: str, parent: str, field: str, wanted: list[tuple[Operation, Result]]) -> None:
        """Make each record's association match its lookup field; failures replace the op's Result in place."""
        links = Associations(self.client, object, parent)
        desired: dict[str, str | None] = {}
        for op, result in wanted:
            assert result.crm_id is not None
            value = op.record[field]
            desired[result.crm_id] = None if value in (None, "") else str(value)
        existing = [r.crm_id for _, r in wanted if not r.created and r.crm_id is not None]
        try:
            current = links.read(existing) if existing else {}
        except CrmError as exc:
            # Without the current links no association can be planned, not even for records just
            # created: fail them all, so the retry upserts again (idempotent) and links them then.
            failed = dict.fromkeys(desired, exc.result)
        else:
            plan = plan_associations(desired, current)
            failed = links.create(plan.create) if plan.create else {}
            stale = [(f, tos) for f, tos in plan.remove if f not in failed]
            failed |= links.remove(stale) if stale else {}
        for op, result in wanted:
            problem = failed.get(result.crm_id or "")
            if problem is not None:
                result.outcome = problem.outcome
                result.retry_after = problem.retry_after
                result.status_code = problem.status_code
                result.error = (
                    f"{op.object} {op.external_id} was written as HubSpot {result.crm_id}, but its {field} "
                    f"association to {desired.get(result.crm_id or '')} failed: {problem.error}"
                )

    def _archive(self, object: str, ops: list[Operation]) -> list[Result]:
        results: dict[int, Result] = {}
        crm_ids: dict[int, str] = {}
        # A soft-deleted row with its fields: keep the archived copy current.
        carrying = [i for i, op in enumerate(ops) if op.action is Action.ARCHIVE and op.record]
        if carrying:
            for i, result in zip(carrying, self._upsert(object, [ops[i] for i in carrying]), strict=True):
                if result.outcome is Outcome.OK and result.crm_id:
                    crm_ids[i] = result.crm_id
                else:
                    results[i] = result
        unknown = [i for i, op in enumerate(ops) if i not in crm_ids and i not in results]
        for i in unknown:
            if ops[i].crm_id:
                crm_ids[i] = str(ops[i].crm_id)
        to_find = [i for i in unknown if i not in crm_ids]
        if to_find:
            try:
                found = batch_read(
                    self.client,
                    object_type(object),
                    [ops[i].external_id for i in to_find],
                    properties=[self.id_property],
                    id_property=self.id_property,
                )
            except CrmError as exc:
                results.update(dict.fromkeys(to_find, exc.result))
            else:
                by_external = {str((r.get("properties") or {}).get(self.id_property)): str(r["id"]) for r in found}
                for i in to_find:
                    if ops[i].external_id in by_external:
                        crm_ids[i] = by_external[ops[i].external_id]
                    else:
                        results[i] = Result(Outcome.OK)  # never reached HubSpot, or already archived
        archive = BatchArchive(self.client, object_type(object))
        answers: dict[str, Result] = {}
        for part in self._map(archive.run, chunks(sorted(set(crm_ids.values())))):
            answers |= part
        for i, crm_id in crm_ids.items():
            results[i] = answers[crm_id]
        return [results[i] for i in range(len(ops))]

    def close(self) -> None:
        self._pool.shutdown()
        self.client.close()
