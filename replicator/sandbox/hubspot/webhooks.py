"""HubSpot webhook deliveries: event batches, signatures, retries.

Follows:
- "Webhooks API" (developers.hubspot.com/docs/guides/api/app-management/webhooks): a delivery is a
  POST of a JSON array of events (``eventId``, ``subscriptionId``, ``portalId``, ``appId``,
  ``occurredAt``, ``subscriptionType``, ``attemptNumber``, ``objectId``, ``changeSource``,
  ``sourceId``, and ``propertyName``/``propertyValue`` for property changes), at most 100 events per
  request; a delivery fails on a connection error, no answer within 5 s, or any 4xx/5xx status,
  and is retried up to 10 times, ``attemptNumber`` counting from 0.
- "Validating requests" (developers.hubspot.com/docs/guides/apps/authentication/validating-requests):
  ``X-HubSpot-Signature-v3`` = base64(HMAC-SHA256(client secret, method + URI + body + timestamp)),
  ``X-HubSpot-Request-Timestamp`` in milliseconds, the URI with the listed escapes decoded; also the
  v1 signature (``X-HubSpot-Signature`` = hex SHA-256 of client secret + body, with
  ``X-HubSpot-Signature-Version: v1``) that the Webhooks API still sends alongside.

Sandbox difference: HubSpot spreads its 10 retries over 24 hours with jitter; the sandbox retries
after ``retry_base_s * 2**n`` seconds (capped at ``retry_cap_s``), so tests see retries in seconds.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import httpx
import orjson

MAX_EVENTS_PER_REQUEST = 100
MAX_RETRIES = 10
DELIVERY_TIMEOUT_S = 5.0

# Written from HubSpot's documentation apart from the connector's verifier (sources/crm/signature.py)
# on purpose: sharing one signer would let a bug in it pass both sides' tests.
_URI_ESCAPES = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}
_ESCAPE = re.compile("|".join(_URI_ESCAPES), re.IGNORECASE)


def sign_v3(client_secret: str, method: str, uri: str, body: bytes, timestamp_ms: int) -> str:
    """The ``X-HubSpot-Signature-v3`` header HubSpot sends with a request to ``uri``."""
    decoded = _ESCAPE.sub(lambda m: _URI_ESCAPES[m.group(0).upper()], uri)
    source = method.upper().encode() + decoded.encode() + body + str(timestamp_ms).encode()
    return base64.b64encode(hmac.new(client_secret.encode(), source, hashlib.sha256).digest()).decode()


def sign_v1(client_secret: str, body: bytes) -> str:
    """The ``X-HubSpot-Signature`` (version v1) header of a webhook delivery."""
    return hashlib.sha256(client_secret.encode() + body).hexdigest()


class WebhookSender:
    """Delivers queued events from one background thread, in order, batched and retried.

    ``count`` receives counter names (``webhook_requests``, ``webhook_events_delivered``,
    ``webhook_failures``, ``webhook_events_dropped``) for the sandbox's stats.
    """

    def __init__(
        self,
        url: str,
        client_secret: str,
        count: Callable[[str, int], None],
        *,
        retry_base_s: float = 0.2,
        retry_cap_s: float = 5.0,
    ) -> None:
        self.url = url
        self.client_secret = client_secret
        self.retry_base_s = retry_base_s
        self.retry_cap_s = retry_cap_s
        self._count = count
        self._queue: deque[dict[str, Any]] = deque()
        self._cond = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="hubspot-sandbox-webhooks", daemon=True)
        self._thread.start()

    def enqueue(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        with self._cond:
            self._queue.extend(events)
            self._cond.notify_all()

    def clear(self) -> None:
        with self._cond:
            self._queue.clear()

    def idle(self, timeout_s: float = 10.0) -> bool:
        """Wait until every queued event was delivered or dropped; False on timeout."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._queue or self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=DELIVERY_TIMEOUT_S + 1)

    def _run(self) -> None:
        with httpx.Client(timeout=DELIVERY_TIMEOUT_S) as client:
            while True:
                with self._cond:
                    while not self._queue and not self._closed:
                        self._cond.wait()
                    if self._closed:
                        return
                    batch = [self._queue.popleft() for _ in range(min(MAX_EVENTS_PER_REQUEST, len(self._queue)))]
                    self._busy = True
                try:
                    self._deliver(client, batch)
                finally:
                    with self._cond:
                        self._busy = False
                        self._cond.notify_all()

    def _deliver(self, client: httpx.Client, batch: list[dict[str, Any]]) -> None:
        for attempt in range(MAX_RETRIES + 1):
            for event in batch:
                event["attemptNumber"] = attempt
            body = orjson.dumps(batch)
            timestamp = int(time.time() * 1000)
            headers = {
                "Content-Type": "application/json",
                "X-HubSpot-Signature-v3": sign_v3(self.client_secret, "POST", self.url, body, timestamp),
                "X-HubSpot-Request-Timestamp": str(timestamp),
                "X-HubSpot-Signature": sign_v1(self.client_secret, body),
                "X-HubSpot-Signature-Version": "v1",
            }
            self._count("webhook_requests", 1)
            try:
                ok = client.post(self.url, content=body, headers=headers).status_code < 400
            except httpx.HTTPError:
                ok = False
            if ok:
                self._count("webhook_events_delivered", len(batch))
                return
            self._count("webhook_failures", 1)
            if attempt == MAX_RETRIES:
                break
            with self._cond:
                if self._cond.wait_for(lambda: self._closed, min(self.retry_base_s * 2**attempt, self.retry_cap_s)):
                    return
        self._count("webhook_events_dropped", len(batch))
