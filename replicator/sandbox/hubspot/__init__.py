"""A HubSpot sandbox: the part of HubSpot's CRM API a connector uses, served over HTTP.

Implemented (each handler names the HubSpot documentation page it follows):

- Auth: private-app access token as ``Authorization: Bearer``; otherwise 401 INVALID_AUTHENTICATION.
- Object types ``companies``, ``contacts``, ``products``, ``deals``, ``line_items``, also addressed by
  their object type ids (0-2, 0-1, 0-7, 0-3, 0-8) or singular names.
- Records: ``id``, ``properties`` (strings; ``hs_object_id``, ``createdate``, ``hs_lastmodifieddate``
  and, for contacts, ``lastmodifieddate``, as ISO 8601 UTC with milliseconds), ``createdAt``,
  ``updatedAt``, ``archived``. Unrequested properties are left out of answers (HubSpot returns a
  default set); requested ones without a value come back null.
- Properties API: list, read, create (409 OBJECT_ALREADY_EXISTS on a taken name), standard properties
  seeded per object; writes of unknown properties → 400 VALIDATION_ERROR ``PROPERTY_DOESNT_EXIST``;
  read-only ones → ``READ_ONLY_VALUE``; numbers, datetimes, dates, booleans and enumerations
  (deal stages and pipeline) validated and normalized.
- Objects v3: single get (``idProperty``, ``properties``, ``propertiesWithHistory``,
  ``associations``), create, update, delete (archive); list with ``limit`` ≤ 100 / ``after`` /
  ``archived``; batch upsert, create, update (≤ 100 inputs), read (≤ 100; ≤ 50 with
  ``propertiesWithHistory``), archive. Unique-value properties (``hasUniqueValue``, contacts'
  ``email``) are enforced (409 CONFLICT) and usable as ``idProperty``; duplicate ids in one batch →
  400 "Duplicate IDs found in batch input".
- Per-record results ("Error handling", "Multi-status errors"): an invalid input refuses the whole
  batch unless every input carries an ``objectWriteTraceId``; then each bad input gets its own entry
  in ``errors`` (207) with ``context.objectWriteTraceId`` and ``context.ids``. Injected partial
  failures (``Faults.rate_partial``) always fail only their input, the same way.
- Search: filterGroups/filters (limits and operators in ``search.py``), one sort, ``limit`` ≤ 200,
  ``after``, ``total``, paging capped at ``search_cap`` (10,000) results (400 beyond).
- Associations v4: batch associate default (both directions, the documented default type ids), batch
  read (``toObjectId`` + ``associationTypes``; none → NO_ASSOCIATIONS_FOUND error), batch archive.
- Rate limits: ``X-HubSpot-RateLimit-Max/-Remaining/-Interval-Milliseconds/-Daily/-Daily-Remaining``
  on every answer but search answers; 429 with ``policyName`` TEN_SECONDLY_ROLLING or DAILY and
  ``Retry-After``. 5xx faults answer 500/502/503/504 with HubSpot-like bodies.
- Webhooks (``webhook_url``): ``*.creation``, ``*.propertyChange`` (one event per changed property,
  also for those set at creation) and ``*.deletion`` events, v3 and v1 signatures, batches of up to
  100, retried (see ``webhooks.py``); ``changeSource`` INTEGRATION for API writes, CRM_UI for
  ``/__sandbox`` user edits.
- Clock: ``freeze_ms`` (constructor), ``POST /__sandbox/clock {"freeze_ms": ms | null,
  "advance_ms": ms}`` and ``GET /__sandbox/clock``: while frozen every write gets the same
  modification time, so tests can make many records share one timestamp.

Not implemented: OAuth apps and scopes (403), custom objects and association labels, the search
API's own 5-requests-per-second limit and its eventual consistency (results reflect writes at once),
``query`` full-text search, GDPR delete, merges, property groups and property update/archive,
``associationChange`` webhooks, webhook subscriptions management (every event type is delivered),
pipelines API (the default deal pipeline's stages are fixed).
"""

from .sandbox import HubSpotError, HubSpotSandbox
from .webhooks import sign_v1, sign_v3

__all__ = ["HubSpotError", "HubSpotSandbox", "sign_v1", "sign_v3"]
