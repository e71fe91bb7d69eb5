"""From changes to target operations.

A change of a mapped table targets its own record; a change of a related table
(a contact mechanism, an address) targets the records it belongs to, which are
then re-read from the ERP. Records are planned rank by rank so a child's lookup
sees the CRM id its parent got earlier in the same batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

import orjson

from replicator.change import Change, Op, Row
from replicator.mapping.entity import Entity
from replicator.mapping.reader import Key, RowReader
from replicator.sinks.base import Action, Operation


@dataclass(slots=True)
class Target:
    """A record to (re)compute, and the latest change that asked for it."""

    entity: Entity
    key: Key
    change: Change
    row: Row | None  # the full current row when the change carried it
    deleted: bool = False


class Skip(StrEnum):
    FILTERED = "filtered"  # not in the synced set and never was
    IGNORED = "ignored"  # on_delete: ignore
    GONE = "gone"  # re-read found no row: its own delete event handles it
    UNCHANGED = "unchanged"  # same payload as last acknowledged
    ECHO = "echo"  # same payload as our own last write into the ERP: that write coming back


@dataclass(slots=True)
class Planned:
    target: Target
    op: Operation | None = None
    skip: Skip | None = None
    error: str | None = None  # a planning failure: dead-letter it


def jsonable(value: Any) -> Any:
    """CRM payload values: exact decimals as strings, instants in UTC ISO-8601."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            value = value.astimezone(UTC)
        return value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (bytes, memoryview)):
        return bytes(value).hex()
    return str(value)


def payload_hash(action: Action, record: Mapping[str, Any]) -> str:
    # `action` is a str enum: serialised as its value, like the hashes already stored.
    body = orjson.dumps({"a": action, "r": record}, option=orjson.OPT_SORT_KEYS)
    return hashlib.sha256(body).hexdigest()


def no_hashes(entity: str, keys: Iterable[str]) -> dict[str, tuple[str | None, str]]:
    """A last_hashes answer that knows nothing: every record is planned as if never sent."""
    return {}


class Planner:
    def __init__(self, entities: Mapping[str, Entity]) -> None:
        self.entities = dict(entities)
        self._by_table: dict[str, list[Entity]] = {}
        # related table -> [(entity, alias)]
        self._by_related: dict[str, list[tuple[Entity, str]]] = {}
        for entity in self.entities.values():
            self._by_table.setdefault(entity.table, []).append(entity)
            for alias, rel in entity.related.items():
                self._by_related.setdefault(rel.table, []).append((entity, alias))

    @property
    def tables(self) -> set[str]:
        return set(self._by_table) | set(self._by_related)

    def ranks(self) -> list[int]:
        return sorted({e.rank for e in self.entities.values()})

    # -- routing -----------------------------------------------------------
    def targets(self, changes: Iterable[Change], reader: RowReader) -> list[Target]:
        """One target per record, in first-seen order, carrying the latest change."""
        found: dict[tuple[str, Key], Target] = {}
        # (entity, related alias) -> join value -> the first change that touched it
        related: dict[tuple[str, str], dict[Key, Change]] = {}

        def want(entity: Entity, key: Key, change: Change, row: Row | None, deleted: bool) -> None:
            slot = (entity.name, key)
            current = found.get(slot)
            if current is None:
                found[slot] = Target(entity, key, change, row, deleted)
            else:
                current.change, current.row, current.deleted = change, row, deleted

        for change in changes:
            if change.op is Op.TRUNCATE:
                continue  # reported by the pipeline, never turned into mass deletes
            for entity in self._by_table.get(change.table, ()):
                row = change.row or {}
                key = entity.key_of(row) if row else change.key
                if change.op is Op.DELETE:
                    want(entity, key, change, None, True)
                else:
                    # An unchanged TOAST value the record needs forces a re-read.
                    complete = not (change.unchanged & entity.needed)
                    want(entity, key, change, change.after if complete else None, False)
            for entity, alias in self._by_related.get(change.table, ()):
                images = [img for img in (change.before, change.after) if img]
                for value in entity.related[alias].join_values(images):
                    if None not in value:
                        # A related row can point at a parent before and after its update: both re-sync.
                        related.setdefault((entity.name, alias), {}).setdefault(value, change)
        # One query per (entity, related table) for the whole batch, not one per change.
        for (name, alias), by_value in related.items():
            entity = self.entities[name]
            rel = entity.related[alias]
            for value, key in reader.base_keys_by_join(entity.table, entity.key, rel, list(by_value)):
                current = found.get((name, key))
                if current is not None and (current.deleted or current.row is None):
                    continue  # a delete stands; a pending re-read already sees the related change
                want(entity, key, by_value[value], None, False)
        return list(found.values())

    # -- planning ----------------------------------------------------------
    def plan(
        self,
        targets: list[Target],
        reader: RowReader,
        crm_ids: Callable[[str, Iterable[str]], dict[str, str]],
        last_hashes: Callable[[str, Iterable[str]], dict[str, tuple[str | None, str]]],
    ) -> list[Planned]:
        """Plan targets of one entity rank. Parents must already be in the id map."""
        out: list[Planned] = []
        by_entity: dict[str, list[Target]] = {}
        for t in targets:
            by_entity.setdefault(t.entity.name, []).append(t)
        for name, group in by_entity.items():
            entity = self.entities[name]
            self._load_rows(entity, group, reader)
            related = self._load_related(entity, group, reader)
            ext_ids = [entity.external_id_of(t.key) for t in group]
            known = crm_ids(name, ext_ids)
            hashes = last_hashes(name, ext_ids)
            parents = self._parent_ids(entity, group, crm_ids)
            for t, ext_id in zip(group, ext_ids, strict=True):
                out.append(self._plan_one(entity, t, ext_id, known.get(ext_id), hashes.get(ext_id), related, parents))
        return out

    def _load_rows(self, entity: Entity, group: list[Target], reader: RowReader) -> None:
        missing = [t for t in group if t.row is None and not t.deleted]
        if not missing:
            return
        rows = reader.rows_by_key(entity.table, entity.key, [t.key for t in missing], types=entity.key_types)
        for t in missing:
            t.row = rows.get(t.key)

    def _load_related(self, entity: Entity, group: list[Target], reader: RowReader) -> dict[str, dict[Key, Row]]:
        rows = [t.row for t in group if t.row is not None]
        return {alias: reader.related_rows(rel, rows) for alias, rel in entity.related.items()}

    def _parent_ids(
        self, entity: Entity, group: list[Target], crm_ids: Callable[[str, Iterable[str]], dict[str, str]]
    ) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for field_name, lookup in entity.lookups.items():
            parent = self.entities[lookup.entity]
            ext = {
                parent.external_id_of(k)
                for t in group
                if t.row is not None
                for k in [tuple(t.row.get(c) for c in lookup.key)]
                if None not in k
            }
            out[field_name] = crm_ids(parent.name, ext)
        return out

    def missing_parents(
        self, targets: list[Target], crm_ids: Callable[[str, Iterable[str]], dict[str, str]], reader: RowReader
    ) -> list[Target]:
        """Parents that children in `targets` point at but that are neither in the
        id map nor among the targets: they are synced first, in the same batch."""
        if not targets:
            return []
        present = {(t.entity.name, t.key) for t in targets}
        # Parents ride on the batch's position: they are acknowledged with it.
        position = targets[0].change.position
        extra: list[Target] = []
        frontier = targets
        while frontier:
            wanted: dict[str, set[Key]] = {}
            unread: dict[str, list[Target]] = {}
            for t in frontier:
                if t.row is None and not t.deleted and t.entity.lookups:
                    unread.setdefault(t.entity.name, []).append(t)
            for group in unread.values():
                self._load_rows(group[0].entity, group, reader)  # one query per entity, not per row
            for t in frontier:
                if t.deleted or t.row is None:
                    continue
                for lookup in t.entity.lookups.values():
                    key = tuple(t.row.get(c) for c in lookup.key)
                    if None not in key and (lookup.entity, key) not in present:
                        wanted.setdefault(lookup.entity, set()).add(key)
            frontier = []
            for name, keys in wanted.items():
                parent = self.entities[name]
                by_ext = {parent.external_id_of(k): k for k in keys}
                known = crm_ids(name, by_ext)
                for ext, key in by_ext.items():
                    if ext in known:
                        continue
                    synthetic = Change(
                        source="parent",
                        table=parent.table,
                        op=Op.READ,
                        key=key,
                        before=None,
                        after=None,
                        position=position,
                    )
                    t = Target(parent, key, synthetic, None)
                    present.add((name, key))
                    extra.append(t)
                    frontier.append(t)
        return extra

    def _plan_one(
        self,
        entity: Entity,
        t: Target,
        ext_id: str,
        crm_id: str | None,
        last: tuple[str | None, str] | None,
        related: dict[str, dict[Key, Row]],
        parents: dict[str, dict[str, str]],
    ) -> Planned:
        if t.deleted:
            return self._plan_removal(entity, t, ext_id, crm_id, known=crm_id is not None or last is not None)
        row = t.row
        if row is None:
            return Planned(t, skip=Skip.GONE)
        ctx: dict[str | None, Any] = {None: row}
        for alias, rel in entity.related.items():
            join = tuple(row.get(c) for c in rel.join.values())
            ctx[alias] = related[alias].get(join)
        try:
            if entity.filter is not None and not entity.filter(ctx):
                # Leaving the synced set is a removal; never having been in it is nothing.
                if crm_id is not None:
                    return self._plan_removal(entity, t, ext_id, crm_id, known=True)
                return Planned(t, skip=Skip.FILTERED)
            record = _record(entity, ctx)
        except Exception as exc:  # an expression failing on this row's data
            return Planned(t, error=f"mapping failed for {entity.name} {ext_id}: {exc}")
        for field_name, lookup in entity.lookups.items():
            pkey = tuple(row.get(c) for c in lookup.key)
            if None in pkey:
                record[field_name] = None
                continue
            parent = self.entities[lookup.entity]
            pext = parent.external_id_of(pkey)
            pid = parents[field_name].get(pext)
            if pid is None:
                if lookup.required:
                    return Planned(
                        t,
                        error=f"{lookup.entity} {pext} (lookup {entity.name}.{field_name}) has no CRM record: "
                        f"it is filtered out or failed; fix it, then `replicator dlq replay`",
                    )
                record[field_name] = None
            else:
                record[field_name] = pid
        action = Action.UPSERT
        if entity.soft_delete is not None and entity.soft_delete(ctx):
            action = Action.ARCHIVE
        op = make_operation(entity, ext_id, action, record, crm_id)
        # A failed record is re-sent even when its payload matches the last success: the
        # success clears its sync_state error and closes its dead letter.
        if crm_id is not None and last is not None and last[0] == op.payload_hash and last[1] != "failed":
            return Planned(t, skip=Skip.ECHO if last[1] == "written" else Skip.UNCHANGED)
        return Planned(t, op=op)

    def _plan_removal(self, entity: Entity, t: Target, ext_id: str, crm_id: str | None, known: bool) -> Planned:
        if entity.on_delete == "ignore":
            return Planned(t, skip=Skip.IGNORED)
        if not known:
            return Planned(t, skip=Skip.FILTERED)
        action = Action.DELETE if entity.on_delete == "delete" else Action.ARCHIVE
        return Planned(t, op=make_operation(entity, ext_id, action, {}, crm_id))


_PLAIN = frozenset({str, int, float, bool, type(None)})


def _record(entity: Entity, ctx: dict[str | None, Any]) -> dict[str, Any]:
    """The CRM record. The hot path calls the compiled closures directly; when one fails,
    the fields are evaluated again through their Expr, whose error names the field and SQL."""
    record: dict[str, Any] = {}
    try:
        for name, expr in entity.fields.items():
            value = expr.fn(ctx)
            record[name] = value if type(value) in _PLAIN else jsonable(value)
    except Exception:
        return {name: jsonable(expr(ctx)) for name, expr in entity.fields.items()}
    return record


def make_operation(
    entity: Entity, ext_id: str, action: Action, record: dict[str, Any], crm_id: str | None
) -> Operation:
    """The idempotency key names the intended effect: same record, action and payload, same key."""
    digest = payload_hash(action, record)
    return Operation(
        entity=entity.name,
        object=entity.object,
        action=action,
        external_id=ext_id,
        record=record,
        crm_id=crm_id,
        idempotency_key=f"{entity.name}:{ext_id}:{action}:{digest[:24]}",
        payload_hash=digest,
    )
