"""The objects v3 batch endpoints: upsert, create, update, read and archive.

Per-input refusals follow "Error handling", "Multi-status errors"; see ``_run_batch``.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from replicator.sandbox.core import Request, Response

from . import schema
from .errors import HubSpotError, batch_error
from .payloads import MAX_BATCH, MAX_BATCH_WITH_HISTORY, batch_answer, batch_inputs
from .records import RecordStore
from .schema import OBJECT_TYPES


class BatchAPI(RecordStore):
    """POST /crm/v3/objects/{objectType}/batch/{upsert,create,update,read,archive}."""

    @staticmethod
    def _duplicates(keys: list[str]) -> None:
        unique = sorted(key for key, n in Counter(keys).items() if n > 1)
        if unique:
            raise HubSpotError(
                f"Duplicate IDs found in batch input: [{', '.join(unique)}]. IDs must be unique",
                context={"ids": unique},
            )

    def _run_batch(self, obj: str, inputs: list[dict[str, Any]], plan: Any, success_status: int) -> Response:
        """Validate every input, then write; per-input refusals follow "Error handling", "Multi-status errors".

        Without an ``objectWriteTraceId`` on every input, one invalid input refuses the whole batch
        (nothing written), as HubSpot does; with them, each invalid input gets its own error and the
        others are written. Inputs naming a record that does not exist (OBJECT_NOT_FOUND) and injected
        partial failures always fail only their input.
        """
        started = int(time.time() * 1000)
        traced = bool(inputs) and all(isinstance(i.get("objectWriteTraceId"), str) for i in inputs)
        with self.lock:
            now = self.now_ms()
            planned: list[tuple[dict[str, Any], Any]] = []
            errors: list[dict[str, Any]] = []
            for item in inputs:
                try:
                    planned.append((item, plan(item, now, dry_run=True)))
                except HubSpotError as exc:
                    # A missing record is that input's problem; an invalid one refuses the batch.
                    if not traced and exc.category != "OBJECT_NOT_FOUND":
                        raise
                    errors.append(batch_error(exc.category, exc.message, self._context(item, exc)))
            results: list[dict[str, Any]] = []
            for item, _ in planned:
                if self.partial_failure():
                    errors.append(
                        batch_error(
                            "INTERNAL_ERROR",
                            "This input could not be processed because of an internal error; retry it.",
                            self._context(item, None),
                        )
                    )
                    continue
                try:
                    result = plan(item, now, dry_run=False)
                    if isinstance(item.get("objectWriteTraceId"), str):
                        result["objectWriteTraceId"] = item["objectWriteTraceId"]
                    results.append(result)
                except HubSpotError as exc:  # a clash with an input written earlier in this batch
                    errors.append(batch_error(exc.category, exc.message, self._context(item, exc)))
            return batch_answer(success_status, results, errors, started)

    @staticmethod
    def _context(item: dict[str, Any], exc: HubSpotError | None) -> dict[str, list[str]]:
        context: dict[str, list[str]] = dict(exc.context or {}) if exc is not None else {}
        if "id" in item and "ids" not in context:
            context["ids"] = [str(item["id"])]
        if isinstance(item.get("objectWriteTraceId"), str):
            context["objectWriteTraceId"] = [item["objectWriteTraceId"]]
        return context

    def batch_upsert(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/objects/{objectType}/batch/upsert ("Create or update a batch of objects by unique
        property values"): ``inputs[{id, idProperty, properties}]``, result entries carry ``new``."""
        obj = self._object(object_type)
        _, inputs = batch_inputs(req)
        for index, item in enumerate(inputs):
            if item.get("id") in (None, ""):
                raise HubSpotError(f"inputs[{index}].id is required: the value of the idProperty to match on")
        self._duplicates([str(i["id"]) for i in inputs])
        with self.lock:
            for item in inputs:
                self._check_id_property(obj, item.get("idProperty"))

        def plan(item: dict[str, Any], now: int, *, dry_run: bool) -> Any:
            id_property = item.get("idProperty") or "hs_object_id"
            key = str(item["id"])
            values = self._validated(obj, item.get("properties") or {})
            rec = self._find(obj, key, id_property)
            if rec is None and id_property == "hs_object_id":
                raise HubSpotError(
                    f"Could not find {OBJECT_TYPES[obj][1]} with hs_object_id {key}; upsert creates records only when "
                    "matching on a unique property",
                    404,
                    "OBJECT_NOT_FOUND",
                    context={"ids": [key]},
                )
            if rec is None:
                values = {**values, id_property: schema.normalize(self._properties[obj][id_property], key)}
            clash = self._conflict(obj, values, rec.id if rec else None)
            if clash is not None:
                raise clash
            if dry_run:
                return None
            new = rec is None
            if rec is None:
                rec = self._create(obj, values, "INTEGRATION", now)
            else:
                self._write(obj, rec, values, source="INTEGRATION", now=now)
            return {**self._render(obj, rec, list(values) or None), "new": new}

        return self._run_batch(obj, inputs, plan, 200)

    def batch_create(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/objects/{objectType}/batch/create ("Create a batch of objects"): 201."""
        obj = self._object(object_type)
        _, inputs = batch_inputs(req)

        def plan(item: dict[str, Any], now: int, *, dry_run: bool) -> Any:
            values = self._validated(obj, item.get("properties") or {})
            links = self._input_associations(obj, item.get("associations") or [])
            clash = self._conflict(obj, values, None)
            if clash is not None:
                raise clash
            if dry_run:
                return None
            rec = self._create(obj, values, "INTEGRATION", now)
            for other, other_id in links:
                self._link(obj, rec.id, other, other_id)
            return self._render(obj, rec, list(values) or None)

        return self._run_batch(obj, inputs, plan, 201)

    def batch_update(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/objects/{objectType}/batch/update ("Update a batch of objects by internal ID, or
        unique property values")."""
        obj = self._object(object_type)
        _, inputs = batch_inputs(req)
        self._duplicates([str(i.get("id")) for i in inputs])
        with self.lock:
            for item in inputs:
                self._check_id_property(obj, item.get("idProperty"))

        def plan(item: dict[str, Any], now: int, *, dry_run: bool) -> Any:
            key = str(item.get("id"))
            values = self._validated(obj, item.get("properties") or {})
            rec = self._find(obj, key, item.get("idProperty"))
            if rec is None:
                raise HubSpotError(
                    f"Could not get some {OBJECT_TYPES[obj][1].upper()} objects, they may be deleted or not exist. "
                    "Check that ids are valid.",
                    404,
                    "OBJECT_NOT_FOUND",
                    context={"ids": [key]},
                )
            clash = self._conflict(obj, values, rec.id)
            if clash is not None:
                raise clash
            if dry_run:
                return None
            self._write(obj, rec, values, source="INTEGRATION", now=now)
            return self._render(obj, rec, list(values) or None)

        return self._run_batch(obj, inputs, plan, 200)

    # ------------------------------------------------------------ batch read / archive

    def batch_read(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/objects/{objectType}/batch/read ("Read a batch of objects by internal ID, or unique
        property values"): unknown ids → 207 with one OBJECT_NOT_FOUND error listing them."""
        obj = self._object(object_type)
        body = req.json()
        history = body.get("propertiesWithHistory") if isinstance(body, dict) else None
        _, inputs = batch_inputs(req, MAX_BATCH_WITH_HISTORY if history else MAX_BATCH)
        if history and len(inputs) > MAX_BATCH_WITH_HISTORY:  # pragma: no cover - _inputs already refused it
            raise HubSpotError("too many inputs")
        id_property = body.get("idProperty")
        archived = req.arg("archived", "false") == "true"
        started = int(time.time() * 1000)
        with self.lock:
            self._check_id_property(obj, id_property)
            results: list[dict[str, Any]] = []
            missing: list[str] = []
            for item in inputs:
                key = str(item.get("id"))
                rec = self._find(obj, key, id_property, archived=archived)
                if rec is None:
                    missing.append(key)
                    continue
                results.append(
                    self._render(obj, rec, list(body.get("properties") or []) or None, with_history=history or None)
                )
            errors = []
            if missing:
                errors.append(
                    batch_error(
                        "OBJECT_NOT_FOUND",
                        f"Could not get some {OBJECT_TYPES[obj][1].upper()} objects, they may be deleted or not "
                        "exist. Check that ids are valid.",
                        {"ids": missing},
                    )
                )
            return batch_answer(200, results, errors, started)

    def batch_archive(self, req: Request, object_type: str) -> Response:
        """POST /crm/v3/objects/{objectType}/batch/archive ("Archive a batch of objects by ID"): 204, unknown
        ids ignored."""
        obj = self._object(object_type)
        _, inputs = batch_inputs(req)
        with self.lock:
            now = self.now_ms()
            for item in inputs:
                rec = self._find(obj, str(item.get("id")), None)
                if rec is not None:
                    self._archive(obj, rec, now)
        return Response(204)
