"""Lookup fields as HubSpot associations: what to create, what to remove, and the v4 batch calls.

HubSpot keeps a record's parent as an association, not a property. Follows the
Associations v4 reference (developers.hubspot.com/docs/api-reference/crm-associations-v4):
``POST /crm/v4/associations/{from}/{to}/batch/associate/default`` creates the default
(unlabelled) association for pairs ``{from: {id}, to: {id}}``; ``.../batch/read`` answers,
per ``from`` id, every associated ``toObjectId``; ``.../batch/archive`` with
``{from: {id}, to: [{id}, ...]}`` removes all association types between those pairs.

The ERP owns the parent: after an update, associations of the same pair of object types
to any record other than the mapped parent are removed. A record the upsert just created
has none yet, so its associations are not read first (one call fewer per batch).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from replicator.sinks.base import CrmError, Outcome, Result
from replicator.sinks.hubspot.batch import (
    TRANSIENT_CATEGORIES,
    Rejected,
    chunks,
    error_result,
    isolate,
    named_ids,
    rejection,
)
from replicator.sinks.hubspot.client import OBJECT_TYPES, HubSpotClient, classify

# object -> {lookup field: parent object}; the field holds the parent's HubSpot id.
LOOKUPS: dict[str, dict[str, str]] = {
    "contact": {"account": "account"},
    "opportunity": {"account": "account"},
    "line_item": {"opportunity": "opportunity"},
}


@dataclass(frozen=True, slots=True)
class AssociationPlan:
    create: list[tuple[str, str]] = field(default_factory=list)  # (from id, to id)
    remove: list[tuple[str, list[str]]] = field(default_factory=list)  # (from id, stale to ids)


def plan_associations(desired: Mapping[str, str | None], current: Mapping[str, set[str]]) -> AssociationPlan:
    """What turns ``current`` (from id -> associated ids; absent: none) into ``desired``
    (from id -> the one parent id, or None for no parent)."""
    plan = AssociationPlan()
    for from_id, parent in desired.items():
        have = current.get(from_id, set())
        if parent is not None and parent not in have:
            plan.create.append((from_id, parent))
        stale = sorted(have - {parent} if parent is not None else have)
        if stale:
            plan.remove.append((from_id, stale))
    return plan


def parent_of(associated: set[str]) -> str | None:
    """The one parent a record shows: the lowest id, should users have added more."""
    return min(associated, key=lambda i: (len(i), i)) if associated else None


class Associations:
    """v4 batch calls between two object types, answered per ``from`` id."""

    def __init__(self, client: HubSpotClient, from_object: str, to_object: str) -> None:
        self.client = client
        self.from_type = OBJECT_TYPES[from_object]
        self.to_type = OBJECT_TYPES[to_object]
        self.base = f"/crm/v4/associations/{self.from_type}/{self.to_type}/batch"
        self.resource = f"association:{self.from_type}:{self.to_type}"

    def read(self, from_ids: list[str]) -> dict[str, set[str]]:
        """from id -> associated ids. Raises CrmError when HubSpot cannot answer."""
        current: dict[str, set[str]] = {}
        for part in chunks(from_ids):
            resp = self.client.request(
                "POST", self.resource, f"{self.base}/read", body={"inputs": [{"id": i} for i in part]}
            )
            data = self.client.expect_json(resp, f"read {self.from_type} -> {self.to_type} associations")
            for result in data.get("results") or []:
                from_id = str((result.get("from") or {}).get("id"))
                for to in result.get("to") or []:
                    current.setdefault(from_id, set()).add(
                        str(to.get("toObjectId") if "toObjectId" in to else to.get("id"))
                    )
            for error in data.get("errors") or []:
                # A record without associations is reported as an error; only real failures count.
                if str(error.get("category")) in TRANSIENT_CATEGORIES:
                    raise CrmError(error_result(error, f"read {self.from_type} associations", resp.status_code))
        return current

    def create(self, pairs: list[tuple[str, str]]) -> dict[str, Result]:
        """Failures only, per from id."""
        return self._run("associate/default", [(f, {"from": {"id": f}, "to": {"id": t}}, [t]) for f, t in pairs])

    def remove(self, pairs: list[tuple[str, list[str]]]) -> dict[str, Result]:
        """Failures only, per from id."""
        return self._run("archive", [(f, {"from": {"id": f}, "to": [{"id": t} for t in tos]}, tos) for f, tos in pairs])

    def _run(self, verb: str, items: list[tuple[str, dict[str, Any], list[str]]]) -> dict[str, Result]:
        by_from = {f: (body, tos) for f, body, tos in items}
        answers: dict[str, Result] = {}
        for part in chunks(list(by_from)):
            answers |= isolate(part, lambda ids: self._send(verb, [(i, *by_from[i]) for i in ids]))
        return {f: r for f, r in answers.items() if r.outcome is not Outcome.OK}

    def _send(self, verb: str, items: list[tuple[str, dict[str, Any], list[str]]]) -> dict[str, Result] | Rejected:
        ids = [f for f, _, _ in items]
        what = f"{'associate' if verb != 'archive' else 'remove stale'} {self.from_type} -> {self.to_type}"
        try:
            resp = self.client.request(
                "POST", self.resource, f"{self.base}/{verb}", body={"inputs": [b for _, b, _ in items]}
            )
        except CrmError as exc:
            return dict.fromkeys(ids, exc.result)
        if resp.status_code in (400, 404, 409, 422):
            # One bad parent id can refuse the whole call: isolate it.
            return rejection(resp, ids, what)
        if not resp.is_success:
            return dict.fromkeys(ids, classify(resp, f"{what} ({len(ids)} records, first {ids[0]})"))
        answers = {f: Result(Outcome.OK, crm_id=f, status_code=resp.status_code) for f in ids}
        if resp.status_code != 207:
            return answers
        data = resp.json()
        errors = [e for e in data.get("errors") or [] if isinstance(e, dict)]
        for error in errors:
            for f, _, tos in items:
                if named_ids(error, {f, *tos}):
                    answers[f] = error_result(error, f"{what} {f} -> {','.join(tos)}", 207)
        unnamed = [e for e in errors if not any(named_ids(e, {f, *tos}) for f, _, tos in items)]
        answered = {str((r.get("from") or {}).get("id")) for r in data.get("results") or []}
        for f in ids:
            if unnamed and f not in answered and answers[f].outcome is Outcome.OK:
                answers[f] = error_result(unnamed[0], f"{what} {f}", 207)
        return answers
