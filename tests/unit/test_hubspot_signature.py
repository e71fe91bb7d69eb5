"""HubSpot's v3 webhook signature: HMAC-SHA256 over method + URI + body + timestamp, base64."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from replicator.sources.crm.signature import (
    SignatureError,
    hubspot_signed_uri,
    sign_hubspot_v3,
    verify_hubspot_v3,
)

SECRET = "client-secret-1234"
URI = "https://erp.example.com/webhooks/hubspot"
BODY = b'[{"eventId":1,"subscriptionType":"contact.creation","objectId":123}]'
NOW = 1_764_000_000.0
TS = int(NOW * 1000)


def test_signature_is_base64_hmac_of_the_concatenation() -> None:
    source = f"POST{URI}".encode() + BODY + str(TS).encode()
    expected = base64.b64encode(hmac.new(SECRET.encode(), source, hashlib.sha256).digest()).decode()
    assert sign_hubspot_v3(SECRET, "POST", URI, BODY, TS) == expected


def test_documented_escapes_are_decoded_others_kept() -> None:
    assert hubspot_signed_uri("https://h/p%3Fa%3ab%2F%40x%21%24%27%28%29%2A%2C%3B?q=a%20b") == (
        "https://h/p?a:b/@x!$'()*,;?q=a%20b"
    )
    # A signature over the decoded form verifies the encoded URL we see.
    signature = sign_hubspot_v3(SECRET, "POST", "https://h/hook?x=a:b", BODY, TS)
    verify_hubspot_v3(signature, str(TS), "POST", "https://h/hook?x=a%3Ab", BODY, SECRET, now=NOW)


def test_good_signature_passes_within_tolerance() -> None:
    signature = sign_hubspot_v3(SECRET, "POST", URI, BODY, TS - 299_000)
    verify_hubspot_v3(signature, str(TS - 299_000), "POST", URI, BODY, SECRET, now=NOW)


@pytest.mark.parametrize(
    ("header", "timestamp", "outcome"),
    [
        (None, str(TS), "unsigned"),
        ("  ", str(TS), "unsigned"),
        ("sig", None, "unsigned"),
        ("sig", "12:00", "forged"),
        (sign_hubspot_v3("other-secret", "POST", URI, BODY, TS), str(TS), "forged"),
        (sign_hubspot_v3(SECRET, "POST", URI, BODY, TS), str(TS + 1), "forged"),
        (sign_hubspot_v3(SECRET, "POST", URI + "/x", BODY, TS), str(TS), "forged"),
        (sign_hubspot_v3(SECRET, "POST", URI, BODY, TS - 301_000), str(TS - 301_000), "stale"),
        (sign_hubspot_v3(SECRET, "POST", URI, BODY, TS + 301_000), str(TS + 301_000), "stale"),
    ],
)
def test_bad_requests_are_refused_with_their_outcome(header: str | None, timestamp: str | None, outcome: str) -> None:
    with pytest.raises(SignatureError) as caught:
        verify_hubspot_v3(header, timestamp, "POST", URI, BODY, SECRET, now=NOW)
    assert caught.value.outcome == outcome


def test_changed_body_is_forged() -> None:
    signature = sign_hubspot_v3(SECRET, "POST", URI, BODY, TS)
    with pytest.raises(SignatureError) as caught:
        verify_hubspot_v3(signature, str(TS), "POST", URI, BODY.replace(b"123", b"124"), SECRET, now=NOW)
    assert caught.value.outcome == "forged"
