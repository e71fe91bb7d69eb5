"""Bulk API 2.0 HTTP handlers of the Salesforce sandbox; the ingest jobs themselves live in ``bulk``.

Each handler names the page of the Bulk API 2.0 and Bulk API Developer Guide
(developer.salesforce.com/docs/atlas.en-us.api_asynch.meta) it follows.
"""

from __future__ import annotations

from replicator.sandbox.core import Request, Response

from .api import SalesforceApi
from .bulk import BulkJobs


class BulkApiMixin(SalesforceApi):
    """REST handlers under ``/jobs/ingest``."""

    bulk: BulkJobs

    def job_create(self, req: Request) -> Response:
        """Bulk API 2.0 "Create a Job": POST /jobs/ingest → 200 job info, state Open."""
        body = self._json(req)
        with self.lock:
            job = self.bulk.create(body, self._version(req))
            info = job.info()
        return Response(200, {k: info[k] for k in _CREATE_KEYS if k in info})

    def job_list(self, req: Request) -> Response:
        """Bulk API 2.0 "Get All Jobs"."""
        with self.lock:
            records = [job.info() for job in self.bulk.jobs.values()]
        return Response(200, {"done": True, "records": records, "nextRecordsUrl": None})

    def job_info(self, req: Request, job_id: str) -> Response:
        """Bulk API 2.0 "Get Job Info"."""
        with self.lock:
            return Response(200, self.bulk.get(job_id).info())

    def job_state(self, req: Request, job_id: str) -> Response:
        """Bulk API 2.0 "Upload Complete" / "Close or Abort a Job": ``{"state": "UploadComplete"|"Aborted"}``."""
        body = self._json(req)
        with self.lock:
            return Response(200, self.bulk.set_state(job_id, body).info())

    def job_delete(self, req: Request, job_id: str) -> Response:
        """Bulk API 2.0 "Delete a Job" → 204."""
        with self.lock:
            self.bulk.delete(job_id)
        return Response(204)

    def job_upload(self, req: Request, job_id: str) -> Response:
        """Bulk API 2.0 "Upload Job Data": PUT text/csv → 201 Created, empty body."""
        with self.lock:
            self.bulk.upload(job_id, req.body, req.header("Content-Type"))
        return Response(201)

    def job_results(self, req: Request, job_id: str, kind: str) -> Response:
        """Bulk API 2.0 "Get Job Successful/Failed/Unprocessed Record Results": CSV."""
        with self.lock:
            text = self.bulk.results(job_id, kind)
        return Response(200, text, content_type="text/csv")


_CREATE_KEYS = [
    "id",
    "operation",
    "object",
    "createdById",
    "createdDate",
    "systemModstamp",
    "state",
    "externalIdFieldName",
    "concurrencyMode",
    "contentType",
    "apiVersion",
    "contentUrl",
    "lineEnding",
    "columnDelimiter",
]
