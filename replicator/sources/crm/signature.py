"""CRM webhook signatures: BottleCRM's ``X-BottleCRM-Signature: t=<unix>,v1=<hex HMAC-SHA256>``,
and HubSpot's ``X-HubSpot-Signature-v3`` (at the end of this module).

The HMAC covers ``"<t>." + raw body`` with the endpoint's secret, so neither the body
nor the timestamp can be changed without the secret. A header may carry several
``v1=`` values (one per secret while a secret is being rotated); one match is enough.
The timestamp bounds how long a captured request can be replayed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

SIGNATURE_HEADER = "X-BottleCRM-Signature"


class SignatureError(Exception):
    """A request whose signature does not prove it came from the CRM.

    ``outcome`` is the metrics label: ``unsigned``, ``forged`` or ``stale``.
    """

    def __init__(self, outcome: str, message: str) -> None:
        super().__init__(message)
        self.outcome = outcome
        self.message = message


def _digest(secret: str, body: bytes, timestamp: int) -> str:
    return hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()


def sign_bottlecrm(secret: str, body: bytes, timestamp: int) -> str:
    """The header value BottleCRM sends for ``body`` at ``timestamp`` (as its ``webhooks.tasks.sign``)."""
    return f"t={timestamp},v1={_digest(secret, body, timestamp)}"


def _parse(header: str) -> tuple[int, list[str]]:
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            raise SignatureError("forged", f"{SIGNATURE_HEADER} part {part.strip()!r} is not key=value")
        if key == "t":
            if timestamp is not None:
                raise SignatureError("forged", f"{SIGNATURE_HEADER} carries t= more than once")
            if not value.isascii() or not value.isdigit():
                raise SignatureError("forged", f"{SIGNATURE_HEADER} t={value!r} is not a unix timestamp")
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value)
        # Other schemes (v0=, a future v2=) are ignored, as Stripe-style verifiers do.
    if timestamp is None:
        raise SignatureError("forged", f"{SIGNATURE_HEADER} has no t=<unix timestamp>")
    if not signatures:
        raise SignatureError("forged", f"{SIGNATURE_HEADER} has no v1=<signature>")
    return timestamp, signatures


def verify_bottlecrm(header: str | None, body: bytes, secret: str, *, now: float, tolerance_s: float) -> None:
    """Return when ``header`` is a valid, fresh signature of ``body``; raise SignatureError otherwise."""
    if not header or not header.strip():
        raise SignatureError("unsigned", f"no {SIGNATURE_HEADER} header")
    timestamp, signatures = _parse(header)
    expected = _digest(secret, body, timestamp)
    # Checked before freshness: an unsigned timestamp must not tell a prober anything.
    if not any(hmac.compare_digest(expected.encode(), sig.encode("utf-8", "replace")) for sig in signatures):
        raise SignatureError(
            "forged", f"{SIGNATURE_HEADER} does not match the body (wrong secret, or the body or t= was changed)"
        )
    if abs(now - timestamp) > tolerance_s:
        raise SignatureError(
            "stale",
            f"{SIGNATURE_HEADER} t={timestamp} is {abs(now - timestamp):.0f}s from now, more than the "
            f"{tolerance_s:.0f}s tolerance (a replay, or this host's clock is off)",
        )


# -- HubSpot, signature v3 -----------------------------------------------------------------
# Follows HubSpot's "Validating requests" page (developers.hubspot.com/docs/apps/legacy-apps/
# authentication/validating-requests, section "Validate the v3 request signature"):
# base64(HMAC-SHA256(client secret, method + URI + body + timestamp)), the timestamp being
# X-HubSpot-Request-Timestamp in milliseconds, and requests older than 5 minutes rejected.

HUBSPOT_SIGNATURE_HEADER = "X-HubSpot-Signature-v3"
HUBSPOT_TIMESTAMP_HEADER = "X-HubSpot-Request-Timestamp"

# The page lists these escapes as the ones to decode in the URI before hashing; any other
# escape (e.g. %20) stays as it is.
_HUBSPOT_URI_ESCAPES = {
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
_HUBSPOT_ESCAPE = re.compile("|".join(_HUBSPOT_URI_ESCAPES), re.IGNORECASE)


def hubspot_signed_uri(uri: str) -> str:
    """The URI as HubSpot hashes it: the documented escapes decoded, in one pass."""
    return _HUBSPOT_ESCAPE.sub(lambda m: _HUBSPOT_URI_ESCAPES[m.group(0).upper()], uri)


def sign_hubspot_v3(client_secret: str, method: str, uri: str, body: bytes, timestamp_ms: int) -> str:
    """The X-HubSpot-Signature-v3 value HubSpot sends for this request."""
    source = method.upper().encode() + hubspot_signed_uri(uri).encode() + body + str(timestamp_ms).encode()
    return base64.b64encode(hmac.new(client_secret.encode(), source, hashlib.sha256).digest()).decode()


def verify_hubspot_v3(
    header: str | None,
    timestamp_header: str | None,
    method: str,
    uri: str,
    body: bytes,
    client_secret: str,
    *,
    now: float,
    tolerance_s: float = 300.0,
) -> None:
    """Return when ``header`` signs this request and is fresh; raise SignatureError otherwise.

    ``uri`` is the full URL HubSpot called (scheme, host, path and query), ``now`` is in
    unix seconds. A timestamp more than ``tolerance_s`` away from now, in either
    direction, is stale: a future one means a clock is off, which must not widen the
    replay window.
    """
    if not header or not header.strip():
        raise SignatureError("unsigned", f"no {HUBSPOT_SIGNATURE_HEADER} header")
    if not timestamp_header or not timestamp_header.strip():
        raise SignatureError("unsigned", f"no {HUBSPOT_TIMESTAMP_HEADER} header")
    raw = timestamp_header.strip()
    if not raw.isascii() or not raw.isdigit():
        raise SignatureError("forged", f"{HUBSPOT_TIMESTAMP_HEADER} {raw!r} is not a unix time in milliseconds")
    expected = sign_hubspot_v3(client_secret, method, uri, body, int(raw))
    # Checked before freshness: an unsigned timestamp must not tell a prober anything.
    if not hmac.compare_digest(expected.encode(), header.strip().encode("utf-8", "replace")):
        raise SignatureError(
            "forged",
            f"{HUBSPOT_SIGNATURE_HEADER} does not match {method} {uri} and its body (wrong client secret, "
            "the body or timestamp was changed, or the configured public URL differs from the URL HubSpot calls)",
        )
    age = now - int(raw) / 1000
    if abs(age) > tolerance_s:
        raise SignatureError(
            "stale",
            f"{HUBSPOT_TIMESTAMP_HEADER} {raw} is {abs(age):.0f}s {'old' if age > 0 else 'ahead'}, more than the "
            f"{tolerance_s:.0f}s tolerance (a replay, or this host's clock is off)",
        )
