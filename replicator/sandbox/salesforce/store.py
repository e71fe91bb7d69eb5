"""Records of the Salesforce sandbox: create, update, upsert by external id, soft delete, undo.

Behaviour follows the REST API Developer Guide ("Insert or Update (Upsert) a Record Using
an External ID", "Delete a Record", "sObject Collections") and the Object Reference:

- a write sets ``LastModifiedDate`` and ``SystemModstamp`` to the (possibly frozen) clock
  in milliseconds; a create also sets ``CreatedDate``; a delete moves the record to the
  Recycle Bin (``IsDeleted = true``, a new ``SystemModstamp``) where queries no longer see it;
- an upsert matches live records by the external id field (unique, case sensitive here);
  a match on a Recycle Bin record does not count, the upsert creates a new record;
- empty strings are stored as null (the API does the same for text fields);
- lookups (``AccountId``) must name a live record of the right sObject.

The caller holds the sandbox lock around every call (the store itself is not thread-safe).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from .schema import PREFIXES, SOBJECTS, RecordError, SObjectType, coerce, format_datetime, make_id, normalize_id

Record = dict[str, Any]


class Clock:
    """Wall-clock time in milliseconds, or a frozen instant (to make many records share one SystemModstamp)."""

    def __init__(self) -> None:
        self.frozen: datetime | None = None

    def now(self) -> str:
        moment = self.frozen or datetime.now(UTC)
        return format_datetime(moment)


class Store:
    def __init__(self) -> None:
        self.clock = Clock()
        self.records: dict[str, dict[str, Record]] = {name: {} for name in SOBJECTS}
        # external id value -> record id, live records only, per sObject and external id field
        self._index: dict[tuple[str, str], dict[str, str]] = {}
        self._serial = 0
        self._undo: list[tuple[str, str, Record | None]] | None = None

    # ------------------------------------------------------------ reads

    def get(self, sobject: str, record_id: str) -> Record | None:
        """The record (live or deleted) with this id (15 or 18 chars), None if there never was one."""
        full = normalize_id(record_id)
        return self.records[sobject].get(full) if full else None

    def find(self, sobject: str, field: str, value: Any) -> Record | None:
        """The live record whose external id `field` equals `value`."""
        if field == "Id":
            record = self.get(sobject, str(value))
            return record if record is not None and not record["IsDeleted"] else None
        record_id = self._index.get((sobject, field), {}).get(str(value))
        return self.records[sobject][record_id] if record_id else None

    def live(self, sobject: str) -> Iterator[Record]:
        return (r for r in self.records[sobject].values() if not r["IsDeleted"])

    # ------------------------------------------------------------ writes

    def insert(self, sobject: str, values: dict[str, Any]) -> str:
        otype = SOBJECTS[sobject]
        fields = self.validate(otype, values, creating=True)
        self._serial += 1
        record_id = make_id(otype.key_prefix, self._serial)
        now = self.clock.now()
        record: Record = {name: f.default for name, f in otype.fields.items()}
        record.update(Id=record_id, IsDeleted=False, CreatedDate=now, LastModifiedDate=now, SystemModstamp=now)
        record.update(fields)
        self._derive(otype, record)
        self._remember(sobject, record_id, None)
        self.records[sobject][record_id] = record
        self._reindex(otype, None, record)
        return record_id

    def update(self, sobject: str, record_id: str, values: dict[str, Any]) -> None:
        otype = SOBJECTS[sobject]
        record = self._live_or_raise(sobject, record_id)
        fields = self.validate(otype, values, creating=False, record_id=record["Id"])
        self._remember(sobject, record["Id"], record)
        before = copy.copy(record)
        record.update(fields)
        self._derive(otype, record)
        record["LastModifiedDate"] = record["SystemModstamp"] = self.clock.now()
        self._reindex(otype, before, record)

    def upsert(self, sobject: str, ext_field: str, ext_value: Any, values: dict[str, Any]) -> tuple[str, bool]:
        """(record id, created?) after matching `ext_field` = `ext_value` among live records."""
        otype = SOBJECTS[sobject]
        existing = self.find(sobject, ext_field, ext_value) if ext_value not in (None, "") else None
        if existing is not None:
            self.update(sobject, existing["Id"], values)
            return existing["Id"], False
        if ext_field == "Id" and ext_value not in (None, ""):
            raise RecordError("NOT_FOUND", f"Provided Id does not match a live {sobject} record: {ext_value}")
        data = dict(values)
        if ext_field != "Id":
            data[otype.fields[ext_field].name] = ext_value
        return self.insert(sobject, data), True

    def delete(self, sobject: str, record_id: str) -> None:
        record = self._live_or_raise(sobject, record_id)
        self._remember(sobject, record["Id"], record)
        before = copy.copy(record)
        record["IsDeleted"] = True
        record["SystemModstamp"] = self.clock.now()
        self._reindex(SOBJECTS[sobject], before, record)

    def edit_as_user(self, sobject: str, record_id: str, values: dict[str, Any]) -> Record:
        """A Salesforce user's edit in the UI: the same validation and timestamps as an API update."""
        self.update(sobject, record_id, values)
        return copy.deepcopy(self.records[sobject][normalize_id(record_id) or record_id])

    # ------------------------------------------------------------ all-or-none

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """Collect an undo log so `rollback()` can restore every record touched inside."""
        outer = self._undo
        self._undo = []
        try:
            yield
        finally:
            self._undo = outer

    def rollback(self) -> None:
        if self._undo is None:
            return
        for sobject, record_id, before in reversed(self._undo):
            otype = SOBJECTS[sobject]
            current = self.records[sobject].get(record_id)
            if before is None:
                self.records[sobject].pop(record_id, None)
            else:
                self.records[sobject][record_id] = before
            self._reindex(otype, current, before)
        self._undo.clear()

    # ------------------------------------------------------------ validation

    def validate(
        self, otype: SObjectType, values: dict[str, Any], *, creating: bool, record_id: str | None = None
    ) -> dict[str, Any]:
        """The stored form of `values` (canonical field names); raises RecordError like the API."""
        out: dict[str, Any] = {}
        clashes: list[tuple[str, str]] = []
        for name, raw in values.items():
            if name == "attributes":
                continue
            f = otype.field(name)
            if f is None:
                raise RecordError("INVALID_FIELD", f"No such column '{name}' on sobject of type {otype.name}", [name])
            if not (f.createable if creating else f.updateable):
                raise RecordError(
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    f"Unable to create/update fields: {f.name}. Please check the security settings of this field "
                    "and verify that it is read/write for your profile or permission set.",
                    [f.name],
                )
            value = coerce(otype, f, raw)
            if value is None and f.type == "boolean":
                value = False
            if f.reference_to is not None and value is not None:
                target = self.records[f.reference_to].get(value)
                if target is None:
                    raise RecordError("INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {raw}", [f.name])
                if target["IsDeleted"]:
                    raise RecordError("ENTITY_IS_DELETED", f"entity is deleted: {raw}", [f.name])
            if f.unique and value is not None:
                holder = self._index.get((otype.name, f.name), {}).get(str(value))
                if holder is not None and holder != record_id:
                    clashes.append((f.name, holder))
            out[f.name] = value
        missing = [
            f.name
            for f in otype.fields.values()
            if f.required and (out.get(f.name) is None if (creating or f.name in out) else False)
        ]
        if missing:
            raise RecordError("REQUIRED_FIELD_MISSING", f"Required fields are missing: [{', '.join(missing)}]", missing)
        for name, holder in clashes:
            raise RecordError(
                "DUPLICATE_VALUE", f"duplicate value found: {name} duplicates value on record with id: {holder}", [name]
            )
        return out

    # ------------------------------------------------------------ internals

    def _live_or_raise(self, sobject: str, record_id: str) -> Record:
        full = normalize_id(record_id)
        if full is None:
            raise RecordError("MALFORMED_ID", f"malformed id {record_id}")
        if PREFIXES.get(full[:3]) != sobject:
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {record_id}")
        record = self.records[sobject].get(full)
        if record is None:
            raise RecordError("INVALID_CROSS_REFERENCE_KEY", f"invalid cross reference id: {record_id}")
        if record["IsDeleted"]:
            raise RecordError("ENTITY_IS_DELETED", "entity is deleted")
        return record

    def _remember(self, sobject: str, record_id: str, before: Record | None) -> None:
        if self._undo is not None:
            self._undo.append((sobject, record_id, copy.deepcopy(before) if before is not None else None))

    def _reindex(self, otype: SObjectType, before: Record | None, after: Record | None) -> None:
        for f in otype.fields.values():
            if not f.unique:
                continue
            index = self._index.setdefault((otype.name, f.name), {})
            old = before.get(f.name) if before is not None and not before["IsDeleted"] else None
            if old is not None and before is not None and index.get(str(old)) == before["Id"]:
                del index[str(old)]
            if after is not None and not after["IsDeleted"] and after.get(f.name) is not None:
                index[str(after[f.name])] = after["Id"]

    @staticmethod
    def _derive(otype: SObjectType, record: Record) -> None:
        if otype.name == "Contact":
            record["Name"] = " ".join(p for p in (record.get("FirstName"), record.get("LastName")) if p)
