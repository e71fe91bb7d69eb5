"""Bulk API 2.0 ingest jobs of the Salesforce sandbox.

Follows the Bulk API 2.0 and Bulk API Developer Guide (developer.salesforce.com/docs/
atlas.en-us.api_asynch.meta): "Create a Job", "Upload Job Data", "Upload Complete" / "Close
or Abort a Job", "Get Job Info", "Get All Jobs", "Delete a Job", "Get Job Successful Record
Results", "Get Job Failed Record Results", "Get Job Unprocessed Record Results", "Prepare CSV
Files", "Valid Date Format in Records", "How Requests Are Processed" and "Limits".

Implemented: operations insert, update, upsert, delete on CSV (RFC 4180, header row of field
names, every ``columnDelimiter``, ``lineEnding`` LF/CRLF checked against the data); an empty
cell leaves a field unchanged and ``#N/A`` sets it to null; one upload per job (a second PUT
is refused as Salesforce does); the states Open → UploadComplete → InProgress → JobComplete
(or Failed, or Aborted at any point before completion); processing in a background thread
after ``poll_delay_s``, in internal batches of 10,000 records, each row going through the
same validation as the REST API (so the same error codes); rows that share an external id
within one internal batch all fail with DUPLICATE_VALUE; results as CSV with ``sf__Id``,
``sf__Created`` / ``sf__Error`` (``CODE:message:fields --``) and the original columns.

Not implemented: hardDelete, multipart job creation, query jobs, result paging with
``Sforce-Locator``/``maxRecords``, relationship columns (``Account.ERP_Id__c``), gzip.
"""

from __future__ import annotations

import csv
import io
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from replicator.sandbox.core import BadRequest

from .schema import SOBJECTS, RecordError, make_id

if TYPE_CHECKING:
    from .sandbox import SalesforceSandbox

MAX_UPLOAD_BYTES = 150 * 1024 * 1024  # "Limits": 150 MB of (base64-encoded) CSV per job
BATCH_SIZE = 10_000  # "How Requests Are Processed": internal batches of up to 10,000 records
DELIMITERS = {"COMMA": ",", "TAB": "\t", "PIPE": "|", "SEMICOLON": ";", "CARET": "^", "BACKQUOTE": "`"}
OPERATIONS = ("insert", "update", "upsert", "delete")
NULL = "#N/A"
DELETABLE_STATES = ("UploadComplete", "JobComplete", "Aborted", "Failed")
ABORTABLE_STATES = ("Open", "UploadComplete", "InProgress")


class JobError(BadRequest):
    def __init__(self, message: str, code: str = "INVALIDJOB", status: int = 400) -> None:
        super().__init__(message, status, code)


@dataclass
class Job:
    id: str
    object: str
    operation: str
    external_id_field: str | None
    line_ending: str
    column_delimiter: str
    api_version: str
    created: str
    state: str = "Open"
    modstamp: str = ""
    data: bytes | None = None
    header: list[str] = field(default_factory=list)
    successes: list[tuple[str, bool, list[str]]] = field(default_factory=list)
    failures: list[tuple[str, str, list[str]]] = field(default_factory=list)
    unprocessed: list[list[str]] = field(default_factory=list)
    error_message: str | None = None
    started: float = 0.0
    finished: float = 0.0

    def info(self) -> dict[str, Any]:
        """ "Get Job Info" response body."""
        version = self.api_version.lstrip("v")
        body: dict[str, Any] = {
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": "0055g0000000001AAA",
            "createdDate": self.created,
            "systemModstamp": self.modstamp or self.created,
            "state": self.state,
            "externalIdFieldName": self.external_id_field,
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": float(version),
            "jobType": "V2Ingest",
            "contentUrl": f"services/data/{self.api_version}/jobs/ingest/{self.id}/batches",
            "lineEnding": self.line_ending,
            "columnDelimiter": self.column_delimiter,
            "numberRecordsProcessed": len(self.successes) + len(self.failures),
            "numberRecordsFailed": len(self.failures),
            "retries": 0,
            "totalProcessingTime": int((self.finished - self.started) * 1000) if self.finished else 0,
            "apiActiveProcessingTime": 0,
            "apexProcessingTime": 0,
        }
        if self.error_message:
            body["errorMessage"] = self.error_message
        return body


class BulkJobs:
    """Every ingest job of one sandbox; callers hold ``sandbox.lock`` except around `_process`."""

    def __init__(self, sandbox: SalesforceSandbox, poll_delay_s: float) -> None:
        self.sandbox = sandbox
        self.poll_delay_s = poll_delay_s
        self.max_upload_bytes = MAX_UPLOAD_BYTES
        self.jobs: dict[str, Job] = {}
        self._serial = 0
        self._generation = 0  # bumped by reset, so a job thread started before it stops

    def reset(self) -> None:
        self.jobs.clear()
        self._generation += 1

    def create(self, body: Any, api_version: str) -> Job:
        """ "Create a Job" (POST /jobs/ingest)."""
        if not isinstance(body, dict):
            raise JobError("InvalidJob : the request body must be a JSON object with object and operation")
        sobject = body.get("object")
        operation = body.get("operation")
        if sobject not in SOBJECTS:
            raise JobError(f"InvalidJob : Invalid object: {sobject}. Use an sObject API name such as Account")
        if operation not in OPERATIONS:
            raise JobError(f"InvalidJob : Invalid operation: {operation}; use one of {', '.join(OPERATIONS)}")
        if body.get("contentType", "CSV") != "CSV":
            raise JobError(f"InvalidJob : Invalid contentType: {body.get('contentType')}; the only value is CSV")
        line_ending = body.get("lineEnding", "LF")
        if line_ending not in ("LF", "CRLF"):
            raise JobError(f"InvalidJob : Invalid lineEnding: {line_ending}; use LF or CRLF")
        delimiter = body.get("columnDelimiter", "COMMA")
        if delimiter not in DELIMITERS:
            raise JobError(f"InvalidJob : Invalid columnDelimiter: {delimiter}; use one of {', '.join(DELIMITERS)}")
        ext = body.get("externalIdFieldName")
        if operation == "upsert":
            if not ext:
                raise JobError(
                    f"InvalidJob : External ID was blank for {sobject}. An External ID must be specified for upsert."
                )
            f = SOBJECTS[sobject].field(str(ext))
            if f is None or not (f.external_id or f.type == "id"):
                raise JobError(f"InvalidJob : Field {ext} is not an External ID field of {sobject}")
            ext = f.name
        self._serial += 1
        job = Job(
            id=make_id("750", self._serial),
            object=sobject,
            operation=operation,
            external_id_field=ext if operation == "upsert" else None,
            line_ending=line_ending,
            column_delimiter=delimiter,
            api_version=api_version,
            created=self.sandbox.store.clock.now(),
        )
        self.jobs[job.id] = job
        return job

    def get(self, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if job is None:
            raise JobError("The requested resource does not exist", "NOT_FOUND", 404)
        return job

    def upload(self, job_id: str, data: bytes, content_type: str | None) -> None:
        """ "Upload Job Data" (PUT /jobs/ingest/{id}/batches)."""
        job = self.get(job_id)
        if not (content_type or "").startswith("text/csv"):
            raise JobError(f"Content-Type must be text/csv for job data, got {content_type!r}", "BULK_API_ERROR")
        if job.state != "Open":
            raise JobError(
                f"Job {job_id} is in state {job.state}; data can only be uploaded to an Open job", "INVALIDJOBSTATE"
            )
        if job.data is not None:
            raise JobError(
                f"Found multiple contents for job: <{job_id}>, please 'Close' / 'Abort' / 'Delete' the current Job "
                "then create a new Job and make sure you only do 'PUT' once on a given Job.",
                "BULK_API_ERROR",
            )
        if len(data) > self.max_upload_bytes:
            raise JobError(
                f"Job data is {len(data)} bytes; Bulk API 2.0 accepts at most {self.max_upload_bytes} bytes per job. "
                "Split the records into several jobs.",
                "BULK_API_ERROR",
            )
        job.data = data

    def set_state(self, job_id: str, body: Any) -> Job:
        """ "Upload Complete" / "Close or Abort a Job" (PATCH /jobs/ingest/{id})."""
        job = self.get(job_id)
        state = body.get("state") if isinstance(body, dict) else None
        if state == "UploadComplete":
            if job.state != "Open":
                raise JobError(f"Job {job_id} is in state {job.state}, not Open", "INVALIDJOBSTATE")
            job.state = "UploadComplete"
            job.modstamp = self.sandbox.store.clock.now()
            threading.Thread(target=self._run, args=(job, self._generation), name=f"bulk-{job.id}", daemon=True).start()
            return job
        if state == "Aborted":
            if job.state not in ABORTABLE_STATES:
                raise JobError(f"Job {job_id} is in state {job.state} and can no longer be aborted", "INVALIDJOBSTATE")
            job.state = "Aborted"
            job.modstamp = self.sandbox.store.clock.now()
            return job
        raise JobError(f"Invalid state: {state!r}; use UploadComplete or Aborted", "INVALIDJOBSTATE")

    def delete(self, job_id: str) -> None:
        """ "Delete a Job" (DELETE /jobs/ingest/{id})."""
        job = self.get(job_id)
        if job.state not in DELETABLE_STATES:
            raise JobError(
                f"Job {job_id} is in state {job.state}; delete it once it is {', '.join(DELETABLE_STATES)}",
                "INVALIDJOBSTATE",
            )
        del self.jobs[job_id]

    def results(self, job_id: str, kind: str) -> str:
        """CSV of successfulResults / failedResults / unprocessedrecords."""
        job = self.get(job_id)
        out = io.StringIO()
        writer = csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n")
        if kind == "successfulResults":
            writer.writerow(["sf__Id", "sf__Created", *job.header])
            for record_id, created, row in job.successes:
                writer.writerow([record_id, "true" if created else "false", *row])
        elif kind == "failedResults":
            writer.writerow(["sf__Id", "sf__Error", *job.header])
            for record_id, error, row in job.failures:
                writer.writerow([record_id, error, *row])
        else:
            header, rows = job.header, job.unprocessed
            if job.state in ("Open", "UploadComplete", "Failed", "Aborted") and not job.header and job.data:
                header, rows = self._peek(job)
            writer.writerow(header)
            writer.writerows(rows)
        return out.getvalue()

    # ------------------------------------------------------------ processing

    def _peek(self, job: Job) -> tuple[list[str], list[list[str]]]:
        try:
            return _parse_csv(job)
        except ValueError:
            return [], []

    def _run(self, job: Job, generation: int) -> None:
        time.sleep(self.poll_delay_s)
        sandbox = self.sandbox
        with sandbox.lock:
            if generation != self._generation or job.state != "UploadComplete":
                return
            job.state = "InProgress"
            job.started = time.monotonic()
            job.modstamp = sandbox.store.clock.now()
            rows: list[list[str]] = []
            try:
                if job.data is None:
                    raise ValueError("InvalidBatch : no job data was uploaded before UploadComplete")
                job.header, rows = _parse_csv(job)
                self._check_header(job)
            except ValueError as exc:
                job.state = "Failed"
                job.error_message = str(exc)
                job.finished = time.monotonic()
                job.unprocessed = rows
                return
        for start in range(0, len(rows), BATCH_SIZE):
            with sandbox.lock:
                if generation != self._generation:
                    return
                if job.state != "InProgress":
                    job.unprocessed = rows[start:]
                    return
                self._process_batch(job, rows[start : start + BATCH_SIZE])
                sandbox.count("bulk_batches")
        time.sleep(self.poll_delay_s)
        with sandbox.lock:
            if generation == self._generation and job.state == "InProgress":
                job.state = "JobComplete"
                job.finished = time.monotonic()
                job.modstamp = sandbox.store.clock.now()

    def _check_header(self, job: Job) -> None:
        otype = SOBJECTS[job.object]
        seen: set[str] = set()
        canonical: list[str] = []
        for name in job.header:
            f = otype.field(name)
            if f is None:
                raise ValueError(f"InvalidBatch : Field name not found : {name}")
            if f.name in seen:
                raise ValueError(f"InvalidBatch : Duplicate field name in header : {name}")
            seen.add(f.name)
            canonical.append(f.name)
        needed = {"upsert": job.external_id_field, "update": "Id", "delete": "Id"}.get(job.operation)
        if needed and needed not in seen:
            raise ValueError(f"InvalidBatch : Required column {needed} is missing from the header row")

    def _process_batch(self, job: Job, rows: list[list[str]]) -> None:
        store = self.sandbox.store
        otype = SOBJECTS[job.object]
        names = [otype.fields_by_any_case(n) for n in job.header]
        key = job.external_id_field if job.operation == "upsert" else None
        dupes: Counter[str] = Counter()
        if key is not None:
            column = names.index(key)
            dupes.update(row[column] for row in rows if len(row) > column and row[column])
        for row in rows:
            record_id = ""
            try:
                if len(row) != len(names):
                    raise RecordError("INVALID_FIELD", f"row has {len(row)} values but the header has {len(names)}")
                values = {
                    name: (None if cell == NULL else cell) for name, cell in zip(names, row, strict=True) if cell != ""
                }
                if self.sandbox.partial_failure():
                    raise RecordError(
                        "UNABLE_TO_LOCK_ROW", "unable to obtain exclusive access to this record or 1 records"
                    )
                if job.operation == "insert":
                    record_id, created = store.insert(job.object, values), True
                elif job.operation in ("update", "delete"):
                    record_id = str(values.pop("Id", "") or "")
                    if not record_id:
                        raise RecordError("MISSING_ARGUMENT", "Id not specified in an update call", ["Id"])
                    if job.operation == "update":
                        store.update(job.object, record_id, values)
                    else:
                        store.delete(job.object, record_id)
                    created = False
                else:
                    assert key is not None
                    ext_value = values.pop(key, None)
                    if ext_value is None:
                        raise RecordError("MISSING_ARGUMENT", f"{key} not specified", [key])
                    if dupes[ext_value] > 1:
                        raise RecordError("DUPLICATE_VALUE", f"Duplicate external id specified: {ext_value}", [key])
                    record_id, created = store.upsert(job.object, key, ext_value, values)
                job.successes.append((record_id, created, row))
            except RecordError as exc:
                error = f"{exc.status_code}:{exc.message}:{','.join(exc.fields)} --"
                job.failures.append((record_id if job.operation in ("update", "delete") else "", error, row))


def _parse_csv(job: Job) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the job's CSV (RFC 4180 quoting); ValueError names what is wrong."""
    assert job.data is not None
    try:
        text = job.data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"InvalidBatch : job data is not UTF-8: {exc}") from None
    first_break = text.find("\n")
    if first_break >= 0:
        crlf = first_break > 0 and text[first_break - 1] == "\r"
        if crlf != (job.line_ending == "CRLF"):
            raise ValueError(f"LineEnding is invalid on user data. Current LineEnding setting is {job.line_ending}")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=DELIMITERS[job.column_delimiter], strict=True)
    try:
        rows = [row for row in reader if row]
    except csv.Error as exc:
        raise ValueError(f"InvalidBatch : CSV parse error on line {reader.line_num}: {exc}") from None
    if not rows:
        raise ValueError("InvalidBatch : the job data has no header row")
    return rows[0], rows[1:]
