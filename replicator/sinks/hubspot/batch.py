"""HubSpot's batch object endpoints, with every answer matched back to its input.

Follows the CRM object API reference (developers.hubspot.com/docs/api-reference/crm-objects,
"Create or update a batch of objects by unique property values", "Retrieve a batch of
objects", "Archive a batch of objects"): at most 100 inputs per call; a fully successful
batch answers 200/201 with ``results``; a partly failed one answers 207 Multi-Status with
``results``, ``errors`` (each with ``category``, ``message`` and a ``context`` naming the
inputs it is about) and ``numErrors``. Per-input errors are asked for by giving each input
a unique ``objectWriteTraceId`` (the error handling page, "Multi-status errors"); we use
the external id. Results are not promised in input order, so they are matched by trace id
or the unique id property's value, never by position; an input no result or error names
is answered TRANSIENT (sending an upsert again is safe).

Only an error's ``context`` names the inputs it fails. Its message is prose: "10.5 is not
a valid integer" mentions ids 1, 5 and 10 without being about them, so ids a message
merely mentions are only sent alone, where HubSpot's answer is theirs for sure.

A 400/409/422 for a whole batch usually names a property, not a record. Such a batch is
bisected until the failing inputs stand alone, so one bad record does not fail 99 good
ones; a batch of 100 with one bad record costs about 14 calls instead of 100.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from replicator.sinks.base import CrmError, Outcome, Result
from replicator.sinks.hubspot.client import BATCH_LIMIT, HubSpotClient, classify

# Error categories worth retrying; every other per-record category is the record's own fault.
TRANSIENT_CATEGORIES = frozenset({"RATE_LIMITS", "INTERNAL_ERROR", "SERVICE_UNAVAILABLE", "TIMEOUT", "LOCKED"})
_WHOLE_BATCH_REJECTED = frozenset({400, 409, 422})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class UpsertInput:
    external_id: str
    properties: dict[str, Any]


def chunks(items: Sequence[T], size: int = BATCH_LIMIT) -> list[list[T]]:
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def named_ids(error: dict[str, Any], candidates: set[str]) -> set[str]:
    """The candidate ids an error's ``context`` names: the only naming trusted to fail them."""
    found: set[str] = set()
    context = error.get("context")
    if isinstance(context, dict):
        for value in context.values():
            for item in value if isinstance(value, list) else [value]:
                if str(item) in candidates:
                    found.add(str(item))
    return found


def mentioned_ids(error: dict[str, Any], candidates: set[str]) -> set[str]:
    """The candidate ids an error's message contains: suspects to send alone, never to fail."""
    message = str(error.get("message", ""))
    return {c for c in candidates if c and c in message}


def error_result(error: dict[str, Any], what: str, status_code: int | None) -> Result:
    category = str(error.get("category") or error.get("status") or "ERROR")
    message = str(error.get("message") or error)
    outcome = Outcome.TRANSIENT if category in TRANSIENT_CATEGORIES else Outcome.PERMANENT
    return Result(outcome, error=f"{what}: {category}: {message}", status_code=status_code)


def _errors(data: Any) -> list[dict[str, Any]]:
    errors = data.get("errors") if isinstance(data, dict) else None
    return [e for e in errors if isinstance(e, dict)] if isinstance(errors, list) else []


def _results(data: Any) -> list[dict[str, Any]]:
    results = data.get("results") if isinstance(data, dict) else None
    return [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []


@dataclass(frozen=True, slots=True)
class Rejected:
    """A whole batch refused: ``result`` answers a lone input; ``named`` are the inputs the error's
    context names, ``suspects`` those its message merely mentions."""

    result: Result
    named: frozenset[str] = frozenset()
    suspects: frozenset[str] = frozenset()


def isolate(ids: list[str], send: Callable[[list[str]], dict[str, Result] | Rejected]) -> dict[str, Result]:
    """Answers for ``ids`` from ``send``. A rejection that names some inputs fails those and
    sends the rest again; one whose message mentions some sends those apart from the rest;
    any other is bisected until each rejected input stands alone."""
    answer = send(ids)
    if not isinstance(answer, Rejected):
        return answer
    if len(ids) == 1:
        return {ids[0]: answer.result}
    named = answer.named & set(ids)
    if named and named != set(ids):
        return dict.fromkeys(named, answer.result) | isolate([i for i in ids if i not in named], send)
    suspects = answer.suspects & set(ids)
    if suspects and suspects != set(ids):
        return isolate([i for i in ids if i in suspects], send) | isolate([i for i in ids if i not in suspects], send)
    middle = len(ids) // 2
    return isolate(ids[:middle], send) | isolate(ids[middle:], send)


def rejection(resp: httpx.Response, ids: list[str], what: str) -> Rejected:
    try:
        data: Any = resp.json()
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    return Rejected(
        classify(resp, f"{what} {ids[0]}" if len(ids) == 1 else what),
        frozenset(named_ids(data, set(ids))),
        frozenset(mentioned_ids(data, set(ids))),
    )


class BatchUpsert:
    """One object type's batch upsert by the unique id property."""

    def __init__(self, client: HubSpotClient, object_type: str, id_property: str) -> None:
        self.client = client
        self.object_type = object_type
        self.id_property = id_property
        self.path = f"/crm/v3/objects/{object_type}/batch/upsert"

    def run(self, inputs: list[UpsertInput]) -> dict[str, Result]:
        """external id -> Result, exactly one per input (at most BATCH_LIMIT inputs)."""
        by_id = {i.external_id: i for i in inputs}
        return isolate(list(by_id), lambda ids: self._send([by_id[i] for i in ids]))

    def _send(self, inputs: list[UpsertInput]) -> dict[str, Result] | Rejected:
        what = f"upsert {self.object_type}"
        ids = [i.external_id for i in inputs]
        # A unique objectWriteTraceId per input asks for per-input errors (207) instead of one
        # error refusing the whole batch ("Error handling", "Multi-status errors").
        body = {
            "inputs": [
                {
                    "id": i.external_id,
                    "idProperty": self.id_property,
                    "properties": i.properties,
                    "objectWriteTraceId": i.external_id,
                }
                for i in inputs
            ]
        }
        try:
            resp = self.client.request("POST", self.object_type, self.path, body=body)
        except CrmError as exc:
            return dict.fromkeys(ids, exc.result)
        if resp.status_code in _WHOLE_BATCH_REJECTED:
            return rejection(resp, ids, what)
        if resp.status_code not in (200, 201, 207):
            return dict.fromkeys(ids, classify(resp, f"{what} ({len(ids)} records, first {ids[0]})"))
        try:
            data = resp.json()
        except ValueError:
            return dict.fromkeys(ids, Result(Outcome.TRANSIENT, error=f"{what}: non-JSON answer: {resp.text[:300]}"))
        answers, unsure = self._match(data, ids, resp.status_code, what)
        # An error naming no input may be about any unanswered one: send each alone to learn whose it is.
        by_id = {i.external_id: i for i in inputs}
        for ext in unsure:
            answers |= isolate([ext], lambda one: self._send([by_id[i] for i in one]))
        return answers

    def _ok(self, result: dict[str, Any], status: int) -> Result:
        return Result(Outcome.OK, crm_id=str(result["id"]), created=bool(result.get("new")), status_code=status)

    def _match(self, data: Any, ids: list[str], status: int, what: str) -> tuple[dict[str, Result], list[str]]:
        """Answers matched to their inputs, and the inputs an error may be about without naming them."""
        wanted = set(ids)
        answers: dict[str, Result] = {}
        results = [r for r in _results(data) if r.get("id") is not None]
        for result in results:
            ext = result.get("objectWriteTraceId") or (result.get("properties") or {}).get(self.id_property)
            if ext is not None and str(ext) in wanted:
                answers[str(ext)] = self._ok(result, status)
        errors = _errors(data)
        unnamed: list[dict[str, Any]] = []
        for error in errors:
            named = named_ids(error, wanted - answers.keys())
            for ext in named:
                answers[ext] = error_result(error, f"{what} {ext}", status)
            if not named:
                unnamed.append(error)
        pending = [ext for ext in ids if ext not in answers]
        if unnamed and len(pending) == 1:
            answers[pending[0]] = error_result(unnamed[0], f"{what} {pending[0]}", status)
        elif unnamed and len(ids) > 1:
            return answers, pending
        for ext in pending:
            if ext not in answers:
                # No result or error names it (a result without the id property cannot be told
                # apart by position). Upsert by a unique property is idempotent: sending it again is safe.
                answers[ext] = Result(
                    Outcome.TRANSIENT, error=f"{what} {ext}: HubSpot answered {status} without a result for it"
                )
        return answers, []


class BatchArchive:
    """One object type's batch archive by CRM id; an id already gone counts as archived."""

    def __init__(self, client: HubSpotClient, object_type: str) -> None:
        self.client = client
        self.object_type = object_type
        self.path = f"/crm/v3/objects/{object_type}/batch/archive"

    def run(self, crm_ids: list[str]) -> dict[str, Result]:
        return isolate(list(dict.fromkeys(crm_ids)), self._send)

    def _send(self, ids: list[str]) -> dict[str, Result] | Rejected:
        what = f"archive {self.object_type}"
        try:
            resp = self.client.request("POST", self.object_type, self.path, body={"inputs": [{"id": i} for i in ids]})
        except CrmError as exc:
            return dict.fromkeys(ids, exc.result)
        if resp.is_success or resp.status_code == 404:
            return {i: Result(Outcome.OK, crm_id=i, status_code=resp.status_code) for i in ids}
        if resp.status_code in _WHOLE_BATCH_REJECTED:
            return rejection(resp, ids, what)
        return dict.fromkeys(ids, classify(resp, f"{what} ({len(ids)} records, first {ids[0]})"))


def batch_read(
    client: HubSpotClient,
    object_type: str,
    ids: list[str],
    *,
    properties: list[str],
    id_property: str | None = None,
    archived: bool = False,
) -> list[dict[str, Any]]:
    """The records found among ``ids`` (CRM ids, or ``id_property`` values), raw as HubSpot
    answers them; ids not found are left out. Raises CrmError on any other failure."""
    found: list[dict[str, Any]] = []
    for part in chunks(list(dict.fromkeys(ids))):
        body: dict[str, Any] = {"inputs": [{"id": i} for i in part], "properties": properties}
        if id_property is not None:
            body["idProperty"] = id_property
        resp = client.request(
            "POST",
            object_type,
            f"/crm/v3/objects/{object_type}/batch/read",
            params={"archived": str(archived).lower()},
            body=body,
        )
        if resp.status_code == 404:
            continue  # none of them exists
        data = client.expect_json(resp, f"read {object_type} by {id_property or 'id'}")
        for error in _errors(data):
            if str(error.get("category")) != "OBJECT_NOT_FOUND":
                raise CrmError(error_result(error, f"read {object_type}", resp.status_code))
        found.extend(_results(data))
    return found
