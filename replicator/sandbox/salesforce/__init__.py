"""Salesforce sandbox: the subset of the Salesforce REST API, SOQL and Bulk API 2.0 a connector uses.

Implemented (each handler names the vendor documentation page it follows):

- OAuth 2.0 token endpoint ``POST /services/oauth2/token``: client credentials, refresh
  token and username-password grants; tokens expire after ``token_ttl_s``; API calls with a
  missing, unknown or expired token get 401 INVALID_SESSION_ID.
- sObjects Account (001), Contact (003), Product2 (01t), Opportunity (006) with realistic
  standard fields, system fields (Id, IsDeleted, CreatedDate, LastModifiedDate,
  SystemModstamp) and the custom External ID ``ERP_Id__c`` (unique, case sensitive).
- REST rows: create, get, update, delete by id; get, upsert, delete by external id;
  describe; describe global; limits; versions; the delete log ("sObject Get Deleted").
- sObject Collections: create, update, upsert by external id, delete, get; at most 200
  records (2,000 ids for get); per-record results in order; allOrNone rollback.
- SOQL ``/query`` with query locators for the next pages (see ``soql`` for the subset).
- Bulk API 2.0 ingest jobs (see ``bulk``).
- ``Sforce-Limit-Info`` on every API answer and the daily allocation (403
  REQUEST_LIMIT_EXCEEDED); sandbox-only 429 for burst limits and injected faults.
- Inspection: every record including deleted ones, user edits, a freezable clock
  (``POST /__sandbox/clock``), ``POST /__sandbox/expire_tokens``.

Not implemented: see the module docstrings of ``sandbox``, ``soql`` and ``bulk``.
"""

from .sandbox import SalesforceSandbox

__all__ = ["SalesforceSandbox"]
