"""Record storage for the HubSpot sandbox: records, the value index, links, the clock and webhook events.

``RecordStore`` is the base every endpoint mixin builds on: it validates property values as
"Properties" describes ("Property values were not valid"), enforces unique values, keeps each
property's history, renders records as the objects API returns them, and queues the webhook events
a write causes (Webhooks API, "Webhook payloads").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from replicator.sandbox.core import Sandbox

from . import schema
from .errors import HubSpotError
from .schema import OBJECT_TYPES, InvalidValue, iso_ms
from .webhooks import WebhookSender


@dataclass
class Record:
    id: str
    properties: dict[str, str]
    created_ms: int
    updated_ms: int
    archived: bool = False
    archived_ms: int | None = None
    history: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


class RecordStore(Sandbox):
    """The sandbox's state; ``HubSpotSandbox.__init__`` sets every attribute declared here."""

    portal_id: int
    app_id: int
    _frozen_ms: int | None
    _properties: dict[str, dict[str, dict[str, Any]]]
    _records: dict[str, dict[str, Record]]
    # (object, property, lower-cased value) -> record ids: unique-value checks and lookups by
    # an id property in O(1), so a sandbox holding thousands of records answers as fast as a small one.
    _by_value: dict[tuple[str, str, str], set[str]]
    _links: dict[tuple[str, str], set[tuple[str, str]]]
    _next_id: int
    _next_event: int
    _sender: WebhookSender | None

    # ------------------------------------------------------------ clock

    def now_ms(self) -> int:
        with self.lock:
            return self._frozen_ms if self._frozen_ms is not None else int(time.time() * 1000)

    def freeze_clock(self, ms: int | None) -> None:
        """Every write until unfrozen (None) gets modification time ``ms``: many records share one timestamp."""
        with self.lock:
            self._frozen_ms = ms

    def advance_clock(self, ms: int) -> int:
        """Move a frozen clock forward (freezing it at now first if it runs); returns the new time."""
        with self.lock:
            self._frozen_ms = self.now_ms() + ms
            return self._frozen_ms

    # ------------------------------------------------------------ object types

    def _object(self, raw: str) -> str:
        obj = schema.object_name(raw)
        if obj is None:
            raise HubSpotError(f"Unable to infer object type from: {raw}", 400, "VALIDATION_ERROR")
        return obj

    # ------------------------------------------------------------ links

    def _link(self, a_obj: str, a_id: str, b_obj: str, b_id: str) -> None:
        self._links.setdefault((a_obj, a_id), set()).add((b_obj, b_id))
        self._links.setdefault((b_obj, b_id), set()).add((a_obj, a_id))

    # ------------------------------------------------------------ validation and writes

    def _kind(self, obj: str) -> Any:
        defs = self._properties[obj]
        return lambda name: defs[name]["type"] if name in defs else "string"

    def _validated(self, obj: str, values: Any, *, allow_read_only: bool = False) -> dict[str, str]:
        """Normalized values, or the VALIDATION_ERROR HubSpot gives ("Property values were not valid")."""
        if not isinstance(values, dict):
            raise HubSpotError("Invalid input JSON: 'properties' must be an object of property name to value")
        defs = self._properties[obj]
        out: dict[str, str] = {}
        problems: list[tuple[str, str, str]] = []  # (name, code, message)
        for name, raw in values.items():
            definition = defs.get(name)
            if definition is None:
                problems.append((name, "PROPERTY_DOESNT_EXIST", f'Property "{name}" does not exist'))
                continue
            if name in schema.READ_ONLY and not allow_read_only:
                problems.append(
                    (name, "READ_ONLY_VALUE", f'"{name}" is a read only property; its value cannot be set.')
                )
                continue
            try:
                out[name] = schema.normalize(definition, "" if raw is None else raw)
            except InvalidValue as exc:
                problems.append((name, exc.code, exc.message))
        if problems:
            raise self._property_error(problems)
        return out

    def _property_error(self, problems: list[tuple[str, str, str]]) -> HubSpotError:
        detail = [
            {
                "isValid": False,
                "message": message,
                "error": code,
                "name": name,
                "localizedErrorMessage": message,
                "portalId": self.portal_id,
            }
            for name, code, message in problems
        ]
        return HubSpotError(
            f"Property values were not valid: {orjson.dumps(detail).decode()}",
            errors=[
                {"message": message, "code": code, "context": {"propertyName": [name]}}
                for name, code, message in problems
            ],
        )

    def _unique_names(self, obj: str) -> set[str]:
        defs = self._properties[obj]
        builtin = schema.BUILTIN_ID_PROPERTIES.get(obj, frozenset({"hs_object_id"}))
        return {n for n, d in defs.items() if d["hasUniqueValue"]} | (builtin - {"hs_object_id"})

    def _conflict(self, obj: str, values: dict[str, str], own_id: str | None) -> HubSpotError | None:
        """A unique-value clash with another live record (contacts: email, case-insensitive)."""
        for name in self._unique_names(obj) & set(values):
            wanted = values[name].lower()
            if not wanted:
                continue
            for rec in self._holding(obj, name, wanted):
                if rec.id != own_id and not rec.archived:
                    singular = OBJECT_TYPES[obj][1].replace("_", " ").capitalize()
                    return HubSpotError(
                        f"{singular} already exists. Existing ID: {rec.id}",
                        409,
                        "CONFLICT",
                        context={"id": [rec.id], "propertyName": [name]},
                    )
        return None

    def _find(self, obj: str, key: str, id_property: str | None, *, archived: bool = False) -> Record | None:
        records = self._records[obj]
        if not id_property or id_property == "hs_object_id":
            rec = records.get(str(key))
            return rec if rec is not None and rec.archived == archived else None
        for rec in self._holding(obj, id_property, str(key)):
            if rec.archived == archived:
                return rec
        return None

    def _check_id_property(self, obj: str, id_property: str | None) -> None:
        if not id_property or id_property == "hs_object_id":
            return
        if id_property not in self._properties[obj]:
            raise HubSpotError(f'Property "{id_property}" does not exist', 400, "VALIDATION_ERROR")
        if id_property not in self._unique_names(obj):
            raise HubSpotError(
                f"{id_property} is not a unique identifier property for {OBJECT_TYPES[obj][1]}: use hs_object_id or "
                "a property created with hasUniqueValue=true",
                400,
                "VALIDATION_ERROR",
            )

    def _create(self, obj: str, values: dict[str, str], source: str, now: int) -> Record:
        record_id = str(self._next_id)
        self._next_id += 1
        rec = Record(id=record_id, properties={}, created_ms=now, updated_ms=now)
        self._records[obj][record_id] = rec
        system = {"hs_object_id": record_id, "createdate": iso_ms(now)}
        for name, value in system.items():
            self._set(obj, rec, name, value)
            rec.history[name] = [{"value": value, "timestamp": iso_ms(now), "sourceType": source}]
        self._emit(obj, rec, "creation", None, source, now)
        self._write(obj, rec, values, source=source, now=now)
        return rec

    def _write(self, obj: str, rec: Record, values: dict[str, str], *, source: str, now: int) -> None:
        """Apply property values; every write bumps the modification time, as HubSpot's does."""
        changed: dict[str, str] = {}
        for name, value in values.items():
            if rec.properties.get(name, "") == value:
                continue
            self._set(obj, rec, name, value)
            changed[name] = value
            rec.history.setdefault(name, []).insert(0, {"value": value, "timestamp": iso_ms(now), "sourceType": source})
        rec.updated_ms = now
        rec.properties["hs_lastmodifieddate"] = iso_ms(now)
        modified = schema.MODIFIED_PROPERTY.get(obj)
        if modified:
            rec.properties[modified] = iso_ms(now)
        for name, value in changed.items():
            if name not in schema.SYSTEM:
                self._emit(obj, rec, "propertyChange", (name, value), source, now)

    def _set(self, obj: str, rec: Record, name: str, value: str) -> None:
        """Set (or, with "", remove) a property, keeping the value index current."""
        old = rec.properties.get(name)
        if old is not None:
            self._by_value.get((obj, name, old.lower()), set()).discard(rec.id)
        if value == "":
            rec.properties.pop(name, None)
            return
        rec.properties[name] = value
        self._by_value.setdefault((obj, name, value.lower()), set()).add(rec.id)

    def _holding(self, obj: str, name: str, value: str) -> list[Record]:
        """Records whose property `name` equals `value` (case-insensitively), lowest id first."""
        ids = self._by_value.get((obj, name, value.lower()), set())
        records = self._records[obj]
        return sorted((records[i] for i in ids if i in records), key=lambda r: int(r.id))

    def _archive(self, obj: str, rec: Record, now: int) -> None:
        rec.archived = True
        rec.archived_ms = now
        rec.updated_ms = now
        for other in self._links.pop((obj, rec.id), set()):
            self._links.get(other, set()).discard((obj, rec.id))
        self._emit(obj, rec, "deletion", None, "INTEGRATION", now)

    def _emit(self, obj: str, rec: Record, kind: str, change: tuple[str, str] | None, source: str, now: int) -> None:
        """Queue one webhook event (Webhooks API, "Webhook payloads")."""
        if self._sender is None:
            return
        singular = OBJECT_TYPES[obj][1]
        subscription_type = f"{singular}.{kind}"
        event: dict[str, Any] = {
            "eventId": self._next_event,
            "subscriptionId": self._subscription_id(subscription_type),
            "portalId": self.portal_id,
            "appId": self.app_id,
            "occurredAt": now,
            "subscriptionType": subscription_type,
            "attemptNumber": 0,
            "objectId": int(rec.id),
            "changeSource": source,
            "sourceId": f"userId:{self.portal_id}01" if source == "CRM_UI" else str(self.app_id),
        }
        if change is not None:
            event["propertyName"], event["propertyValue"] = change
        if kind in {"creation", "deletion"}:
            event["changeFlag"] = "CREATED" if kind == "creation" else "DELETED"
        self._next_event += 1
        self._sender.enqueue([event])

    @staticmethod
    def _subscription_id(subscription_type: str) -> int:
        return 100_000 + sum(ord(c) * (i + 1) for i, c in enumerate(subscription_type))

    # ------------------------------------------------------------ rendering

    def _render(
        self,
        obj: str,
        rec: Record,
        names: list[str] | None,
        *,
        with_history: list[str] | None = None,
        associations: list[str] | None = None,
    ) -> dict[str, Any]:
        """A record as the objects API returns it: requested (or default) properties, unset ones null."""
        defined = self._properties[obj]
        # Unknown names are left out, as HubSpot does; known but unset ones come back null.
        wanted = [n for n in names if n in defined] if names else list(schema.DEFAULT_PROPERTIES[obj])
        for always in ("hs_object_id", "createdate", "hs_lastmodifieddate", schema.MODIFIED_PROPERTY.get(obj)):
            if always is not None and always not in wanted:
                wanted.append(always)
        out: dict[str, Any] = {
            "id": rec.id,
            "properties": {name: rec.properties.get(name) for name in wanted},
            "createdAt": iso_ms(rec.created_ms),
            "updatedAt": iso_ms(rec.updated_ms),
            "archived": rec.archived,
        }
        if rec.archived and rec.archived_ms is not None:
            out["archivedAt"] = iso_ms(rec.archived_ms)
        if with_history:
            out["propertiesWithHistory"] = {name: list(rec.history.get(name, [])) for name in with_history}
        if associations:
            linked: dict[str, Any] = {}
            for raw in associations:
                other = schema.object_name(raw)
                if other is None:
                    continue
                ids = sorted(i for o, i in self._links.get((obj, rec.id), set()) if o == other)
                label = f"{OBJECT_TYPES[obj][1]}_to_{OBJECT_TYPES[other][1]}"
                if ids:
                    linked[other] = {"results": [{"id": i, "type": label} for i in ids]}
            if linked:
                out["associations"] = linked
        return out

    def _full(self, obj: str, rec: Record) -> dict[str, Any]:
        out = self._render(obj, rec, sorted(rec.properties))
        out["properties"] = dict(sorted(rec.properties.items()))
        out["associations"] = {}
        for other, other_id in sorted(self._links.get((obj, rec.id), set())):
            out["associations"].setdefault(other, []).append(other_id)
        return out

    # ------------------------------------------------------------ inline associations on create

    def _input_associations(self, obj: str, associations: Any) -> list[tuple[str, str]]:
        """Associations given inline on create: ``[{to: {id}, types: [{associationTypeId}]}]``."""
        by_type = {type_id: pair for pair, type_id in schema.DEFAULT_ASSOCIATION_TYPES.items()}
        links: list[tuple[str, str]] = []
        for entry in associations if isinstance(associations, list) else []:
            to_id = str((entry.get("to") or {}).get("id", ""))
            for spec in entry.get("types") or []:
                pair = by_type.get(spec.get("associationTypeId"))
                if pair is None or pair[0] != obj:
                    raise HubSpotError(
                        f"associationTypeId {spec.get('associationTypeId')} is not a default association from {obj}"
                    )
                if self._find(pair[1], to_id, None) is None:
                    raise HubSpotError(
                        f"No {OBJECT_TYPES[pair[1]][1]} with ID {to_id} to associate with", 400, "VALIDATION_ERROR"
                    )
                links.append((pair[1], to_id))
        return links
