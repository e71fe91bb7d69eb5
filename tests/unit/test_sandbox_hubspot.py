"""The HubSpot sandbox driven over HTTP, the way a connector talks to HubSpot."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import pytest

from replicator.sandbox.core import Faults, Limits, Running, serve
from replicator.sandbox.hubspot import HubSpotSandbox, sign_v3
from replicator.sources.crm.signature import verify_hubspot_v3
from tests.fixtures.sandbox import start_sandbox

TOKEN = "pat-sandbox"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def api(hubspot_sandbox: Running) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=hubspot_sandbox.url, headers=AUTH, timeout=5) as client:
        yield client


def hub(running: Running) -> HubSpotSandbox:
    assert isinstance(running.sandbox, HubSpotSandbox)
    return running.sandbox


def unique_property(api: httpx.Client, obj: str = "companies", name: str = "erp_id") -> None:
    resp = api.post(
        f"/crm/v3/properties/{obj}",
        json={
            "name": name,
            "label": "ERP id",
            "type": "string",
            "fieldType": "text",
            "groupName": "companyinformation",
            "hasUniqueValue": True,
        },
    )
    assert resp.status_code == 201, resp.text


def upsert(api: httpx.Client, obj: str, rows: dict[str, dict[str, Any]], id_property: str = "erp_id") -> httpx.Response:
    inputs = [{"id": key, "idProperty": id_property, "properties": props} for key, props in rows.items()]
    return api.post(f"/crm/v3/objects/{obj}/batch/upsert", json={"inputs": inputs})


def create(api: httpx.Client, obj: str, properties: dict[str, Any]) -> str:
    resp = api.post(f"/crm/v3/objects/{obj}", json={"properties": properties})
    assert resp.status_code == 201, resp.text
    return str(resp.json()["id"])


# ---------------------------------------------------------------------------- auth


def test_requests_without_the_bearer_token_get_hubspots_401(hubspot_sandbox: Running) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
        resp = httpx.get(f"{hubspot_sandbox.url}/crm/v3/objects/contacts", headers=headers)
        assert resp.status_code == 401
        body = resp.json()
        assert body["status"] == "error"
        assert body["category"] == "INVALID_AUTHENTICATION"
        assert body["message"].startswith("Authentication credentials not found")
        assert body["correlationId"]
    assert httpx.get(f"{hubspot_sandbox.url}/crm/v3/objects/contacts", headers=AUTH).status_code == 200


# ---------------------------------------------------------------------------- properties


def test_standard_properties_are_seeded_and_readable_by_object_type_id(api: httpx.Client) -> None:
    expected = {
        "companies": {"name", "domain", "phone", "industry", "city", "country", "description"},
        "contacts": {"firstname", "lastname", "email", "phone", "jobtitle"},
        "products": {"name", "price", "description", "hs_sku"},
        "deals": {"dealname", "amount", "dealstage", "pipeline", "closedate"},
        "line_items": {"name", "quantity", "price", "hs_product_id"},
    }
    for obj, names in expected.items():
        listed = {p["name"] for p in api.get(f"/crm/v3/properties/{obj}").json()["results"]}
        assert names | {"hs_object_id", "createdate", "hs_lastmodifieddate"} <= listed, obj
    by_id = api.get("/crm/v3/properties/0-3/dealstage")
    assert by_id.status_code == 200
    assert by_id.json()["type"] == "enumeration"
    assert "closedwon" in [o["value"] for o in by_id.json()["options"]]
    missing = api.get("/crm/v3/properties/contacts/no_such_property")
    assert missing.status_code == 404
    assert missing.json()["category"] == "OBJECT_NOT_FOUND"
    assert api.get("/crm/v3/properties/widgets").status_code == 400


def test_creating_a_property_twice_is_a_409_and_bad_definitions_are_400(api: httpx.Client) -> None:
    unique_property(api)
    got = api.get("/crm/v3/properties/companies/erp_id").json()
    assert got["hasUniqueValue"] is True
    assert got["hubspotDefined"] is False
    again = api.post(
        "/crm/v3/properties/companies",
        json={"name": "erp_id", "label": "x", "type": "string", "fieldType": "text", "groupName": "g"},
    )
    assert again.status_code == 409
    assert again.json()["category"] == "OBJECT_ALREADY_EXISTS"
    assert "erp_id" in again.json()["message"]
    no_label = api.post(
        "/crm/v3/properties/companies", json={"name": "x1", "type": "string", "fieldType": "text", "groupName": "g"}
    )
    assert no_label.status_code == 400
    assert "label" in no_label.json()["message"]
    wrong_field = api.post(
        "/crm/v3/properties/companies",
        json={"name": "x2", "label": "x", "type": "number", "fieldType": "textarea", "groupName": "g"},
    )
    assert wrong_field.status_code == 400


# ---------------------------------------------------------------------------- batch upsert


def test_upsert_creates_then_updates_by_a_unique_property(api: httpx.Client, hubspot_sandbox: Running) -> None:
    unique_property(api)
    first = upsert(api, "companies", {"C1": {"name": "Acme", "numberofemployees": 12}, "C2": {"name": "Beta"}})
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["status"] == "COMPLETE"
    assert {"startedAt", "completedAt"} <= set(body)
    by_key = {r["properties"]["erp_id"]: r for r in body["results"]}
    assert [r["new"] for r in by_key.values()] == [True, True]
    acme = by_key["C1"]
    assert acme["properties"]["numberofemployees"] == "12"  # values are strings
    assert acme["properties"]["hs_object_id"] == acme["id"]
    assert acme["id"].isdigit()
    assert acme["createdAt"].endswith("Z") and len(acme["createdAt"]) == len("2024-01-01T00:00:00.000Z")
    assert acme["archived"] is False

    second = upsert(api, "companies", {"C1": {"name": "Acme Inc"}})
    assert second.status_code == 200
    result = second.json()["results"][0]
    assert result["new"] is False
    assert result["id"] == acme["id"]
    stored = next(r for r in hub(hubspot_sandbox).records("companies") if r["id"] == acme["id"])
    assert stored["properties"]["name"] == "Acme Inc"
    assert stored["properties"]["numberofemployees"] == "12"
    assert len(hub(hubspot_sandbox).records("companies")) == 2


def test_contacts_upsert_by_email(api: httpx.Client) -> None:
    resp = upsert(api, "contacts", {"ada@example.com": {"firstname": "Ada"}}, id_property="email")
    assert resp.status_code == 200
    assert resp.json()["results"][0]["properties"]["email"] == "ada@example.com"
    again = upsert(api, "0-1", {"ADA@example.com": {"lastname": "Lovelace"}}, id_property="email")
    assert again.json()["results"][0]["new"] is False


def test_upsert_refuses_a_non_unique_id_property_oversized_batches_and_duplicate_ids(api: httpx.Client) -> None:
    unique_property(api)
    not_unique = upsert(api, "companies", {"Acme": {"domain": "acme.test"}}, id_property="name")
    assert not_unique.status_code == 400
    assert not_unique.json()["category"] == "VALIDATION_ERROR"

    too_many = upsert(api, "companies", {f"K{i}": {"name": f"n{i}"} for i in range(101)})
    assert too_many.status_code == 400
    assert too_many.json()["message"] == (
        "The maximum number of inputs supported in a batch is 100. Please reduce the number of items and try again"
    )
    assert upsert(api, "companies", {f"K{i}": {"name": f"n{i}"} for i in range(100)}).status_code == 200

    dupes = api.post(
        "/crm/v3/objects/companies/batch/upsert",
        json={"inputs": [{"id": "D1", "idProperty": "erp_id", "properties": {}}] * 2},
    )
    assert dupes.status_code == 400
    assert dupes.json()["message"] == "Duplicate IDs found in batch input: [D1]. IDs must be unique"
    assert dupes.json()["context"] == {"ids": ["D1"]}


def test_an_unknown_property_refuses_the_whole_batch(api: httpx.Client, hubspot_sandbox: Running) -> None:
    unique_property(api)
    resp = upsert(api, "companies", {"C1": {"name": "Good"}, "C2": {"name": "Bad", "colour": "red"}})
    assert resp.status_code == 400
    body = resp.json()
    assert body["category"] == "VALIDATION_ERROR"
    assert "PROPERTY_DOESNT_EXIST" in body["message"]
    assert body["errors"] == [
        {
            "message": 'Property "colour" does not exist',
            "code": "PROPERTY_DOESNT_EXIST",
            "context": {"propertyName": ["colour"]},
        }
    ]
    assert hub(hubspot_sandbox).records("companies") == []
    bad_number = upsert(api, "companies", {"C3": {"numberofemployees": "many"}})
    assert bad_number.status_code == 400
    assert "INVALID_FLOAT" in bad_number.json()["message"]
    read_only = upsert(api, "companies", {"C4": {"hs_lastmodifieddate": "2020-01-01T00:00:00Z"}})
    assert "READ_ONLY_VALUE" in read_only.json()["message"]


def test_with_write_trace_ids_each_bad_input_fails_alone_in_a_207(api: httpx.Client, hubspot_sandbox: Running) -> None:
    unique_property(api)
    inputs = [
        {"id": "C1", "idProperty": "erp_id", "objectWriteTraceId": "t1", "properties": {"name": "Good"}},
        {"id": "C2", "idProperty": "erp_id", "objectWriteTraceId": "t2", "properties": {"colour": "red"}},
    ]
    resp = api.post("/crm/v3/objects/companies/batch/upsert", json={"inputs": inputs})
    assert resp.status_code == 207
    body = resp.json()
    assert body["numErrors"] == 1
    error = body["errors"][0]
    assert error["status"] == "error"
    assert error["category"] == "VALIDATION_ERROR"
    assert error["context"]["objectWriteTraceId"] == ["t2"]
    assert error["context"]["ids"] == ["C2"]
    assert [(r["properties"]["erp_id"], r["objectWriteTraceId"]) for r in body["results"]] == [("C1", "t1")]
    assert [r["properties"]["erp_id"] for r in hub(hubspot_sandbox).records("companies")] == ["C1"]


def test_injected_partial_failures_fail_single_inputs_identified_by_id() -> None:
    running = start_sandbox("hubspot", faults=Faults(rate_partial=0.5, seed=7))
    try:
        with httpx.Client(base_url=running.url, headers=AUTH) as api:
            unique_property(api)
            keys = [f"P{i}" for i in range(40)]
            resp = upsert(api, "companies", {k: {"name": k} for k in keys})
            assert resp.status_code == 207
            body = resp.json()
            failed = [e["context"]["ids"][0] for e in body["errors"]]
            written = [r["properties"]["erp_id"] for r in body["results"]]
            assert body["numErrors"] == len(failed) > 0
            assert written and sorted(failed + written) == sorted(keys)
            assert {e["category"] for e in body["errors"]} == {"INTERNAL_ERROR"}
            stored = {r["properties"]["erp_id"] for r in hub(running).records("companies")}
            assert stored == set(written)
            stats = api.get("/__sandbox/stats").json()
            assert stats["injected_partial"] == len(failed)
    finally:
        running.stop()


# ---------------------------------------------------------------------------- batch read / create / update / archive


def test_batch_read_reports_missing_ids_in_a_207(api: httpx.Client) -> None:
    unique_property(api)
    ids = [r["id"] for r in upsert(api, "companies", {"C1": {"name": "A"}, "C2": {"name": "B"}}).json()["results"]]
    resp = api.post(
        "/crm/v3/objects/companies/batch/read",
        json={"inputs": [{"id": ids[0]}, {"id": "999999"}, {"id": ids[1]}], "properties": ["name", "phone"]},
    )
    assert resp.status_code == 207
    body = resp.json()
    assert sorted(r["id"] for r in body["results"]) == sorted(ids)
    assert body["results"][0]["properties"]["phone"] is None
    assert body["errors"] == [
        {
            "status": "error",
            "category": "OBJECT_NOT_FOUND",
            "message": (
                "Could not get some COMPANY objects, they may be deleted or not exist. Check that ids are valid."
            ),
            "context": {"ids": ["999999"]},
        }
    ]
    by_key = api.post(
        "/crm/v3/objects/companies/batch/read",
        json={"idProperty": "erp_id", "inputs": [{"id": "C2"}], "properties": []},
    )
    assert by_key.status_code == 200
    assert by_key.json()["results"][0]["id"] == ids[1]


def test_batch_read_with_history_is_limited_to_50_and_lists_changes_newest_first(api: httpx.Client) -> None:
    record_id = create(api, "deals", {"dealname": "First"})
    api.patch(f"/crm/v3/objects/deals/{record_id}", json={"properties": {"dealname": "Second"}})
    resp = api.post(
        "/crm/v3/objects/deals/batch/read",
        json={"inputs": [{"id": record_id}], "properties": ["dealname"], "propertiesWithHistory": ["dealname"]},
    )
    history = resp.json()["results"][0]["propertiesWithHistory"]["dealname"]
    assert [h["value"] for h in history] == ["Second", "First"]
    over = api.post(
        "/crm/v3/objects/deals/batch/read",
        json={"inputs": [{"id": str(i)} for i in range(51)], "propertiesWithHistory": ["dealname"]},
    )
    assert over.status_code == 400


def test_batch_create_update_and_archive(api: httpx.Client) -> None:
    created = api.post(
        "/crm/v3/objects/products/batch/create",
        json={"inputs": [{"properties": {"name": "Bolt", "price": "1.50"}}, {"properties": {"name": "Nut"}}]},
    )
    assert created.status_code == 201
    ids = [r["id"] for r in created.json()["results"]]
    assert created.json()["results"][0]["properties"]["price"] == "1.5"

    updated = api.post(
        "/crm/v3/objects/products/batch/update",
        json={"inputs": [{"id": ids[0], "properties": {"price": 2}}, {"id": "424242", "properties": {"price": 3}}]},
    )
    assert updated.status_code == 207
    assert updated.json()["results"][0]["properties"]["price"] == "2"
    assert updated.json()["errors"][0]["context"]["ids"] == ["424242"]
    assert updated.json()["errors"][0]["category"] == "OBJECT_NOT_FOUND"

    archived = api.post("/crm/v3/objects/products/batch/archive", json={"inputs": [{"id": ids[0]}, {"id": "31337"}]})
    assert archived.status_code == 204
    assert archived.content == b""
    gone = api.get(f"/crm/v3/objects/products/{ids[0]}")
    assert gone.status_code == 404
    assert gone.json()["category"] == "OBJECT_NOT_FOUND"
    listed = api.get("/crm/v3/objects/products", params={"archived": "true"}).json()["results"]
    assert [(r["id"], r["archived"]) for r in listed] == [(ids[0], True)]
    assert "archivedAt" in listed[0]


# ---------------------------------------------------------------------------- single records and listing


def test_single_record_get_patch_delete_and_unique_email_conflict(api: httpx.Client) -> None:
    contact = create(api, "contacts", {"email": "a@example.com", "firstname": "Ann"})
    got = api.get(f"/crm/v3/objects/contacts/{contact}", params={"properties": "firstname,jobtitle"})
    assert got.status_code == 200
    props = got.json()["properties"]
    assert props["firstname"] == "Ann"
    assert props["jobtitle"] is None
    assert {"hs_object_id", "createdate", "lastmodifieddate", "hs_lastmodifieddate"} <= set(props)
    assert "email" not in props  # unrequested properties are left out
    by_email = api.get("/crm/v3/objects/contacts/a@example.com", params={"idProperty": "email"})
    assert by_email.json()["id"] == contact

    patched = api.patch(f"/crm/v3/objects/contacts/{contact}", json={"properties": {"jobtitle": "CTO"}})
    assert patched.status_code == 200
    assert patched.json()["properties"]["jobtitle"] == "CTO"
    assert api.patch("/crm/v3/objects/contacts/777777", json={"properties": {}}).status_code == 404

    clash = api.post("/crm/v3/objects/contacts", json={"properties": {"email": "A@example.com"}})
    assert clash.status_code == 409
    assert clash.json()["category"] == "CONFLICT"
    assert contact in clash.json()["message"]

    assert api.delete(f"/crm/v3/objects/contacts/{contact}").status_code == 204
    assert api.get(f"/crm/v3/objects/contacts/{contact}").status_code == 404


def test_list_pages_with_after_and_limits_pages_to_100(api: httpx.Client) -> None:
    ids = [create(api, "companies", {"name": f"c{i}"}) for i in range(7)]
    seen: list[str] = []
    after: str | None = None
    pages = 0
    while True:
        params: dict[str, Any] = {"limit": 3, "properties": "name"}
        if after:
            params["after"] = after
        body = api.get("/crm/v3/objects/companies", params=params).json()
        seen += [r["id"] for r in body["results"]]
        pages += 1
        after = body.get("paging", {}).get("next", {}).get("after")
        if not after:
            break
    assert seen == ids
    assert pages == 3
    assert api.get("/crm/v3/objects/companies", params={"limit": 101}).status_code == 400


# ---------------------------------------------------------------------------- search


def search(api: httpx.Client, obj: str, **body: Any) -> httpx.Response:
    return api.post(f"/crm/v3/objects/{obj}/search", json=body)


def test_search_filters_or_groups_and_sorts(api: httpx.Client) -> None:
    rows = [
        ("Alpha", "100", "2024-01-01T00:00:00Z", "closedwon"),
        ("Beta", "250", "2024-02-01T00:00:00Z", "closedlost"),
        ("Gamma", "75.5", "2024-03-01T00:00:00Z", "closedwon"),
        ("Delta", None, None, "qualifiedtobuy"),
    ]
    for name, amount, close, stage in rows:
        props = {"dealname": name, "dealstage": stage}
        if amount:
            props["amount"] = amount
        if close:
            props["closedate"] = close
        create(api, "deals", props)

    def names(*filters: dict[str, Any], groups: list[list[dict[str, Any]]] | None = None, **extra: Any) -> list[str]:
        filter_groups = [{"filters": g} for g in groups] if groups else [{"filters": list(filters)}]
        resp = search(api, "deals", filterGroups=filter_groups, properties=["dealname"], **extra)
        assert resp.status_code == 200, resp.text
        return [r["properties"]["dealname"] for r in resp.json()["results"]]

    assert names({"propertyName": "amount", "operator": "GT", "value": "99"}) == ["Alpha", "Beta"]  # numeric, not text
    assert names({"propertyName": "amount", "operator": "LTE", "value": 100}) == ["Alpha", "Gamma"]
    assert names({"propertyName": "amount", "operator": "BETWEEN", "value": "80", "highValue": "300"}) == [
        "Alpha",
        "Beta",
    ]
    assert names({"propertyName": "dealname", "operator": "EQ", "value": "beta"}) == ["Beta"]
    assert names({"propertyName": "dealstage", "operator": "NEQ", "value": "closedwon"}) == ["Beta", "Delta"]
    assert names({"propertyName": "dealstage", "operator": "IN", "values": ["closedwon", "closedlost"]}) == [
        "Alpha",
        "Beta",
        "Gamma",
    ]
    assert names({"propertyName": "dealstage", "operator": "NOT_IN", "values": ["closedwon"]}) == ["Beta", "Delta"]
    assert names({"propertyName": "amount", "operator": "NOT_HAS_PROPERTY"}) == ["Delta"]
    assert names({"propertyName": "closedate", "operator": "HAS_PROPERTY"}) == ["Alpha", "Beta", "Gamma"]
    # dates compare as instants, given as epoch milliseconds or ISO 8601
    assert names({"propertyName": "closedate", "operator": "GTE", "value": "1706745600000"}) == ["Beta", "Gamma"]
    assert names({"propertyName": "closedate", "operator": "LT", "value": "2024-02-01T00:00:00.000Z"}) == ["Alpha"]
    # AND within a group, OR across groups
    assert names(
        groups=[
            [
                {"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"},
                {"propertyName": "amount", "operator": "LT", "value": "80"},
            ],
            [{"propertyName": "dealname", "operator": "EQ", "value": "Delta"}],
        ]
    ) == ["Gamma", "Delta"]
    by_amount = search(
        api, "deals", sorts=[{"propertyName": "amount", "direction": "DESCENDING"}], properties=["dealname"]
    )
    assert [r["properties"]["dealname"] for r in by_amount.json()["results"]] == ["Beta", "Alpha", "Gamma", "Delta"]


def test_search_pages_with_total_and_refuses_documented_limits(api: httpx.Client) -> None:
    ids = [create(api, "products", {"name": f"p{i}"}) for i in range(5)]
    first = search(api, "products", limit=2)
    assert first.json()["total"] == 5
    assert "X-HubSpot-RateLimit-Max" not in first.headers  # search answers carry no rate-limit headers
    after = first.json()["paging"]["next"]["after"]
    rest = search(api, "products", limit=10, after=after).json()
    assert [r["id"] for r in first.json()["results"] + rest["results"]] == ids
    assert "paging" not in rest
    assert search(api, "products", limit=201).status_code == 400
    assert search(api, "products", limit=200).status_code == 200
    flt = {"propertyName": "name", "operator": "HAS_PROPERTY"}
    too_many_groups = search(api, "products", filterGroups=[{"filters": [flt]}] * 6)
    assert too_many_groups.status_code == 400
    assert too_many_groups.json()["category"] == "VALIDATION_ERROR"
    assert search(api, "products", filterGroups=[{"filters": [flt] * 7}]).status_code == 400
    assert search(api, "products", filterGroups=[{"filters": [flt] * 6}] * 3 + [{"filters": [flt]}]).status_code == 400
    assert search(api, "products", filterGroups=[{"filters": [flt] * 6}] * 3).status_code == 200
    assert search(api, "products", sorts=[{"propertyName": "name"}, {"propertyName": "price"}]).status_code == 400
    unknown_op = search(
        api, "products", filterGroups=[{"filters": [{"propertyName": "name", "operator": "LIKE", "value": "x"}]}]
    )
    assert unknown_op.status_code == 400


def test_search_refuses_to_page_beyond_the_cap() -> None:
    running = start_sandbox("hubspot", search_cap=4)
    try:
        with httpx.Client(base_url=running.url, headers=AUTH) as api:
            for i in range(6):
                create(api, "companies", {"name": f"c{i}"})
            page = search(api, "companies", limit=3).json()
            assert page["total"] == 6
            last = search(api, "companies", limit=3, after=page["paging"]["next"]["after"]).json()
            assert len(last["results"]) == 1  # capped at 4 results in all
            assert "paging" not in last
            beyond = search(api, "companies", limit=3, after="4")
            assert beyond.status_code == 400
            assert beyond.json()["category"] == "VALIDATION_ERROR"
            assert "4" in beyond.json()["message"]
    finally:
        running.stop()


def test_frozen_clock_gives_many_records_one_timestamp_and_ties_sort_by_id(
    api: httpx.Client, hubspot_sandbox: Running
) -> None:
    frozen = 1_733_000_000_123
    assert api.post("/__sandbox/clock", json={"freeze_ms": frozen}).json() == {"now_ms": frozen, "frozen": True}
    unique_property(api)
    ids = [r["id"] for r in upsert(api, "companies", {f"T{i}": {"name": f"t{i}"} for i in range(12)}).json()["results"]]
    stamps = {r["properties"]["hs_lastmodifieddate"] for r in hub(hubspot_sandbox).records("companies")}
    assert stamps == {"2024-11-30T20:53:20.123Z"}
    resp = search(
        api,
        "companies",
        filterGroups=[{"filters": [{"propertyName": "hs_lastmodifieddate", "operator": "GTE", "value": str(frozen)}]}],
        sorts=[{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
        limit=100,
    )
    assert [r["id"] for r in resp.json()["results"]] == sorted(ids, key=int)
    api.post("/__sandbox/clock", json={"advance_ms": 5})
    edited = api.patch(f"/crm/v3/objects/companies/{ids[0]}", json={"properties": {"name": "moved"}})
    assert edited.json()["updatedAt"] == "2024-11-30T20:53:20.128Z"
    assert api.post("/__sandbox/clock", json={"freeze_ms": "soon"}).status_code == 400
    api.post("/__sandbox/clock", json={"freeze_ms": None})
    assert api.get("/__sandbox/clock").json()["frozen"] is False


# ---------------------------------------------------------------------------- associations v4


def test_default_associations_both_directions_with_documented_type_ids(api: httpx.Client) -> None:
    company = create(api, "companies", {"name": "Acme"})
    contact = create(api, "contacts", {"firstname": "Ann"})
    deal = create(api, "deals", {"dealname": "Big"})
    item = create(api, "line_items", {"name": "Bolt", "quantity": 3})

    made = api.post(
        "/crm/v4/associations/contacts/companies/batch/associate/default",
        json={"inputs": [{"from": {"id": contact}, "to": {"id": company}}]},
    )
    assert made.status_code == 200
    specs = {
        (r["from"]["id"], r["to"]["id"]): r["associationSpec"]["associationTypeId"] for r in made.json()["results"]
    }
    assert specs == {(contact, company): 279, (company, contact): 280}
    api.post(
        "/crm/v4/associations/0-3/0-2/batch/associate/default",
        json={"inputs": [{"from": {"id": deal}, "to": {"id": company}}]},
    )
    api.post(
        "/crm/v4/associations/line_items/deals/batch/associate/default",
        json={"inputs": [{"from": {"id": item}, "to": {"id": deal}}]},
    )

    def read(from_type: str, to_type: str, from_id: str) -> list[tuple[int, int]]:
        resp = api.post(f"/crm/v4/associations/{from_type}/{to_type}/batch/read", json={"inputs": [{"id": from_id}]})
        assert resp.status_code == 200, resp.text
        result = resp.json()["results"][0]
        assert result["from"] == {"id": from_id}
        return [(t["toObjectId"], t["associationTypes"][0]["typeId"]) for t in result["to"]]

    assert read("contacts", "companies", contact) == [(int(company), 279)]
    assert read("companies", "contacts", company) == [(int(contact), 280)]
    assert read("deals", "companies", deal) == [(int(company), 341)]
    assert read("companies", "deals", company) == [(int(deal), 342)]
    assert read("line_items", "deals", item) == [(int(item_deal), 20) for item_deal in [deal]]
    assert read("deals", "line_items", deal) == [(int(item), 19)]
    with_assoc = api.get(f"/crm/v3/objects/contacts/{contact}", params={"associations": "companies"}).json()
    assert with_assoc["associations"]["companies"]["results"][0]["id"] == company

    archived = api.post(
        "/crm/v4/associations/companies/contacts/batch/archive",
        json={"inputs": [{"from": {"id": company}, "to": [{"id": contact}]}]},
    )
    assert archived.status_code == 204
    none = api.post("/crm/v4/associations/contacts/companies/batch/read", json={"inputs": [{"id": contact}]})
    assert none.status_code == 207
    assert none.json()["results"] == []
    assert none.json()["errors"][0]["subCategory"] == "crm.associations.NO_ASSOCIATIONS_FOUND"
    assert none.json()["errors"][0]["context"] == {"fromObjectId": [contact]}


def test_associating_a_missing_record_fails_that_input_only(api: httpx.Client, hubspot_sandbox: Running) -> None:
    company = create(api, "companies", {"name": "Acme"})
    contact = create(api, "contacts", {"firstname": "Ann"})
    resp = api.post(
        "/crm/v4/associations/contacts/companies/batch/associate/default",
        json={
            "inputs": [{"from": {"id": contact}, "to": {"id": company}}, {"from": {"id": contact}, "to": {"id": "999"}}]
        },
    )
    assert resp.status_code == 207
    assert resp.json()["numErrors"] == 1
    error = resp.json()["errors"][0]
    assert error["context"] == {"fromObjectId": [contact], "toObjectId": ["999"]}
    assert "999" in error["message"]
    assert hub(hubspot_sandbox).associations("contacts", contact) == {"companies": [company]}
    unsupported = api.post(
        "/crm/v4/associations/products/companies/batch/associate/default",
        json={"inputs": [{"from": {"id": "1"}, "to": {"id": company}}]},
    )
    assert unsupported.status_code == 400


# ---------------------------------------------------------------------------- rate limits and faults


def test_burst_limit_answers_429_the_hubspot_way_with_headers() -> None:
    running = start_sandbox("hubspot", limits=Limits(burst=3, window_s=1.0))
    try:
        with httpx.Client(base_url=running.url, headers=AUTH) as api:
            remaining = [
                int(api.get("/crm/v3/objects/contacts").headers["X-HubSpot-RateLimit-Remaining"]) for _ in range(3)
            ]
            assert remaining == [2, 1, 0]
            over = api.get("/crm/v3/objects/contacts")
            assert over.status_code == 429
            assert over.json()["policyName"] == "TEN_SECONDLY_ROLLING"
            assert over.json()["errorType"] == "RATE_LIMIT"
            assert over.json()["message"] == "You have reached your ten_secondly_rolling limit."
            assert over.headers["Retry-After"] == "1"
            assert over.headers["X-HubSpot-RateLimit-Max"] == "3"
            assert over.headers["X-HubSpot-RateLimit-Interval-Milliseconds"] == "1000"
            time.sleep(1.05)
            assert api.get("/crm/v3/objects/contacts").status_code == 200
    finally:
        running.stop()


def test_daily_limit_answers_429_with_policy_daily() -> None:
    running = start_sandbox("hubspot", limits=Limits(daily=2))
    try:
        with httpx.Client(base_url=running.url, headers=AUTH) as api:
            first = api.get("/crm/v3/objects/deals")
            assert first.headers["X-HubSpot-RateLimit-Daily"] == "2"
            assert first.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "1"
            api.get("/crm/v3/objects/deals")
            over = api.get("/crm/v3/objects/deals")
            assert over.status_code == 429
            assert over.json()["policyName"] == "DAILY"
            assert int(over.headers["Retry-After"]) > 86_000
    finally:
        running.stop()


def test_unlimited_sandbox_advertises_the_configured_daily_limit(api: httpx.Client) -> None:
    resp = api.get("/crm/v3/objects/deals")
    assert resp.headers["X-HubSpot-RateLimit-Daily"] == "650000"
    assert resp.headers["X-HubSpot-RateLimit-Daily-Remaining"] == "649999"


def test_injected_faults(api: httpx.Client) -> None:
    api.post("/__sandbox/faults", json={"rate_429": 1.0, "retry_after_s": 3})
    limited = api.get("/crm/v3/objects/contacts")
    assert limited.status_code == 429
    assert limited.headers["Retry-After"] == "3"
    assert limited.json()["policyName"] == "TEN_SECONDLY_ROLLING"

    api.post("/__sandbox/faults", json={"rate_5xx": 1.0, "seed": 1})
    failed = api.get("/crm/v3/objects/contacts")
    assert failed.status_code in {500, 502, 503, 504}
    assert failed.json()["status"] == "error"
    assert failed.json()["correlationId"]

    api.post("/__sandbox/faults", json={"rate_timeout": 1.0, "timeout_s": 1.0})
    with pytest.raises(httpx.ReadTimeout):
        api.get("/crm/v3/objects/contacts", timeout=0.2)

    api.post("/__sandbox/faults", json={"rate_reset": 1.0})
    with pytest.raises(httpx.TransportError):
        api.get("/crm/v3/objects/contacts")

    api.post("/__sandbox/faults", json={"latency_ms": 150})
    started = time.monotonic()
    assert api.get("/crm/v3/objects/contacts").status_code == 200
    assert time.monotonic() - started >= 0.15

    stats = api.get("/__sandbox/stats").json()
    assert stats["injected_429"] == 1
    assert stats["injected_5xx"] == 1
    assert stats["injected_timeout"] == 1
    assert stats["injected_reset"] == 1


# ---------------------------------------------------------------------------- inspection


def test_inspection_user_edit_and_reset(api: httpx.Client) -> None:
    api.post("/__sandbox/clock", json={"freeze_ms": 1_700_000_000_000})
    unique_property(api)
    company = create(api, "companies", {"name": "Acme", "erp_id": "C1"})
    contact = create(api, "contacts", {"firstname": "Ann"})
    api.post(
        "/crm/v4/associations/contacts/companies/batch/associate/default",
        json={"inputs": [{"from": {"id": contact}, "to": {"id": company}}]},
    )
    listed = api.get("/__sandbox/objects/contacts").json()["results"]
    assert listed[0]["associations"] == {"companies": [company]}
    assert listed[0]["properties"]["firstname"] == "Ann"
    assert api.get("/__sandbox/objects/0-2").json()["results"][0]["properties"]["erp_id"] == "C1"

    api.post("/__sandbox/clock", json={"advance_ms": 60_000})
    edited = api.post(f"/__sandbox/objects/companies/{company}", json={"name": "Acme Corp"})
    assert edited.status_code == 200
    assert edited.json()["properties"]["name"] == "Acme Corp"
    assert edited.json()["properties"]["hs_lastmodifieddate"] == "2023-11-14T22:14:20.000Z"
    assert api.post(f"/__sandbox/objects/companies/{company}", json={"colour": "red"}).status_code == 400
    assert api.post("/__sandbox/objects/companies/404404", json={"name": "x"}).status_code == 404
    assert api.get("/__sandbox/objects/widgets").status_code == 404

    assert api.post("/__sandbox/reset").status_code == 200
    assert api.get("/__sandbox/objects/companies").json()["results"] == []
    assert api.get("/crm/v3/properties/companies/erp_id").status_code == 404
    assert api.get("/crm/v3/properties/companies/name").status_code == 200


# ---------------------------------------------------------------------------- webhooks


class Receiver:
    """A webhook endpoint recording deliveries; answers 500 to the first ``fail_first`` of them."""

    def __init__(self, fail_first: int = 0) -> None:
        self.deliveries: list[tuple[dict[str, str], bytes, str]] = []
        self.fail_first = fail_first
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    receiver.deliveries.append((dict(self.headers.items()), body, self.path))
                    status = 500 if len(receiver.deliveries) <= receiver.fail_first else 204
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/webhooks/hubspot?portal=1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [event for _, body, _ in self.deliveries for event in orjson.loads(body)]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    yield rec
    rec.close()


def webhook_sandbox(url: str) -> tuple[Running, HubSpotSandbox]:
    sandbox = HubSpotSandbox(webhook_url=url, client_secret="s3cret", webhook_retry_base_s=0.05)
    return serve(sandbox), sandbox


def test_api_writes_and_user_edits_fire_signed_webhooks(receiver: Receiver) -> None:
    running, sandbox = webhook_sandbox(receiver.url)
    try:
        with httpx.Client(base_url=running.url, headers=AUTH) as api:
            contact = create(api, "contacts", {"firstname": "Ann"})
            assert sandbox.webhooks_idle()
            api.post(f"/__sandbox/objects/contacts/{contact}", json={"firstname": "Anna"})
            api.delete(f"/crm/v3/objects/contacts/{contact}")
            assert sandbox.webhooks_idle()
        events = receiver.events()
        kinds = [
            (e["subscriptionType"], e.get("propertyName"), e.get("propertyValue"), e["changeSource"]) for e in events
        ]
        assert kinds == [
            ("contact.creation", None, None, "INTEGRATION"),
            ("contact.propertyChange", "firstname", "Ann", "INTEGRATION"),
            ("contact.propertyChange", "firstname", "Anna", "CRM_UI"),
            ("contact.deletion", None, None, "INTEGRATION"),
        ]
        first = events[0]
        assert first["objectId"] == int(contact)
        assert first["portalId"] == 62515 and first["appId"] == 4242
        assert first["attemptNumber"] == 0
        assert isinstance(first["occurredAt"], int) and isinstance(first["eventId"], int)
        assert len({e["eventId"] for e in events}) == 4
        for headers, body, path in receiver.deliveries:
            uri = f"http://{headers['Host']}{path}"
            verify_hubspot_v3(
                headers["X-HubSpot-Signature-v3"],
                headers["X-HubSpot-Request-Timestamp"],
                "POST",
                uri,
                body,
                "s3cret",
                now=time.time(),
            )
            with pytest.raises(Exception, match="does not match"):
                verify_hubspot_v3(
                    headers["X-HubSpot-Signature-v3"],
                    headers["X-HubSpot-Request-Timestamp"],
                    "POST",
                    uri,
                    body,
                    "other-secret",
                    now=time.time(),
                )
    finally:
        sandbox.close()
        running.stop()


def test_webhook_batches_hold_at_most_100_events(receiver: Receiver) -> None:
    running, sandbox = webhook_sandbox(receiver.url)
    try:
        with httpx.Client(base_url=running.url, headers=AUTH) as api:
            unique_property(api)
            upsert(api, "companies", {f"W{i}": {"name": f"w{i}"} for i in range(100)})
            assert sandbox.webhooks_idle()
        sizes = [len(orjson.loads(body)) for _, body, _ in receiver.deliveries]
        assert max(sizes) <= 100
        # a creation, then one propertyChange per property set (name and erp_id), per record
        assert sum(sizes) == 300
        assert {e["subscriptionType"] for e in receiver.events()} == {"company.creation", "company.propertyChange"}
    finally:
        sandbox.close()
        running.stop()


def test_failed_deliveries_are_retried_with_attempt_numbers() -> None:
    receiver = Receiver(fail_first=2)
    running, sandbox = webhook_sandbox(receiver.url)
    try:
        with httpx.Client(base_url=running.url, headers=AUTH) as api:
            create(api, "deals", {})
            assert sandbox.webhooks_idle()
            stats = api.get("/__sandbox/stats").json()
        attempts = [orjson.loads(body)[0]["attemptNumber"] for _, body, _ in receiver.deliveries]
        assert attempts == [0, 1, 2]
        assert stats["webhook_failures"] == 2
        assert stats["webhook_events_delivered"] == 1
    finally:
        sandbox.close()
        running.stop()
        receiver.close()


def test_sign_v3_decodes_the_documented_uri_escapes() -> None:
    body = b'[{"eventId":1}]'
    plain = sign_v3("secret", "POST", "https://example.com/hook?a=b:c", body, 1_700_000_000_000)
    escaped = sign_v3("secret", "post", "https://example.com/hook?a=b%3Ac", body, 1_700_000_000_000)
    assert plain == escaped
    assert plain != sign_v3("secret", "POST", "https://example.com/hook?a=b%20c", body, 1_700_000_000_000)
    assert plain != sign_v3("secret", "POST", "https://example.com/hook?a=b:c", body, 1_700_000_000_001)
    verify_hubspot_v3(
        plain, "1700000000000", "POST", "https://example.com/hook?a=b:c", body, "secret", now=1_700_000_000.0
    )
