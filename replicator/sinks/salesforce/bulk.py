"""Bulk API 2.0 upserts, for backfills of thousands of records of one sObject.

One ingest job per chunk of CSV, following the Bulk API 2.0 and Bulk API Developer Guide:

1. "Create a Job": ``POST /services/data/vXX.X/jobs/ingest`` with ``object``,
   ``externalIdFieldName``, ``contentType: CSV``, ``operation: upsert``, ``lineEnding: LF``.
2. "Upload Job Data": ``PUT .../jobs/ingest/{id}/batches``, ``Content-Type: text/csv``
   (at most 100 MB after Salesforce's base64 encoding, so we keep each upload well under
   :data:`MAX_CSV_BYTES` and start another job beyond it).
3. "Upload Complete": ``PATCH .../jobs/ingest/{id}`` with ``{"state": "UploadComplete"}``.
4. "Get Information About an Ingest Job", polled with growing pauses until the state is
   one of ``JobComplete``, ``Failed`` or ``Aborted`` ("Job States").
5. "Get Job Successful Record Results" (``successfulResults/``: ``sf__Id``, ``sf__Created``
   and the uploaded fields), "Get Job Failed Record Results" (``failedResults/``:
   ``sf__Id``, ``sf__Error`` and the uploaded fields) and "Get Job Unprocessed Record
   Results" (``unprocessedrecords/``: the uploaded fields). Their order is not guaranteed
   to match the upload, so each row is matched back to its operation by the external-id
   column.

Failed rows are PERMANENT with Salesforce's error, except error codes that are transient
by nature (a record lock); unprocessed rows, and rows missing from every result list, are
TRANSIENT. Re-running an upsert is harmless: it is keyed by the external id.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from replicator.sinks.base import CrmError, Outcome, Result
from replicator.sinks.salesforce.client import TRANSIENT_CODES, SalesforceClient, classify
from replicator.sinks.salesforce.csv_data import header_line, join_lines, parse_csv, row_line

MAX_CSV_BYTES = 50_000_000
TERMINAL_STATES = frozenset({"JobComplete", "Failed", "Aborted"})
RESOURCE = "bulk_job"


@dataclass(slots=True)
class Polling:
    """How long to wait between job-state reads, and for how long in all."""

    first_s: float = 1.0
    factor: float = 1.5
    max_s: float = 15.0
    deadline_s: float = 3600.0


def error_outcome(error: str) -> Outcome:
    """``sf__Error`` reads ``STATUS_CODE:message:fields --``; transient codes may succeed on a retry."""
    return Outcome.TRANSIENT if error.split(":", 1)[0].strip() in TRANSIENT_CODES else Outcome.PERMANENT


class BulkUpsert:
    def __init__(
        self,
        client: SalesforceClient,
        *,
        polling: Polling | None = None,
        sleep: Callable[[float], None] = time.sleep,
        max_csv_bytes: int = MAX_CSV_BYTES,
    ) -> None:
        self.client = client
        self.polling = polling or Polling()
        self.sleep = sleep
        self.max_csv_bytes = max_csv_bytes

    def upsert(
        self, sobject: str, external_id_field: str, records: Sequence[tuple[str, dict[str, Any]]]
    ) -> list[Result]:
        """One Result per (external id, fields) pair, same order. Field values go to the CSV as
        they are (Decimal, datetime, ...): the CSV writer formats them without losing digits."""
        columns = [external_id_field]
        for _, fields in records:
            columns.extend(k for k in fields if k not in columns)
        header = header_line(columns)
        lines = [row_line(columns, {**fields, external_id_field: ext}) for ext, fields in records]
        results: dict[str, Result] = {}
        for start, end in self._spans(len(header.encode()) + 1, [len(line.encode()) + 1 for line in lines]):
            ext_ids = [ext for ext, _ in records[start:end]]
            csv_text = join_lines(header, lines[start:end])
            results.update(self._run(sobject, external_id_field, csv_text, ext_ids))
        return [results[ext] for ext, _ in records]

    def _spans(self, header: int, sizes: list[int]) -> list[tuple[int, int]]:
        """(start, end) row ranges whose CSV (header included) stays within max_csv_bytes; a row
        too big on its own still gets a job, for Salesforce to answer about it."""
        spans: list[tuple[int, int]] = []
        start, size = 0, header
        for i, line in enumerate(sizes):
            if i > start and size + line > self.max_csv_bytes:
                spans.append((start, i))
                start, size = i, header
            size += line
        if start < len(sizes):
            spans.append((start, len(sizes)))
        return spans

    def _run(self, sobject: str, field: str, csv_text: str, ext_ids: list[str]) -> dict[str, Result]:
        api = self.client.api
        try:
            job = self.client.expect_json(
                self.client.request(
                    "POST",
                    RESOURCE,
                    f"{api}/jobs/ingest",
                    json={
                        "object": sobject,
                        "externalIdFieldName": field,
                        "contentType": "CSV",
                        "operation": "upsert",
                        "lineEnding": "LF",
                    },
                ),
                f"create Bulk API upsert job for {sobject}",
            )
        except CrmError as exc:
            return dict.fromkeys(ext_ids, exc.result)
        job_id = str(job["id"])
        path = f"{api}/jobs/ingest/{job_id}"
        try:
            self._expect_ok(
                self.client.request(
                    "PUT", RESOURCE, f"{path}/batches", content=csv_text.encode(), content_type="text/csv"
                ),
                f"upload data of Bulk API job {job_id} ({sobject})",
            )
            self._expect_ok(
                self.client.request("PATCH", RESOURCE, path, json={"state": "UploadComplete"}),
                f"close Bulk API job {job_id} ({sobject})",
            )
        except CrmError as exc:
            self._abort(path)
            return dict.fromkeys(ext_ids, exc.result)
        info = self._wait(path, job_id)
        if info is None or info.get("state") not in TERMINAL_STATES:
            state = info.get("state") if info else "unknown"
            return dict.fromkeys(
                ext_ids,
                Result(
                    Outcome.TRANSIENT,
                    error=f"Bulk API job {job_id} ({sobject}) still {state} after {self.polling.deadline_s:.0f} s; "
                    "a retry upserts again, which is harmless",
                ),
            )
        return self._results(sobject, field, path, job_id, info, ext_ids)

    @staticmethod
    def _expect_ok(resp: Any, what: str) -> None:
        if not resp.is_success:
            raise CrmError(classify(resp, what))

    def _abort(self, path: str) -> None:
        # An open job that nobody closes expires on its own: a failed abort is no loss.
        with contextlib.suppress(CrmError):
            self.client.request("PATCH", RESOURCE, path, json={"state": "Aborted"})

    def _wait(self, path: str, job_id: str) -> dict[str, Any] | None:
        started = time.monotonic()
        pause = self.polling.first_s
        info: dict[str, Any] | None = None
        while True:
            try:
                info = self.client.expect_json(self.client.request("GET", RESOURCE, path), f"Bulk API job {job_id}")
            except CrmError as exc:
                if exc.result.outcome is Outcome.PERMANENT:
                    raise
            if info is not None and info.get("state") in TERMINAL_STATES:
                return info
            if time.monotonic() - started + pause > self.polling.deadline_s:
                return info
            self.sleep(pause)
            pause = min(pause * self.polling.factor, self.polling.max_s)

    def _rows(self, path: str, kind: str, job_id: str) -> list[dict[str, str]]:
        resp = self.client.request("GET", RESOURCE, f"{path}/{kind}/", accept="text/csv")
        if not resp.is_success:
            raise CrmError(classify(resp, f"{kind} of Bulk API job {job_id}"))
        return parse_csv(resp.text)

    def _results(
        self, sobject: str, field: str, path: str, job_id: str, info: dict[str, Any], ext_ids: list[str]
    ) -> dict[str, Result]:
        state = str(info.get("state"))
        why = f"Bulk API job {job_id} ended {state}" + (f": {info['errorMessage']}" if info.get("errorMessage") else "")
        results: dict[str, Result] = {}
        try:
            for row in self._rows(path, "successfulResults", job_id):
                results[row.get(field, "")] = Result(
                    Outcome.OK, crm_id=row.get("sf__Id") or None, created=row.get("sf__Created", "").lower() == "true"
                )
            for row in self._rows(path, "failedResults", job_id):
                error = row.get("sf__Error", "")
                ext = row.get(field, "")
                results[ext] = Result(error_outcome(error), error=f"{sobject} with {field} {ext!r}: {error} ({why})")
            for row in self._rows(path, "unprocessedrecords", job_id):
                results[row.get(field, "")] = Result(Outcome.TRANSIENT, error=f"not processed: {why}")
        except CrmError as exc:
            # Results that cannot be read leave every record unsettled; upserting again is safe.
            return {ext: results.get(ext) or exc.result for ext in ext_ids}
        missing = Result(Outcome.TRANSIENT, error=f"no result for this record: {why}")
        return {ext: results.get(ext, missing) for ext in ext_ids}
