"""The Salesforce sink against a scripted org: OAuth, collection upserts and deletes, limits, errors."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from replicator.ops.metrics import REGISTRY
from replicator.sinks.base import Action, CrmError, Operation, Outcome
from replicator.sinks.salesforce import SalesforceSink
from replicator.sinks.salesforce.client import REQUEST_LIMIT_WAIT_S
from replicator.sinks.salesforce.headers import parse_limit_info
from replicator.state.budget import BudgetExhausted
from tests.unit.test_salesforce_support import API, INSTANCE, LOGIN, FakeOrg, RecordingBudget, body, make_sink, sf_error


class NoLedger:
    def begin_create(self, op: Operation) -> bool:
        raise AssertionError("the Salesforce sink must not need the intent ledger")

    def finish_create(self, op: Operation, crm_id: str) -> None:
        raise AssertionError("the Salesforce sink must not need the intent ledger")


def upsert(ext: str, obj: str = "account", **fields: Any) -> Operation:
    return Operation(entity="e", object=obj, action=Action.UPSERT, external_id=ext, record=fields)


def account_record(crm_id: str, ext: str) -> dict[str, Any]:
    return {"attributes": {"type": "Account"}, "Id": crm_id, "Name": "Acme", "ERP_Id__c": ext}


# ---------------------------------------------------------------- OAuth


def test_client_credentials_token_and_calls_go_to_instance_url() -> None:
    org = FakeOrg()
    org.route("GET", f"{API}/sobjects/Account/001A", lambda r: httpx.Response(200, json=account_record("001A", "C-1")))
    sink = make_sink(org)
    record = sink.get("account", "001A")
    assert record == {"Id": "001A", "Name": "Acme", "ERP_Id__c": "C-1", "external_id": "C-1", "id": "001A"}
    assert org.token_forms == [{"grant_type": "client_credentials", "client_id": "cid", "client_secret": "secret"}]
    assert str(org.api_requests()[0].url).startswith(INSTANCE)
    assert org.api_requests()[0].headers["authorization"] == "Bearer tok-1"


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"refresh_token": "rt"}, {"grant_type": "refresh_token", "refresh_token": "rt"}),
        (
            {"username": "u@x", "password": "pwTOKEN"},
            {"grant_type": "password", "username": "u@x", "password": "pwTOKEN"},
        ),
    ],
)
def test_refresh_token_and_password_flows(kwargs: dict[str, str], expected: dict[str, str]) -> None:
    org = FakeOrg()
    sink = make_sink(org, **kwargs)
    assert sink.check()[0][1] is True
    assert org.token_forms == [{"client_id": "cid", "client_secret": "secret", **expected}]


def test_token_endpoint_error_is_permanent_and_names_the_setting() -> None:
    org = FakeOrg()
    org.token_answer = lambda form: httpx.Response(
        400, json={"error": "invalid_client", "error_description": "invalid client credentials"}
    )
    sink = make_sink(org)
    name, ok, detail = sink.check()[0]
    assert (name, ok) == ("credentials", False)
    assert "invalid_client" in detail and "crm.client_secret" in detail
    [result] = sink.apply([upsert("C-1", Name="Acme")], NoLedger())
    assert result.outcome is Outcome.PERMANENT and "crm.client_id" in (result.error or "")


def test_token_endpoint_5xx_is_transient() -> None:
    org = FakeOrg()
    org.token_answer = lambda form: httpx.Response(503, text="down")
    [result] = make_sink(org).apply([upsert("C-1", Name="Acme")], NoLedger())
    assert result.outcome is Outcome.TRANSIENT


def test_invalid_session_refreshes_once_across_threads() -> None:
    threads = 6
    org = FakeOrg()
    org.route("GET", f"{API}/sobjects/Account/001A", lambda r: httpx.Response(200, json=account_record("001A", "C-1")))
    sink = make_sink(org, concurrency=threads)
    sink.get("account", "001A")  # token 1
    org.expire_tokens()
    # Hold every thread's 401 until all of them hold the stale token, so all of them ask for a renewal.
    barrier = threading.Barrier(threads, timeout=10)
    org.on_stale = barrier.wait
    with ThreadPoolExecutor(threads) as pool:
        records = list(pool.map(lambda _: sink.get("account", "001A"), range(threads)))
    assert all(r is not None and r["Id"] == "001A" for r in records)
    assert len(org.token_forms) == 2  # the first token and exactly one renewal


def test_second_401_after_renewal_is_permanent() -> None:
    org = FakeOrg()
    org.route("GET", f"{API}/sobjects/Account/001A", lambda r: sf_error(401, "INVALID_SESSION_ID"))
    sink = make_sink(org)
    with pytest.raises(CrmError) as err:
        sink.get("account", "001A")
    assert err.value.result.outcome is Outcome.PERMANENT and "API Enabled" in (err.value.result.error or "")
    assert len(org.token_forms) == 2  # renewed once, not in a loop


# ---------------------------------------------------------------- upserts


def test_collection_upsert_with_mixed_per_record_results() -> None:
    org = FakeOrg()
    seen: list[Any] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(body(request))
        return httpx.Response(
            200,
            json=[
                {"id": "001A", "success": True, "created": True, "errors": []},
                {
                    "success": False,
                    "errors": [
                        {
                            "statusCode": "REQUIRED_FIELD_MISSING",
                            "message": "Required fields are missing: [Name]",
                            "fields": ["Name"],
                        }
                    ],
                },
                {
                    "success": False,
                    "errors": [
                        {
                            "statusCode": "UNABLE_TO_LOCK_ROW",
                            "message": "unable to obtain exclusive access",
                            "fields": [],
                        }
                    ],
                },
                {"id": "001D", "success": True, "created": False, "errors": []},
            ],
        )

    org.route("PATCH", f"{API}/composite/sobjects/Account/ERP_Id__c", answer)
    sink = make_sink(org)
    ops = [upsert("C-1", Name="One"), upsert("C-2"), upsert("C-3", Name="Three"), upsert("C-4", Name="Four", Id="x")]
    results = sink.apply(ops, NoLedger())
    assert [(r.outcome, r.crm_id, r.created) for r in results] == [
        (Outcome.OK, "001A", True),
        (Outcome.PERMANENT, None, False),
        (Outcome.TRANSIENT, None, False),
        (Outcome.OK, "001D", False),
    ]
    assert "REQUIRED_FIELD_MISSING" in (results[1].error or "") and "'C-2'" in (results[1].error or "")
    assert seen[0]["allOrNone"] is False
    assert seen[0]["records"][0] == {"attributes": {"type": "Account"}, "Name": "One", "ERP_Id__c": "C-1"}
    assert "Id" not in seen[0]["records"][3]  # collection upserts take external ids only


def test_upserts_split_into_calls_of_at_most_200_in_order() -> None:
    org = FakeOrg()
    sizes: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        records = body(request)["records"]
        sizes.append(len(records))
        return httpx.Response(
            200, json=[{"id": "003" + r["ERP_Id__c"], "success": True, "created": True, "errors": []} for r in records]
        )

    org.route("PATCH", f"{API}/composite/sobjects/Contact/ERP_Id__c", answer)
    sink = make_sink(org, concurrency=3)
    ops = [upsert(f"P-{n}", "contact", LastName=f"L{n}", AccountId="001A") for n in range(450)]
    results = sink.apply(ops, NoLedger())
    assert sorted(sizes) == [50, 200, 200]
    assert [r.crm_id for r in results] == [f"003P-{n}" for n in range(450)]
    assert all(r.outcome is Outcome.OK for r in results)


def test_groups_keep_the_callers_parent_first_order() -> None:
    org = FakeOrg()
    order: list[str] = []

    def answer(sobject: str) -> Any:
        def handler(request: httpx.Request) -> httpx.Response:
            order.append(sobject)
            n = len(body(request)["records"])
            return httpx.Response(200, json=[{"id": "x", "success": True, "created": False, "errors": []}] * n)

        return handler

    org.route("PATCH", f"{API}/composite/sobjects/Account/ERP_Id__c", answer("Account"))
    org.route("PATCH", f"{API}/composite/sobjects/Contact/ERP_Id__c", answer("Contact"))
    make_sink(org).apply([upsert("C-1", Name="A"), upsert("P-1", "contact", LastName="B")], NoLedger())
    assert order == ["Account", "Contact"]


def test_unknown_object_and_empty_external_id_are_permanent() -> None:
    results = make_sink(FakeOrg()).apply([upsert("X", "line_item"), upsert("")], NoLedger())
    assert [r.outcome for r in results] == [Outcome.PERMANENT, Outcome.PERMANENT]
    assert "line_item" in (results[0].error or "")


# ---------------------------------------------------------------- limits and errors


def test_request_limit_exceeded_is_transient_with_a_wait_and_reported() -> None:
    org = FakeOrg()
    org.route(
        "PATCH",
        f"{API}/composite/sobjects/Account/ERP_Id__c",
        lambda r: sf_error(403, "REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
    )
    budget = RecordingBudget()
    [result] = make_sink(org, budget=budget).apply([upsert("C-1", Name="A")], NoLedger())
    assert result.outcome is Outcome.TRANSIENT and result.retry_after == REQUEST_LIMIT_WAIT_S
    assert (403, REQUEST_LIMIT_WAIT_S) in budget.reports


def test_other_403_is_permanent() -> None:
    org = FakeOrg()
    org.route("PATCH", f"{API}/composite/sobjects/Account/ERP_Id__c", lambda r: sf_error(403, "INSUFFICIENT_ACCESS"))
    [result] = make_sink(org).apply([upsert("C-1", Name="A")], NoLedger())
    assert result.outcome is Outcome.PERMANENT and "INSUFFICIENT_ACCESS" in (result.error or "")


@pytest.mark.parametrize(
    ("response", "outcome", "retry_after"),
    [
        (httpx.Response(429, headers={"Retry-After": "7"}, text="slow down"), Outcome.TRANSIENT, 7.0),
        (httpx.Response(503, text="maintenance"), Outcome.TRANSIENT, None),
        (sf_error(400, "INVALID_FIELD", "No such column 'Foo__c'"), Outcome.PERMANENT, None),
        (sf_error(400, "MALFORMED_QUERY", "unexpected token"), Outcome.PERMANENT, None),
    ],
)
def test_status_classification(response: httpx.Response, outcome: Outcome, retry_after: float | None) -> None:
    org = FakeOrg()
    org.route("PATCH", f"{API}/composite/sobjects/Account/ERP_Id__c", lambda r: response)
    [result] = make_sink(org).apply([upsert("C-1", Name="A")], NoLedger())
    assert (result.outcome, result.retry_after) == (outcome, retry_after)


def test_transport_error_is_transient_and_reported_as_status_0() -> None:
    org = FakeOrg()

    def boom(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    org.route("PATCH", f"{API}/composite/sobjects/Account/ERP_Id__c", boom)
    budget = RecordingBudget()
    [result] = make_sink(org, budget=budget).apply([upsert("C-1", Name="A")], NoLedger())
    assert result.outcome is Outcome.TRANSIENT and "ConnectError" in (result.error or "")
    assert budget.reports[-1] == (0, None)


def test_budget_exhausted_is_transient_with_its_wait() -> None:
    budget = RecordingBudget(refuse=BudgetExhausted("daily quota used", 1234.0))
    org = FakeOrg()
    [result] = make_sink(org, budget=budget).apply([upsert("C-1", Name="A")], NoLedger())
    assert (result.outcome, result.retry_after) == (Outcome.TRANSIENT, 1234.0)
    assert org.requests == []  # nothing was sent, not even a token request


def test_every_request_goes_through_the_budget() -> None:
    org = FakeOrg()
    org.route("GET", f"{API}/sobjects/Account/001A", lambda r: httpx.Response(200, json=account_record("001A", "C-1")))
    budget = RecordingBudget()
    sink = make_sink(org, budget=budget)
    sink.priority = sink.priority.BACKFILL
    sink.get("account", "001A")
    assert len(budget.acquired) == len(org.requests) == 2  # token + GET
    assert [s for s, _ in budget.reports] == [200, 200]
    assert set(budget.acquired) == {sink.priority}


def test_limit_info_header_parsing_and_gauges() -> None:
    assert parse_limit_info("api-usage=18/5000") == (18, 5000)
    assert parse_limit_info("api-usage=25/5000; per-app-api-usage=17/250(appName=sample-connected-app)") == (25, 5000)
    assert parse_limit_info("per-app-api-usage=17/250(appName=x)") is None
    assert parse_limit_info(None) is None
    org = FakeOrg()
    org.limit_info = "api-usage=4321/100000; per-app-api-usage=17/250(appName=x)"
    org.route("GET", f"{API}/sobjects/Account/001A", lambda r: httpx.Response(200, json=account_record("001A", "C-1")))
    budget = RecordingBudget()
    make_sink(org, budget=budget).get("account", "001A")
    assert REGISTRY.get_sample_value("replicator_crm_api_daily_used", {"crm": "salesforce"}) == 4321
    assert budget.daily and set(budget.daily) == {4321}  # the org's own count corrects the budget's
    assert REGISTRY.get_sample_value("replicator_crm_api_daily_limit", {"crm": "salesforce"}) == 100000


# ---------------------------------------------------------------- deletes and archives


def test_delete_resolves_external_ids_and_treats_deleted_as_done() -> None:
    org = FakeOrg()
    queries: list[str] = []
    deleted: list[str] = []

    def query(request: httpx.Request) -> httpx.Response:
        queries.append(request.url.params["q"])
        return httpx.Response(
            200,
            json={
                "done": True,
                "totalSize": 2,
                "records": [
                    {"attributes": {"type": "Account"}, "Id": "001B", "ERP_Id__c": "C-2"},
                    {"attributes": {"type": "Account"}, "Id": "001C", "ERP_Id__c": "C-'3"},
                ],
            },
        )

    def delete(request: httpx.Request) -> httpx.Response:
        assert request.url.params["allOrNone"] == "false"
        ids = request.url.params["ids"].split(",")
        deleted.extend(ids)
        answers = {
            "001A": {"id": "001A", "success": True, "errors": []},
            "001B": {
                "id": "001B",
                "success": False,
                "errors": [{"statusCode": "ENTITY_IS_DELETED", "message": "entity is deleted", "fields": []}],
            },
            "001C": {
                "id": "001C",
                "success": False,
                "errors": [{"statusCode": "DELETE_FAILED", "message": "has open cases", "fields": []}],
            },
        }
        return httpx.Response(200, json=[answers[i] for i in ids])

    org.route("GET", f"{API}/query", query)
    org.route("DELETE", f"{API}/composite/sobjects", delete)
    ops = [
        Operation("e", "account", Action.DELETE, "C-1", crm_id="001A"),
        Operation("e", "account", Action.DELETE, "C-2"),
        Operation("e", "account", Action.DELETE, "C-'3"),
        Operation("e", "account", Action.DELETE, "C-4"),  # never reached the CRM
    ]
    results = make_sink(org).apply(ops, NoLedger())
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.OK, Outcome.PERMANENT, Outcome.OK]
    assert "DELETE_FAILED" in (results[2].error or "")
    assert sorted(deleted) == ["001A", "001B", "001C"]
    assert queries == ["SELECT Id, ERP_Id__c FROM Account WHERE ERP_Id__c IN ('C-2', 'C-\\'3', 'C-4')"]


def test_archive_product_deactivates_and_archive_account_deletes() -> None:
    org = FakeOrg()
    upserted: list[Any] = []
    updated: list[Any] = []
    deleted: list[str] = []

    def product_upsert(request: httpx.Request) -> httpx.Response:
        upserted.extend(body(request)["records"])
        return httpx.Response(200, json=[{"id": "01tA", "success": True, "created": False, "errors": []}])

    def update(request: httpx.Request) -> httpx.Response:
        updated.extend(body(request)["records"])
        return httpx.Response(200, json=[{"id": "01tB", "success": True, "errors": []}])

    def delete(request: httpx.Request) -> httpx.Response:
        deleted.extend(request.url.params["ids"].split(","))
        return httpx.Response(200, json=[{"id": "001A", "success": True, "errors": []}])

    org.route("PATCH", f"{API}/composite/sobjects/Product2/ERP_Id__c", product_upsert)
    org.route("PATCH", f"{API}/composite/sobjects", update)
    org.route("DELETE", f"{API}/composite/sobjects", delete)
    ops = [
        Operation("p", "product", Action.ARCHIVE, "SKU-1", record={"Name": "Widget", "IsActive": True}),
        Operation("p", "product", Action.ARCHIVE, "SKU-2", crm_id="01tB"),
        Operation("c", "account", Action.ARCHIVE, "C-1", crm_id="001A"),
    ]
    results = make_sink(org).apply(ops, NoLedger())
    assert [r.outcome for r in results] == [Outcome.OK] * 3
    assert upserted == [{"attributes": {"type": "Product2"}, "Name": "Widget", "IsActive": False, "ERP_Id__c": "SKU-1"}]
    assert updated == [{"attributes": {"type": "Product2"}, "id": "01tB", "IsActive": False}]
    assert deleted == ["001A"]
    sink = make_sink(org)
    assert sink.is_archived("product", {"IsActive": False}) and not sink.is_archived("account", {"IsActive": False})


# ---------------------------------------------------------------- reads and setup


def test_lookup_by_path_by_soql_and_query_paging() -> None:
    org = FakeOrg()
    org.route(
        "GET",
        f"{API}/sobjects/Account/describe",
        lambda r: httpx.Response(
            200,
            json={
                "fields": [
                    {"name": "Id", "type": "id"},
                    {"name": "Name", "type": "string"},
                    {"name": "BillingAddress", "type": "address"},
                    {"name": "ERP_Id__c", "type": "string", "externalId": True},
                ]
            },
        ),
    )
    org.route(
        "GET",
        f"{API}/sobjects/Account/ERP_Id__c/C-1",
        lambda r: httpx.Response(200, json=account_record("001A", "C-1")),
    )
    org.route("GET", f"{API}/sobjects/Account/ERP_Id__c/C-9", lambda r: sf_error(404, "NOT_FOUND"))
    queries: list[str] = []

    def query(request: httpx.Request) -> httpx.Response:
        queries.append(request.url.params["q"])
        if "WHERE" in request.url.params["q"]:
            return httpx.Response(200, json={"done": True, "records": [account_record("001B", "a/b")]})
        return httpx.Response(
            200,
            json={
                "done": False,
                "nextRecordsUrl": f"{API}/query/01gNEXT-2000",
                "records": [account_record("001B", "a/b")],
            },
        )

    org.route("GET", f"{API}/query", query)
    org.route(
        "GET",
        f"{API}/query/01gNEXT-2000",
        lambda r: httpx.Response(200, json={"done": True, "records": [account_record("001C", "x")]}),
    )
    sink = make_sink(org)
    assert sink.lookup("account", "C-1")["Id"] == "001A"  # type: ignore[index]
    assert sink.lookup("account", "C-9") is None
    found = sink.lookup("account", "a/b")  # a slash cannot ride in a URL path
    assert found is not None and found["external_id"] == "a/b"
    assert queries == ["SELECT Id, Name, ERP_Id__c FROM Account WHERE ERP_Id__c = 'a/b' LIMIT 2"]
    assert [r["Id"] for r in sink.iter_records("account")] == ["001B", "001C"]
    assert queries[1] == "SELECT Id, Name, ERP_Id__c FROM Account"


@pytest.mark.parametrize("dots", [".", ".."])
def test_lookup_of_dot_segments_goes_by_soql(dots: str) -> None:
    # In a URL path "." and ".." resolve to another resource (the sObject, its describe...).
    org = FakeOrg()
    fields = {"fields": [{"name": "Id"}, {"name": "ERP_Id__c", "externalId": True}]}
    org.route("GET", f"{API}/sobjects/Account/describe", lambda r: httpx.Response(200, json=fields))
    for wrong in (f"{API}/sobjects/Account", f"{API}/sobjects/Account/ERP_Id__c"):
        org.route("GET", wrong, lambda r: httpx.Response(200, json=account_record("001WRONG", "other")))
    queries: list[str] = []

    def query(request: httpx.Request) -> httpx.Response:
        queries.append(request.url.params["q"])
        return httpx.Response(200, json={"done": True, "records": [account_record("001D", dots)]})

    org.route("GET", f"{API}/query", query)
    found = make_sink(org).lookup("account", dots)
    assert found is not None and found["Id"] == "001D" and found["external_id"] == dots
    assert queries == [f"SELECT Id, ERP_Id__c FROM Account WHERE ERP_Id__c = '{dots}' LIMIT 2"]


def test_check_and_ensure_setup_name_the_missing_external_id_field() -> None:
    org = FakeOrg()
    fields = {
        "Account": [{"name": "ERP_Id__c", "externalId": True}],
        "Contact": [{"name": "ERP_Id__c", "externalId": False}],
        "Product2": [],
        "Opportunity": [{"name": "ERP_Id__c", "externalId": True}],
    }
    for sobject, fs in fields.items():
        org.route(
            "GET", f"{API}/sobjects/{sobject}/describe", lambda r, fs=fs: httpx.Response(200, json={"fields": fs})
        )
    sink = make_sink(org)
    checks = {name: (ok, detail) for name, ok, detail in sink.check()}
    assert checks["external id Account.ERP_Id__c"][0] is True
    assert checks["external id Contact.ERP_Id__c"][0] is False
    assert "not an External ID" in checks["external id Contact.ERP_Id__c"][1]
    assert "Object Manager → Product2" in checks["external id Product2.ERP_Id__c"][1]
    with pytest.raises(CrmError) as err:
        sink.ensure_setup()
    assert "Contact.ERP_Id__c" in str(err.value) and "Product2 has no field ERP_Id__c" in str(err.value)


def refusing_bogus_fields() -> tuple[FakeOrg, list[int]]:
    """An org that refuses a whole collection naming the unknown field Bogus__c, as Salesforce
    does (400 INVALID_FIELD); the sizes of the collections it was sent."""
    org = FakeOrg()
    calls: list[int] = []

    def answer(request: httpx.Request) -> httpx.Response:
        records = body(request)["records"]
        calls.append(len(records))
        if any("Bogus__c" in r for r in records):
            return sf_error(400, "INVALID_FIELD", "No such column 'Bogus__c' on sobject of type Account")
        return httpx.Response(
            200, json=[{"id": "001" + r["ERP_Id__c"], "success": True, "created": True, "errors": []} for r in records]
        )

    org.route("PATCH", f"{API}/composite/sobjects/Account/ERP_Id__c", answer)
    return org, calls


def test_a_refused_collection_is_halved_until_the_bad_records_stand_alone() -> None:
    org, calls = refusing_bogus_fields()
    results = make_sink(org).apply(
        [upsert("C-1", Name="A"), upsert("C-2", Bogus__c=1), upsert("C-3", Name="C")], NoLedger()
    )
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.PERMANENT, Outcome.OK]
    assert "INVALID_FIELD" in (results[1].error or "") and "'C-2'" in (results[1].error or "")
    assert calls == [3, 1, 2, 1, 1]  # [C-1] | [C-2, C-3] -> [C-2] | [C-3]


def test_one_bad_record_in_a_full_collection_costs_a_few_requests_not_one_per_record() -> None:
    org, calls = refusing_bogus_fields()
    ops = [upsert(f"C-{n}", Name=f"N{n}") for n in range(200)]
    ops[137] = upsert("C-137", Bogus__c=1)
    results = make_sink(org).apply(ops, NoLedger())
    assert [n for n, r in enumerate(results) if r.outcome is not Outcome.OK] == [137]
    assert results[137].outcome is Outcome.PERMANENT and "'C-137'" in (results[137].error or "")
    assert len(calls) <= 1 + 2 * 8, calls  # 8 halvings from 200 to 1, two requests each, not 200 requests


def test_login_url_may_be_a_configured_http_url() -> None:
    from pydantic import HttpUrl

    org = FakeOrg()
    sink = SalesforceSink(HttpUrl(LOGIN), client_id="cid", client_secret="secret", transport=httpx.MockTransport(org))  # type: ignore[arg-type]
    assert sink.check()[0][1] is True
    assert str(org.requests[0].url) == f"{LOGIN}/services/oauth2/token"
