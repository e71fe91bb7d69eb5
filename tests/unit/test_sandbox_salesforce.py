"""The Salesforce sandbox over HTTP: OAuth, rows, collections, SOQL, Bulk API 2.0, limits, faults."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from replicator.sandbox.core import Running
from replicator.sandbox.salesforce import SalesforceSandbox, bulk, soql
from tests.fixtures.sandbox import start_sandbox

V = "/services/data/v62.0"
CREDENTIALS = {"grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "sandbox-secret"}


@dataclass
class Org:
    running: Running
    http: httpx.Client

    @property
    def sandbox(self) -> SalesforceSandbox:
        assert isinstance(self.running.sandbox, SalesforceSandbox)
        return self.running.sandbox

    def upsert(self, sobject: str, records: list[dict[str, Any]], all_or_none: bool = False) -> httpx.Response:
        body = {"allOrNone": all_or_none, "records": [{"attributes": {"type": sobject}, **r} for r in records]}
        return self.http.patch(f"{V}/composite/sobjects/{sobject}/ERP_Id__c", json=body)

    def query(self, q: str) -> httpx.Response:
        return self.http.get(f"{V}/query", params={"q": q})

    def sandbox_post(self, path: str, body: Any) -> httpx.Response:
        return self.http.post(f"/__sandbox/{path}", json=body)


# Creating an httpx client costs tens of milliseconds (TLS context); one-off calls share this one.
CONTROL = httpx.Client(timeout=5)


def token(running: Running, **form: str) -> str:
    resp = CONTROL.post(f"{running.url}/services/oauth2/token", data=form or CREDENTIALS)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["access_token"])


def connect(running: Running) -> Org:
    headers = {"Authorization": f"Bearer {token(running)}"}
    return Org(running, httpx.Client(base_url=running.url, headers=headers, timeout=5))


@pytest.fixture(scope="module")
def shared() -> Iterator[Running]:
    """One server for the module (stopping one takes ~0.5 s); `org` resets it before each test."""
    running = start_sandbox("salesforce", bulk_poll_delay_s=0.02, query_page_size=5)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def org(shared: Running) -> Iterator[Org]:
    for path in ("reset", "faults", "limits"):  # an empty body restores the defaults
        CONTROL.post(f"{shared.url}/__sandbox/{path}", json={}).raise_for_status()
    org = connect(shared)
    try:
        yield org
    finally:
        org.http.close()


@pytest.fixture
def make_org() -> Iterator[Any]:
    started: list[Org] = []

    def make(**options: Any) -> Org:
        org = connect(start_sandbox("salesforce", **options))
        started.append(org)
        return org

    yield make
    for org in started:
        org.http.close()
        org.running.stop()


def error(resp: httpx.Response) -> dict[str, Any]:
    body = resp.json()
    assert isinstance(body, list) and len(body) == 1, body
    return dict(body[0])


def accounts(org: Org, n: int, start: int = 0) -> list[str]:
    resp = org.upsert("Account", [{"ERP_Id__c": f"A{i}", "Name": f"Acme {i}"} for i in range(start, start + n)])
    assert all(r["success"] for r in resp.json()), resp.json()
    return [r["id"] for r in resp.json()]


def quote(value: str) -> str:
    """A SOQL string literal ("Quoted String Escape Sequences": backslash, quote, newline, tab...)."""
    escapes = {"\\": "\\\\", "'": "\\'", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
    return "'" + "".join(escapes.get(ch, ch) for ch in value) + "'"


def wait_job(org: Org, job_id: str, timeout: float = 10) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = org.http.get(f"{V}/jobs/ingest/{job_id}").json()
        if info["state"] in ("JobComplete", "Failed", "Aborted"):
            return dict(info)
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} did not finish: {info}")


def bulk_job(org: Org, csv_text: str, **job: Any) -> str:
    spec = {"object": "Contact", "operation": "upsert", "externalIdFieldName": "ERP_Id__c", "lineEnding": "LF", **job}
    created = org.http.post(f"{V}/jobs/ingest", json=spec)
    assert created.status_code == 200, created.text
    job_id = str(created.json()["id"])
    put = org.http.put(
        f"{V}/jobs/ingest/{job_id}/batches", content=csv_text.encode(), headers={"Content-Type": "text/csv"}
    )
    assert put.status_code == 201, put.text
    closed = org.http.patch(f"{V}/jobs/ingest/{job_id}", json={"state": "UploadComplete"})
    assert closed.json()["state"] == "UploadComplete"
    return job_id


# ---------------------------------------------------------------- OAuth


def test_client_credentials_token_has_the_documented_shape(org: Org) -> None:
    resp = CONTROL.post(f"{org.running.url}/services/oauth2/token", data=CREDENTIALS)
    body = resp.json()
    assert resp.status_code == 200
    assert {"access_token", "instance_url", "id", "token_type", "issued_at", "signature"} <= body.keys()
    assert body["instance_url"] == org.running.url
    assert body["token_type"] == "Bearer"
    expected = hmac.new(b"sandbox-secret", (body["id"] + body["issued_at"]).encode(), hashlib.sha256).digest()
    assert base64.b64decode(body["signature"]) == expected


def test_refresh_token_and_password_grants(org: Org) -> None:
    url = f"{org.running.url}/services/oauth2/token"
    refresh = {"grant_type": "refresh_token", "client_id": "sandbox-client", "refresh_token": "sandbox-refresh-token"}
    assert CONTROL.post(url, data=refresh).status_code == 200
    stale = CONTROL.post(url, data={**refresh, "refresh_token": "old"})
    assert (stale.status_code, stale.json()["error"]) == (400, "invalid_grant")
    password = {
        "grant_type": "password",
        "client_id": "sandbox-client",
        "client_secret": "sandbox-secret",
        "username": "integration@sandbox.example",
        "password": "sandbox-password",
    }
    assert CONTROL.post(url, data=password).status_code == 200
    wrong = CONTROL.post(url, data={**password, "password": "nope"})
    assert wrong.json() == {"error": "invalid_grant", "error_description": "authentication failure"}
    unsupported = CONTROL.post(url, data={**CREDENTIALS, "grant_type": "implicit"})
    assert unsupported.json()["error"] == "unsupported_grant_type"


def test_bad_client_secret_is_invalid_client(org: Org) -> None:
    resp = CONTROL.post(f"{org.running.url}/services/oauth2/token", data={**CREDENTIALS, "client_secret": "x"})
    assert resp.status_code == 400
    assert resp.json() == {"error": "invalid_client", "error_description": "invalid client credentials"}


def test_unknown_missing_and_expired_tokens_get_401(make_org: Any) -> None:
    org = make_org(token_ttl_s=1.0)
    assert org.http.get(f"{V}/limits").status_code == 200
    missing = CONTROL.get(f"{org.running.url}{V}/limits")
    assert missing.status_code == 401 and error(missing)["errorCode"] == "INVALID_AUTH_HEADER"
    unknown = CONTROL.get(f"{org.running.url}{V}/limits", headers={"Authorization": "Bearer nope"})
    assert unknown.status_code == 401
    assert unknown.json() == [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
    time.sleep(1.05)
    expired = org.http.get(f"{V}/limits")
    assert expired.status_code == 401 and error(expired)["errorCode"] == "INVALID_SESSION_ID"


def test_expire_tokens_endpoint_invalidates_sessions(org: Org) -> None:
    assert org.http.post("/__sandbox/expire_tokens").json()["expired"] >= 1
    assert org.http.get(f"{V}/limits").status_code == 401
    fresh = token(org.running)
    assert org.http.get(f"{V}/limits", headers={"Authorization": f"Bearer {fresh}"}).status_code == 200


# ---------------------------------------------------------------- limits and faults


def test_every_api_answer_reports_api_usage(org: Org) -> None:
    first = org.http.get(f"{V}/sobjects/Account/describe")
    token(org.running)  # the token endpoint is not an API request
    second = org.http.get(f"{V}/query", params={"q": "SELECT Id FROM Account"})
    failed = org.http.get(f"{V}/sobjects/Nope/describe")
    assert first.headers["Sforce-Limit-Info"] == "api-usage=1/100000"
    assert second.headers["Sforce-Limit-Info"] == "api-usage=2/100000"
    assert failed.headers["Sforce-Limit-Info"] == "api-usage=3/100000"
    assert org.http.get(f"{V}/limits").json()["DailyApiRequests"] == {"Max": 100000, "Remaining": 99996}


def test_daily_allocation_exhausted_is_403_request_limit_exceeded(make_org: Any) -> None:
    org = make_org(daily_allocation=2)
    assert org.http.get(f"{V}/limits").status_code == 200
    assert org.http.get(f"{V}/limits").status_code == 200
    over = org.http.get(f"{V}/limits")
    assert over.status_code == 403
    assert over.json() == [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
    assert over.headers["Sforce-Limit-Info"] == "api-usage=2/2"


def test_limits_daily_also_answers_403(make_org: Any) -> None:
    org = make_org()
    org.sandbox_post("limits", {"daily": 2})
    statuses = [org.http.get(f"{V}/limits").status_code for _ in range(3)]
    assert statuses[-1] == 403
    assert error(org.http.get(f"{V}/limits"))["errorCode"] == "REQUEST_LIMIT_EXCEEDED"


def test_burst_limit_answers_injected_429_with_retry_after(org: Org) -> None:
    org.sandbox_post("reset", {})  # forget the login, which counted against the window too
    org.sandbox_post("limits", {"burst": 2, "window_s": 30})
    statuses = [org.http.get(f"{V}/limits").status_code for _ in range(3)]
    assert statuses == [200, 200, 429]
    limited = org.http.get(f"{V}/limits")
    assert 0 < int(limited.headers["Retry-After"]) <= 30
    assert error(limited)["errorCode"] == "REQUEST_LIMIT_EXCEEDED"
    assert org.http.get("/__sandbox/stats").json()["limited_burst"] == 2


def test_injected_429_and_5xx(org: Org) -> None:
    org.sandbox_post("faults", {"rate_429": 1, "retry_after_s": 1.5})
    limited = org.http.get(f"{V}/limits")
    assert limited.status_code == 429 and limited.headers["Retry-After"] == "2"
    assert "Sforce-Limit-Info" in limited.headers
    org.sandbox_post("faults", {"rate_5xx": 1})
    broken = org.http.get(f"{V}/limits")
    assert broken.status_code == 500 and error(broken)["errorCode"] == "UNKNOWN_EXCEPTION"
    stats = org.http.get("/__sandbox/stats").json()
    assert (stats["injected_429"], stats["injected_5xx"]) == (1, 1)


def test_injected_timeout_reset_and_latency(org: Org) -> None:
    org.sandbox_post("faults", {"rate_timeout": 1, "timeout_s": 1})
    with pytest.raises(httpx.ReadTimeout):
        org.http.get(f"{V}/limits", timeout=0.2)
    org.sandbox_post("faults", {"rate_reset": 1})
    with pytest.raises(httpx.TransportError):
        org.http.get(f"{V}/limits")
    org.sandbox_post("faults", {"latency_ms": 150})
    started = time.monotonic()
    assert org.http.get(f"{V}/limits").status_code == 200
    assert time.monotonic() - started >= 0.15


# ---------------------------------------------------------------- rows


def test_create_get_update_delete_a_row(org: Org) -> None:
    created = org.http.post(f"{V}/sobjects/Account", json={"Name": "Acme", "Website": "acme.example"})
    assert created.status_code == 201
    record_id = created.json()["id"]
    assert created.json() == {"id": record_id, "success": True, "errors": []}
    assert len(record_id) == 18 and record_id.startswith("001")
    row = org.http.get(f"{V}/sobjects/Account/{record_id}").json()
    assert row["attributes"] == {"type": "Account", "url": f"{V}/sobjects/Account/{record_id}"}
    assert row["Name"] == "Acme" and row["IsDeleted"] is False
    assert row["SystemModstamp"].endswith("+0000") and len(row["SystemModstamp"]) == 28
    assert org.http.patch(f"{V}/sobjects/Account/{record_id}", json={"Phone": "+1 555"}).status_code == 204
    some = org.http.get(f"{V}/sobjects/Account/{record_id}", params={"fields": "Name,Phone"}).json()
    assert {k: v for k, v in some.items() if k != "attributes"} == {"Name": "Acme", "Phone": "+1 555"}
    assert org.http.delete(f"{V}/sobjects/Account/{record_id}").status_code == 204
    gone = org.http.get(f"{V}/sobjects/Account/{record_id}")
    assert gone.status_code == 404 and error(gone)["errorCode"] == "ENTITY_IS_DELETED"
    again = org.http.delete(f"{V}/sobjects/Account/{record_id}")
    assert again.status_code == 404 and error(again)["errorCode"] == "ENTITY_IS_DELETED"


def test_get_row_not_found_and_malformed_id(org: Org) -> None:
    missing = org.http.get(f"{V}/sobjects/Account/001000000000000AAA")
    assert missing.status_code == 404
    assert missing.json() == [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
    malformed = org.http.get(f"{V}/sobjects/Account/nope")
    assert malformed.status_code == 404 and "nope" in error(malformed)["message"]


def test_upsert_row_by_external_id_creates_then_updates(org: Org) -> None:
    url = f"{V}/sobjects/Account/ERP_Id__c/ERP%2F1%20x"
    created = org.http.patch(url, json={"Name": "Acme"})
    assert created.status_code == 201
    record_id = created.json()["id"]
    assert created.json() == {"id": record_id, "success": True, "errors": [], "created": True}
    before = org.http.get(url).json()
    assert before["ERP_Id__c"] == "ERP/1 x"
    time.sleep(0.005)
    updated = org.http.patch(url, json={"Name": "Acme Inc"})
    assert updated.status_code == 200
    assert updated.json() == {"id": record_id, "success": True, "errors": [], "created": False}
    after = org.http.get(url).json()
    assert after["Name"] == "Acme Inc" and after["LastModifiedDate"] > before["LastModifiedDate"]
    assert after["CreatedDate"] == before["CreatedDate"]
    assert org.http.get(f"{V}/sobjects/Account/ERP_Id__c/other").status_code == 404
    update_only = org.http.patch(f"{V}/sobjects/Account/ERP_Id__c/other", params={"updateOnly": "true"}, json={})
    assert update_only.status_code == 404 and len(org.sandbox.records("Account")) == 1
    assert org.http.delete(url).status_code == 204
    assert org.http.get(url).status_code == 404


@pytest.mark.parametrize(
    ("sobject", "body", "code", "fields"),
    [
        ("Account", {"Nme": "x"}, "INVALID_FIELD", ["Nme"]),
        ("Contact", {"FirstName": "Ann"}, "REQUIRED_FIELD_MISSING", ["LastName"]),
        (
            "Opportunity",
            {"Name": "x", "StageName": "New", "CloseDate": "soon"},
            "INVALID_TYPE_ON_FIELD_IN_RECORD",
            ["CloseDate"],
        ),
        ("Account", {"Name": "x" * 256}, "STRING_TOO_LONG", ["Name"]),
        ("Contact", {"LastName": "x", "Email": "not-an-email"}, "INVALID_EMAIL_ADDRESS", ["Email"]),
        ("Contact", {"LastName": "x", "AccountId": "003000000000001AAA"}, "FIELD_INTEGRITY_EXCEPTION", ["AccountId"]),
        ("Contact", {"LastName": "x", "AccountId": "001000000000009AAA"}, "INVALID_CROSS_REFERENCE_KEY", ["AccountId"]),
        (
            "Account",
            {"Name": "x", "CreatedDate": "2020-01-01T00:00:00Z"},
            "INVALID_FIELD_FOR_INSERT_UPDATE",
            ["CreatedDate"],
        ),
    ],
)
def test_upsert_row_validation_errors(
    org: Org, sobject: str, body: dict[str, Any], code: str, fields: list[str]
) -> None:
    resp = org.http.patch(f"{V}/sobjects/{sobject}/ERP_Id__c/E1", json=body)
    assert resp.status_code == 400
    assert (error(resp)["errorCode"], error(resp)["fields"]) == (code, fields)
    assert org.sandbox.records(sobject) == []


def test_upsert_row_request_errors(org: Org) -> None:
    not_json = org.http.patch(f"{V}/sobjects/Account/ERP_Id__c/E1", content=b"{nope")
    assert not_json.status_code == 400 and error(not_json)["errorCode"] == "JSON_PARSER_ERROR"
    not_external = org.http.patch(f"{V}/sobjects/Account/Name/E1", json={})
    assert not_external.status_code == 400 and error(not_external)["errorCode"] == "INVALID_FIELD"
    no_field = org.http.patch(f"{V}/sobjects/Account/Foo__c/E1", json={})
    assert no_field.status_code == 404 and error(no_field)["errorCode"] == "NOT_FOUND"
    no_object = org.http.patch(f"{V}/sobjects/Lead/ERP_Id__c/E1", json={})
    assert no_object.status_code == 404
    wrong_method = org.http.put(f"{V}/sobjects/Account/ERP_Id__c/E1", json={})
    assert wrong_method.status_code == 405 and error(wrong_method)["errorCode"] == "METHOD_NOT_ALLOWED"
    newer = org.http.get("/services/data/v99.0/limits")
    assert newer.status_code == 404


def test_external_id_stays_unique_across_records(org: Org) -> None:
    first, second = accounts(org, 2)
    clash = org.http.patch(f"{V}/sobjects/Account/{second}", json={"ERP_Id__c": "A0"})
    assert clash.status_code == 400
    assert error(clash)["errorCode"] == "DUPLICATE_VALUE" and first in error(clash)["message"]
    assert org.http.patch(f"{V}/sobjects/Account/{second}", json={"ERP_Id__c": "A1"}).status_code == 204


def test_describe_lists_fields_and_the_external_id(org: Org) -> None:
    body = org.http.get(f"{V}/sobjects/Opportunity/describe").json()
    fields = {f["name"]: f for f in body["fields"]}
    assert body["name"] == "Opportunity" and body["keyPrefix"] == "006"
    erp = fields["ERP_Id__c"]
    assert (erp["externalId"], erp["unique"], erp["type"], erp["length"]) == (True, True, "string", 255)
    assert fields["CloseDate"]["type"] == "date" and fields["CloseDate"]["nillable"] is False
    assert fields["Id"]["type"] == "id" and fields["Id"]["createable"] is False
    assert fields["AccountId"]["referenceTo"] == ["Account"]
    assert fields["SystemModstamp"]["updateable"] is False
    names = {s["name"] for s in org.http.get(f"{V}/sobjects").json()["sobjects"]}
    assert names == {"Account", "Contact", "Product2", "Opportunity"}


# ---------------------------------------------------------------- sObject Collections


def test_collection_upsert_answers_per_record_in_order(org: Org) -> None:
    accounts(org, 1)
    resp = org.upsert(
        "Account",
        [
            {"ERP_Id__c": "A0", "Name": "Renamed"},
            {"ERP_Id__c": "A1", "Name": "New"},
            {"ERP_Id__c": "A2"},
            {"Name": "no external id"},
        ],
    )
    assert resp.status_code == 200
    results = resp.json()
    assert [(r["success"], r.get("created")) for r in results] == [
        (True, False),
        (True, True),
        (False, None),
        (False, None),
    ]
    assert results[2]["errors"] == [
        {"statusCode": "REQUIRED_FIELD_MISSING", "message": "Required fields are missing: [Name]", "fields": ["Name"]}
    ]
    assert results[3]["errors"][0]["statusCode"] == "MISSING_ARGUMENT"
    assert sorted(r["Name"] for r in org.sandbox.records("Account")) == ["New", "Renamed"]


def test_collection_upsert_limits_and_shape_errors(org: Org) -> None:
    too_many = org.upsert("Account", [{"ERP_Id__c": f"A{i}", "Name": "x"} for i in range(201)])
    assert too_many.status_code == 400 and error(too_many)["errorCode"] == "EXCEEDED_ID_LIMIT"
    untyped = org.http.patch(f"{V}/composite/sobjects/Account/ERP_Id__c", json={"records": [{"Name": "x"}]})
    assert untyped.status_code == 400
    assert untyped.json() == [{"message": "Must send a concrete entity type.", "errorCode": "INVALID_TYPE"}]
    not_json = org.http.patch(f"{V}/composite/sobjects/Account/ERP_Id__c", content=b"[")
    assert error(not_json)["errorCode"] == "JSON_PARSER_ERROR"
    assert org.upsert("Account", [{"ERP_Id__c": f"A{i}", "Name": "x"} for i in range(200)]).status_code == 200


def test_collection_upsert_duplicate_external_ids_fail_every_sharer(org: Org) -> None:
    results = org.upsert(
        "Account", [{"ERP_Id__c": "D", "Name": "1"}, {"ERP_Id__c": "E", "Name": "2"}, {"ERP_Id__c": "D", "Name": "3"}]
    ).json()
    assert [r["success"] for r in results] == [False, True, False]
    assert results[0]["errors"] == [
        {"statusCode": "DUPLICATE_VALUE", "message": "Duplicate external id specified: D", "fields": ["ERP_Id__c"]}
    ]


def test_collection_upsert_all_or_none_rolls_everything_back(org: Org) -> None:
    accounts(org, 1)
    before = org.sandbox.records("Account")
    results = org.upsert(
        "Account",
        [{"ERP_Id__c": "A0", "Name": "Changed"}, {"ERP_Id__c": "A9", "Name": "New"}, {"ERP_Id__c": "A8"}],
        all_or_none=True,
    ).json()
    assert [r["success"] for r in results] == [False, False, False]
    assert results[0]["errors"][0]["statusCode"] == "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    assert results[2]["errors"][0]["statusCode"] == "REQUIRED_FIELD_MISSING"
    assert org.sandbox.records("Account") == before
    assert org.http.get(f"{V}/sobjects/Account/ERP_Id__c/A9").status_code == 404


def test_injected_partial_failures_fail_single_records(org: Org) -> None:
    org.sandbox_post("faults", {"rate_partial": 0.5, "seed": 7})
    results = org.upsert("Account", [{"ERP_Id__c": f"P{i}", "Name": "x"} for i in range(40)]).json()
    failed = [r for r in results if not r["success"]]
    assert 0 < len(failed) < 40
    assert {r["errors"][0]["statusCode"] for r in failed} == {"UNABLE_TO_LOCK_ROW"}
    assert len(org.sandbox.records("Account")) == 40 - len(failed)


def test_collection_create_update_get_delete(org: Org) -> None:
    created = org.http.post(
        f"{V}/composite/sobjects",
        json={
            "allOrNone": False,
            "records": [
                {"attributes": {"type": "Account"}, "Name": "Acme"},
                {"attributes": {"type": "Product2"}, "Name": "Widget", "IsActive": True},
            ],
        },
    ).json()
    account_id, product_id = (r["id"] for r in created)
    assert product_id.startswith("01t") and all(r["errors"] == [] for r in created)
    updated = org.http.patch(
        f"{V}/composite/sobjects",
        json={"records": [{"attributes": {"type": "Account"}, "Id": account_id, "Industry": "Retail"}]},
    ).json()
    assert updated == [{"id": account_id, "success": True, "errors": []}]
    contact = org.http.post(f"{V}/sobjects/Contact", json={"LastName": "Doe", "AccountId": account_id})
    assert contact.status_code == 201
    deleted = org.http.delete(
        f"{V}/composite/sobjects", params={"ids": f"{account_id},{account_id},nope", "allOrNone": "false"}
    ).json()
    assert deleted[0] == {"id": account_id, "success": True, "errors": []}
    assert deleted[1]["errors"][0]["statusCode"] == "ENTITY_IS_DELETED"
    assert deleted[2]["errors"][0]["statusCode"] == "MALFORMED_ID"
    got = org.http.get(f"{V}/composite/sobjects/Account", params={"ids": account_id, "fields": "Name,Industry"}).json()
    assert got == [None]
    products = org.http.get(f"{V}/composite/sobjects/Product2", params={"ids": product_id, "fields": "IsActive"})
    assert products.json()[0]["IsActive"] is True
    too_many = org.http.delete(f"{V}/composite/sobjects", params={"ids": ",".join([product_id] * 201)})
    assert error(too_many)["errorCode"] == "EXCEEDED_ID_LIMIT"


# ---------------------------------------------------------------- SOQL


def test_query_pages_with_next_records_url(org: Org) -> None:
    ids = accounts(org, 12)
    first = org.query("SELECT Id, Name FROM Account ORDER BY Id").json()
    assert (first["totalSize"], first["done"], len(first["records"])) == (12, False, 5)
    assert first["records"][0] == {
        "attributes": {"type": "Account", "url": f"{V}/sobjects/Account/{ids[0]}"},
        "Id": ids[0],
        "Name": "Acme 0",
    }
    seen = [r["Id"] for r in first["records"]]
    page = first
    while not page["done"]:
        assert page["nextRecordsUrl"].startswith(f"{V}/query/01g")
        page = org.http.get(page["nextRecordsUrl"]).json()
        seen += [r["Id"] for r in page["records"]]
    assert seen == ids and "nextRecordsUrl" not in page
    bad = org.http.get(f"{V}/query/01gXXXXXXXXXXXX-5")
    assert bad.status_code == 400 and error(bad)["errorCode"] == "INVALID_QUERY_LOCATOR"


def test_keyset_paging_over_one_shared_system_modstamp_neither_loops_nor_skips(org: Org) -> None:
    org.sandbox_post("clock", {"freeze": "2026-12-05T10:00:00.000Z"})
    ids = set(accounts(org, 23))
    org.sandbox_post("clock", {"freeze": None})
    stamps = {r["SystemModstamp"] for r in org.sandbox.records("Account")}
    assert stamps == {"2026-12-05T10:00:00.000+0000"}
    seen: list[str] = []
    cursor: tuple[str, str] | None = None
    for _ in range(10):
        where = ""
        if cursor is not None:
            t = cursor[0].replace("+0000", "Z")
            where = f" WHERE SystemModstamp > {t} OR (SystemModstamp = {t} AND Id > {quote(cursor[1])})"
        page = org.query(f"SELECT Id, SystemModstamp FROM Account{where} ORDER BY SystemModstamp, Id LIMIT 4").json()
        if not page["records"]:
            break
        seen += [r["Id"] for r in page["records"]]
        last = page["records"][-1]
        cursor = (last["SystemModstamp"], last["Id"])
    assert len(seen) == len(set(seen)) and set(seen) == ids


def test_query_operators(org: Org) -> None:
    org.upsert(
        "Account",
        [
            {"ERP_Id__c": "1", "Name": "Alpha", "Industry": "Retail", "NumberOfEmployees": 10},
            {"ERP_Id__c": "2", "Name": "beta_x", "Industry": None, "NumberOfEmployees": 200},
            {"ERP_Id__c": "3", "Name": "Gamma 100%", "Industry": "Banking", "AnnualRevenue": 1.5},
        ],
    )

    def names(where: str, order: str = "Name") -> list[str]:
        resp = org.query(f"SELECT Name FROM Account WHERE {where} ORDER BY {order}")
        assert resp.status_code == 200, resp.text
        return [r["Name"] for r in resp.json()["records"]]

    assert names("Name = 'ALPHA'") == ["Alpha"]
    assert names("Industry != 'Retail'") == ["beta_x", "Gamma 100%"]
    assert names("Industry = null") == ["beta_x"]
    assert names("Industry IN ('retail', 'Banking')") == ["Alpha", "Gamma 100%"]
    assert names("ERP_Id__c NOT IN ('1')") == ["beta_x", "Gamma 100%"]
    assert names("Name LIKE 'b%'") == ["beta_x"]
    assert names("Name LIKE '%\\_%'") == ["beta_x"]
    assert names("Name LIKE '%100\\%'") == ["Gamma 100%"]
    assert names("NumberOfEmployees >= 10 AND NumberOfEmployees < 200") == ["Alpha"]
    assert names("NOT Name = 'Alpha'") == ["beta_x", "Gamma 100%"]
    assert names("(Name = 'Alpha' OR Name = 'beta_x') AND NumberOfEmployees > 50") == ["beta_x"]
    assert names("AnnualRevenue > 1") == ["Gamma 100%"]
    assert names("IsDeleted = false", "Industry DESC NULLS LAST") == ["Alpha", "Gamma 100%", "beta_x"]
    assert names("IsDeleted = false", "Industry ASC") == ["beta_x", "Gamma 100%", "Alpha"]
    assert names("CreatedDate > 2020-01-01T00:00:00+02:00 AND CreatedDate < 2999-01-01T00:00:00.000Z") == [
        "Alpha",
        "beta_x",
        "Gamma 100%",
    ]
    limited = org.query("SELECT Name FROM Account ORDER BY Name LIMIT 1 OFFSET 1").json()
    assert [r["Name"] for r in limited["records"]] == ["beta_x"] and limited["totalSize"] == 1


def test_query_sees_neither_deleted_records_nor_other_objects(org: Org) -> None:
    ids = accounts(org, 3)
    org.http.delete(f"{V}/sobjects/Account/{ids[1]}")
    org.http.post(f"{V}/sobjects/Contact", json={"LastName": "Doe"})
    found = [r["Id"] for r in org.query("SELECT Id FROM Account").json()["records"]]
    assert found == [ids[0], ids[2]]


def test_query_string_escapes_match_exactly(org: Org) -> None:
    awkward = 'O\'Brien \\ "quoted"\n%_'
    org.upsert("Account", [{"ERP_Id__c": awkward, "Name": "awkward"}, {"ERP_Id__c": "O'Brien", "Name": "plain"}])
    resp = org.query(f"SELECT Name FROM Account WHERE ERP_Id__c = {quote(awkward)}")
    assert [r["Name"] for r in resp.json()["records"]] == ["awkward"]


@pytest.mark.parametrize(
    ("q", "code", "problem"),
    [
        ("SELECT Id FROM Account WHERE Name = 'a' AND Name = 'b' OR Name = 'c'", "MALFORMED_QUERY", "unexpected token"),
        ("SELECT Nope FROM Account", "INVALID_FIELD", "No such column 'Nope'"),
        ("SELECT Id FROM Lead", "INVALID_TYPE", "sObject type 'Lead' is not supported"),
        ("SELECT Account.Name FROM Contact", "INVALID_FIELD", "relationship"),
        ("SELECT COUNT() FROM Account", "MALFORMED_QUERY", "unexpected token"),
        ("SELECT Id FROM Account WHERE Name = 'open", "MALFORMED_QUERY", "unterminated"),
        ("SELECT Id FROM Account WHERE Name = 'a\\q'", "MALFORMED_QUERY", "Illegal escape sequence"),
        ("SELECT Id FROM Account OFFSET 2001", "NUMBER_OUTSIDE_VALID_RANGE", "2000"),
        ("SELECT Id FROM Account WHERE NumberOfEmployees = '5'", "INVALID_FIELD", "must be of type number"),
        ("SELECT Id FROM Account WHERE Name = 5", "INVALID_FIELD", "should be enclosed in quotes"),
        ("SELECT Id FROM Account WHERE SystemModstamp > 2026-12-05", "INVALID_FIELD", "dateTime"),
        ("SELECT Id FROM Account WHERE Id = 'abc'", "INVALID_QUERY_FILTER_OPERATOR", "invalid ID field"),
        ("SELECT Id, id FROM Account", "MALFORMED_QUERY", "duplicate field selected"),
        ("SELECT Id FROM Account LIMIT 5 WHERE Name = 'a'", "MALFORMED_QUERY", "unexpected token"),
        ("SELECT Id FROM Account WHERE CreatedDate > TODAY", "MALFORMED_QUERY", "unexpected token"),
        ("DELETE FROM Account", "MALFORMED_QUERY", "unexpected token"),
    ],
)
def test_query_errors_name_the_problem(org: Org, q: str, code: str, problem: str) -> None:
    resp = org.query(q)
    assert resp.status_code == 400
    assert error(resp)["errorCode"] == code
    assert problem in error(resp)["message"]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_quoted_strings_tokenize_back_to_their_value(value: str) -> None:
    tokens = soql.tokenize(f"SELECT Id FROM Account WHERE Name = {quote(value)}")
    assert tokens[-2].kind == "string" and tokens[-2].value[0] == value


# ---------------------------------------------------------------- Bulk API 2.0


def test_bulk_upsert_job_runs_to_completion_with_results(org: Org) -> None:
    job_id = bulk_job(org, 'ERP_Id__c,LastName,Email\nc1,"Doe, ""J""",a@b.example\nc2,,x@y.example\nc3,Roe,\n')
    info = wait_job(org, job_id)
    assert (info["state"], info["numberRecordsProcessed"], info["numberRecordsFailed"]) == ("JobComplete", 3, 1)
    assert info["jobType"] == "V2Ingest" and info["contentUrl"] == f"services/data/v62.0/jobs/ingest/{job_id}/batches"
    ok = org.http.get(f"{V}/jobs/ingest/{job_id}/successfulResults/")
    assert ok.headers["content-type"].startswith("text/csv")
    lines = ok.text.splitlines()
    assert lines[0] == '"sf__Id","sf__Created","ERP_Id__c","LastName","Email"'
    assert lines[1].endswith('"true","c1","Doe, ""J""","a@b.example"') and lines[1].startswith('"003')
    failed = org.http.get(f"{V}/jobs/ingest/{job_id}/failedResults/").text.splitlines()
    assert failed == [
        '"sf__Id","sf__Error","ERP_Id__c","LastName","Email"',
        '"","REQUIRED_FIELD_MISSING:Required fields are missing: [LastName]:LastName --","c2","","x@y.example"',
    ]
    assert {r["LastName"] for r in org.sandbox.records("Contact")} == {'Doe, "J"', "Roe"}

    second = bulk_job(org, "ERP_Id__c,LastName,Email\nc1,Doe,#N/A\nc3,,\n")
    assert wait_job(org, second)["numberRecordsFailed"] == 0
    created = org.http.get(f"{V}/jobs/ingest/{second}/successfulResults/").text
    assert '"false","c1"' in created  # updated, not created
    by_ext = {r["ERP_Id__c"]: r for r in org.sandbox.records("Contact")}
    assert by_ext["c1"]["Email"] is None  # #N/A nulls the field
    assert by_ext["c3"]["LastName"] == "Roe"  # an empty cell leaves the field alone


def test_bulk_insert_update_delete_operations_and_tab_delimiter(org: Org) -> None:
    inserted = bulk_job(
        org,
        "Name\tIsActive\tFamily\nWidget\ttrue\tHardware\nGadget\tfalse\t\n",
        object="Product2",
        operation="insert",
        externalIdFieldName=None,
        columnDelimiter="TAB",
    )
    assert wait_job(org, inserted)["numberRecordsProcessed"] == 2
    widget, gadget = org.sandbox.records("Product2")
    assert widget["IsActive"] is True and gadget["Family"] is None
    updated = bulk_job(
        org, f"Id,Name\n{widget['Id']},Widget 2\n", object="Product2", operation="update", externalIdFieldName=None
    )
    assert wait_job(org, updated)["numberRecordsFailed"] == 0
    deleted = bulk_job(
        org, f"Id\n{gadget['Id']}\n{gadget['Id']}\n", object="Product2", operation="delete", externalIdFieldName=None
    )
    info = wait_job(org, deleted)
    assert (info["numberRecordsProcessed"], info["numberRecordsFailed"]) == (2, 1)
    assert "ENTITY_IS_DELETED" in org.http.get(f"{V}/jobs/ingest/{deleted}/failedResults/").text
    assert [r["Name"] for r in org.sandbox.records("Product2")] == ["Widget 2"]


def test_bulk_job_failures_and_state_rules(org: Org) -> None:
    unknown = bulk_job(org, "ERP_Id__c,LastName,Bogus\nx,y,z\n")
    info = wait_job(org, unknown)
    assert info["state"] == "Failed" and "Field name not found : Bogus" in info["errorMessage"]
    crlf = bulk_job(org, "ERP_Id__c,LastName\r\nx,y\r\n")
    assert "LineEnding is invalid" in wait_job(org, crlf)["errorMessage"]
    assert org.http.delete(f"{V}/jobs/ingest/{crlf}").status_code == 204
    assert org.http.get(f"{V}/jobs/ingest/{crlf}").status_code == 404

    job_id = org.http.post(f"{V}/jobs/ingest", json={"object": "Contact", "operation": "insert"}).json()["id"]

    def upload() -> httpx.Response:
        csv_data = b"LastName\nA\nB\n"
        return org.http.put(f"{V}/jobs/ingest/{job_id}/batches", content=csv_data, headers={"Content-Type": "text/csv"})

    assert upload().status_code == 201
    twice = upload()
    assert twice.status_code == 400 and "Found multiple contents" in error(twice)["message"]
    assert org.http.delete(f"{V}/jobs/ingest/{job_id}").status_code == 400  # Open jobs cannot be deleted
    aborted = org.http.patch(f"{V}/jobs/ingest/{job_id}", json={"state": "Aborted"})
    assert aborted.json()["state"] == "Aborted"
    unprocessed = org.http.get(f"{V}/jobs/ingest/{job_id}/unprocessedrecords/").text.splitlines()
    assert unprocessed == ['"LastName"', '"A"', '"B"']
    assert org.sandbox.records("Contact") == []

    org.sandbox.bulk.max_upload_bytes = 8  # stands in for the documented 150 MB
    big_job = org.http.post(f"{V}/jobs/ingest", json={"object": "Contact", "operation": "insert"}).json()["id"]
    too_big = org.http.put(
        f"{V}/jobs/ingest/{big_job}/batches", content=b"LastName\nA\n", headers={"Content-Type": "text/csv"}
    )
    org.sandbox.bulk.max_upload_bytes = bulk.MAX_UPLOAD_BYTES
    assert too_big.status_code == 400 and "at most 8 bytes" in error(too_big)["message"]

    no_ext = org.http.post(f"{V}/jobs/ingest", json={"object": "Contact", "operation": "upsert"})
    assert no_ext.status_code == 400 and error(no_ext)["errorCode"] == "INVALIDJOB"
    listed = org.http.get(f"{V}/jobs/ingest").json()
    assert {j["id"] for j in listed["records"]} == {unknown, job_id, big_job} and listed["done"] is True


def test_bulk_partial_failures_and_internal_batches(org: Org) -> None:
    org.sandbox_post("faults", {"rate_partial": 0.1, "seed": 3})
    rows = "".join(f"E{i},Name {i}\n" for i in range(10_001))
    job_id = bulk_job(org, "ERP_Id__c,LastName\n" + rows)
    info = wait_job(org, job_id, timeout=30)
    assert info["numberRecordsProcessed"] == 10_001
    assert 0 < info["numberRecordsFailed"] < 2_000
    failed = org.http.get(f"{V}/jobs/ingest/{job_id}/failedResults/").text
    assert failed.count("UNABLE_TO_LOCK_ROW") == info["numberRecordsFailed"]
    assert org.http.get("/__sandbox/stats").json()["bulk_batches"] == 2
    assert len(org.sandbox.records("Contact")) == 10_001 - info["numberRecordsFailed"]


# ---------------------------------------------------------------- inspection


def test_inspection_lists_deleted_records_and_applies_user_edits(org: Org) -> None:
    ids = accounts(org, 2)
    org.http.delete(f"{V}/sobjects/Account/{ids[0]}")
    listed = org.http.get("/__sandbox/objects/Account").json()["results"]
    assert [(r["Id"], r["IsDeleted"]) for r in listed] == [(ids[0], True), (ids[1], False)]
    before = listed[1]
    time.sleep(0.005)
    edited = org.http.post(f"/__sandbox/objects/Account/{ids[1]}", json={"Name": "By a user"})
    assert edited.status_code == 200
    after = org.http.get(f"{V}/sobjects/Account/{ids[1]}").json()
    assert after["Name"] == "By a user" and after["SystemModstamp"] > before["SystemModstamp"]
    assert after["LastModifiedDate"] == after["SystemModstamp"]
    refused = org.http.post(f"/__sandbox/objects/Account/{ids[1]}", json={"Nope": 1})
    assert refused.status_code == 400 and "INVALID_FIELD" in refused.json()["error"]


def test_clock_freeze_and_reset(org: Org) -> None:
    frozen = org.sandbox_post("clock", {"freeze": "2026-12-05T10:00:00.000Z"}).json()
    assert frozen == {"now": "2026-12-05T10:00:00.000+0000", "frozen": True}
    accounts(org, 2)
    assert {r["CreatedDate"] for r in org.sandbox.records("Account")} == {"2026-12-05T10:00:00.000+0000"}
    assert org.sandbox_post("clock", {"freeze": "yesterday"}).status_code == 400
    assert org.sandbox_post("clock", {"freeze": None}).json()["frozen"] is False
    assert org.sandbox_post("reset", {}).json() == {"reset": True}
    assert org.sandbox.records("Account") == []
    assert org.sandbox.api_usage()[0] == 0
    assert org.http.get(f"{V}/limits").status_code == 200  # sessions survive a reset


def test_the_delete_log_lists_deletions_by_minute_within_fifteen_days(org: Org) -> None:
    from datetime import UTC, datetime, timedelta

    now = datetime.now(UTC)
    ids = [org.http.post(f"{V}/sobjects/Contact", json={"LastName": n}).json()["id"] for n in ("A", "B")]
    org.sandbox.freeze_clock(now - timedelta(minutes=3))
    try:
        assert org.http.delete(f"{V}/sobjects/Contact/{ids[0]}").status_code == 204
    finally:
        org.sandbox.freeze_clock(None)

    def deleted(start: datetime, end: datetime) -> httpx.Response:
        return org.http.get(
            f"{V}/sobjects/Contact/deleted/", params={"start": start.isoformat(), "end": end.isoformat()}
        )

    answer = deleted(now - timedelta(minutes=10), now)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert [r["id"] for r in body["deletedRecords"]] == [ids[0]]
    assert body["deletedRecords"][0]["deletedDate"].endswith("+0000")
    assert body["latestDateCovered"] == now.replace(second=0).strftime("%Y-%m-%dT%H:%M:00.000+0000")
    assert deleted(now - timedelta(minutes=2), now).json()["deletedRecords"] == []  # before the window
    assert (
        org.http.get(
            f"{V}/sobjects/Account/deleted/",
            params={"start": (now - timedelta(minutes=10)).isoformat(), "end": now.isoformat()},
        ).json()["deletedRecords"]
        == []
    )
    for start, end in [(now - timedelta(seconds=50), now), (now - timedelta(days=16), now)]:
        refused = deleted(start, end)
        assert refused.status_code == 400 and error(refused)["errorCode"] == "INVALID_REPLICATION_DATE"
    missing = org.http.get(f"{V}/sobjects/Contact/deleted/", params={"end": now.isoformat()})
    assert missing.status_code == 400 and "start" in error(missing)["message"]
    # The record read as a row is still gone, the live one is still there.
    assert org.http.get(f"{V}/sobjects/Contact/{ids[1]}").status_code == 200
