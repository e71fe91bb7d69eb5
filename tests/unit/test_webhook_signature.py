"""BottleCRM's webhook signature scheme, checked against BottleCRM's own signing code's output format."""

from __future__ import annotations

import hashlib
import hmac

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from replicator.sources.crm.signature import SignatureError, sign_bottlecrm, verify_bottlecrm

SECRET = "whsec_test_0123456789abcdef"
NOW = 1_764_000_000
BODY = b'{"id":"e1","event":"account.created","created_at":"2026-01-01T00:00:00+00:00","org_id":"o","data":{"id":"a1"}}'


def outcome(header: str | None, body: bytes = BODY, secret: str = SECRET, now: float = NOW) -> str:
    try:
        verify_bottlecrm(header, body, secret, now=now, tolerance_s=300)
    except SignatureError as exc:
        return exc.outcome
    return "ok"


def test_sign_matches_bottlecrm_scheme() -> None:
    # webhooks/tasks.py sign(): HMAC-SHA256(secret, "<t>." + body), hex, as "t=<t>,v1=<hex>".
    digest = hmac.new(SECRET.encode(), f"{NOW}.".encode() + BODY, hashlib.sha256).hexdigest()
    assert sign_bottlecrm(SECRET, BODY, NOW) == f"t={NOW},v1={digest}"
    assert outcome(f"t={NOW},v1={digest}") == "ok"


@pytest.mark.parametrize("header", [None, "", "   "])
def test_missing_header_is_unsigned(header: str | None) -> None:
    assert outcome(header) == "unsigned"


@pytest.mark.parametrize(
    "header",
    [
        "garbage",
        f"t={NOW}",  # no v1
        "v1=abc",  # no t
        f"t=soon,v1={'0' * 64}",
        f"t={NOW},t={NOW},v1={'0' * 64}",
        f"t={NOW},v1={'0' * 64}",
        f"t=١٢٣,v1={'0' * 64}",  # non-ASCII digits are not a timestamp
    ],
)
def test_malformed_or_wrong_header_is_forged(header: str) -> None:
    assert outcome(header) == "forged"


def test_wrong_secret_is_forged_and_message_names_the_header() -> None:
    with pytest.raises(SignatureError) as err:
        verify_bottlecrm(sign_bottlecrm("other", BODY, NOW), BODY, SECRET, now=NOW, tolerance_s=300)
    assert err.value.outcome == "forged"
    assert "X-BottleCRM-Signature" in err.value.message


def test_stale_either_way_beyond_tolerance() -> None:
    assert outcome(sign_bottlecrm(SECRET, BODY, NOW - 300)) == "ok"
    assert outcome(sign_bottlecrm(SECRET, BODY, NOW + 300)) == "ok"
    assert outcome(sign_bottlecrm(SECRET, BODY, NOW - 301)) == "stale"
    assert outcome(sign_bottlecrm(SECRET, BODY, NOW + 301)) == "stale"


def test_stale_but_forged_reports_forged() -> None:
    assert outcome(sign_bottlecrm("other", BODY, NOW - 10_000)) == "forged"


def test_any_of_several_v1_values_may_match_during_rotation() -> None:
    good = sign_bottlecrm(SECRET, BODY, NOW).split("v1=")[1]
    old = sign_bottlecrm("old-secret", BODY, NOW).split("v1=")[1]
    assert outcome(f"t={NOW},v1={old},v1={good}") == "ok"
    assert outcome(f"t={NOW}, v1={good}, v0=ignored") == "ok"
    assert outcome(f"t={NOW},v1={old}") == "forged"


@given(body=st.binary(max_size=512), t=st.integers(NOW - 300, NOW + 300), secret=st.text(min_size=1, max_size=40))
def test_good_signatures_pass(body: bytes, t: int, secret: str) -> None:
    verify_bottlecrm(sign_bottlecrm(secret, body, t), body, secret, now=NOW, tolerance_s=300)


@given(body=st.binary(max_size=256), tampered=st.binary(max_size=256))
def test_tampered_body_fails(body: bytes, tampered: bytes) -> None:
    assume(tampered != body)
    assert outcome(sign_bottlecrm(SECRET, body, NOW), body=tampered) == "forged"


@given(body=st.binary(max_size=256), delta=st.integers(-300, 300).filter(lambda d: d != 0))
def test_tampered_timestamp_fails(body: bytes, delta: int) -> None:
    digest = sign_bottlecrm(SECRET, body, NOW).split("v1=")[1]
    assert outcome(f"t={NOW + delta},v1={digest}", body=body) == "forged"


@given(body=st.binary(max_size=256), position=st.integers(0, 63), char=st.sampled_from("0123456789abcdef"))
def test_tampered_signature_fails(body: bytes, position: int, char: str) -> None:
    digest = sign_bottlecrm(SECRET, body, NOW).split("v1=")[1]
    assume(digest[position] != char)
    forged = digest[:position] + char + digest[position + 1 :]
    assert outcome(f"t={NOW},v1={forged}", body=body) == "forged"


@given(body=st.binary(max_size=256), secret=st.text(min_size=1, max_size=40))
def test_other_secret_fails(body: bytes, secret: str) -> None:
    assume(secret != SECRET)
    assert outcome(sign_bottlecrm(secret, body, NOW), body=body) == "forged"
