"""BottleCRM's webhook signature: ``X-BottleCRM-Signature: t=<unix>,v1=<hex HMAC-SHA256>``.

The HMAC covers ``"<t>." + raw body`` with the endpoint's secret, so neither the body
nor the timestamp can be changed without the secret. A header may carry several
``v1=`` values (one per secret while a secret is being rotated); one match is enough.
The timestamp bounds how long a captured request can be replayed.
"""

from __future__ import annotations

import hashlib
import hmac

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
