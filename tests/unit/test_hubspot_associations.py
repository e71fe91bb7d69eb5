"""Lookup fields become HubSpot associations: planning, and the v4 calls an apply makes."""

from __future__ import annotations

from typing import Any

import httpx
import orjson

from replicator.sinks.base import Action, Operation, Outcome
from replicator.sinks.hubspot import HubSpotSink
from replicator.sinks.hubspot.associations import AssociationPlan, parent_of, plan_associations
from tests.unit.test_hubspot_batch import NoLedger


def test_plan_creates_missing_and_removes_stale() -> None:
    plan = plan_associations(
        {"c1": "a1", "c2": "a2", "c3": "a3", "c4": None, "c5": "a5"},
        {"c2": {"a2"}, "c3": {"a9", "a8"}, "c4": {"a4"}},
    )
    assert plan == AssociationPlan(
        create=[("c1", "a1"), ("c3", "a3"), ("c5", "a5")],
        remove=[("c3", ["a8", "a9"]), ("c4", ["a4"])],
    )


def test_plan_for_records_already_right_is_empty() -> None:
    assert plan_associations({"c1": "a1", "c2": None}, {"c1": {"a1"}}) == AssociationPlan()


def test_parent_of_picks_the_lowest_numeric_id() -> None:
    assert parent_of({"100", "99", "1000"}) == "99"
    assert parent_of(set()) is None


class FakeHubSpot:
    """Contacts upserted by erp_id; contact -> company associations kept in memory."""

    def __init__(
        self, existing: dict[str, str], links: dict[str, set[str]], bad_parents: set[str], refuse_whole: bool = False
    ) -> None:
        self.refuse_whole = refuse_whole  # one bad pair refuses the whole call, naming nothing
        self.ids = dict(existing)  # erp_id -> contact id
        self.links = links  # contact id -> company ids
        self.bad_parents = bad_parents
        self.paths: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body: Any = orjson.loads(request.content)
        path = request.url.path
        self.paths.append(path.removeprefix("/crm/"))
        if path == "/crm/v3/objects/contacts/batch/upsert":
            results = []
            for item in body["inputs"]:
                new = item["id"] not in self.ids
                crm_id = self.ids.setdefault(item["id"], str(500 + len(self.ids)))
                results.append({"id": crm_id, "new": new, "properties": {"erp_id": item["id"]}})
            return httpx.Response(200, json={"status": "COMPLETE", "results": results})
        if path == "/crm/v4/associations/contacts/companies/batch/read":
            results = [
                {
                    "from": {"id": i["id"]},
                    "to": [{"toObjectId": int(t), "associationTypes": []} for t in self.links[i["id"]]],
                }
                for i in body["inputs"]
                if self.links.get(i["id"])
            ]
            return httpx.Response(200, json={"status": "COMPLETE", "results": results})
        if path == "/crm/v4/associations/contacts/companies/batch/associate/default":
            if self.refuse_whole and any(i["to"]["id"] in self.bad_parents for i in body["inputs"]):
                return httpx.Response(400, json={"status": "error", "category": "VALIDATION_ERROR", "message": "bad"})
            results, errors = [], []
            for item in body["inputs"]:
                if item["to"]["id"] in self.bad_parents:
                    errors.append(
                        {
                            "status": "error",
                            "category": "VALIDATION_ERROR",
                            "message": f"No company with id {item['to']['id']}",
                            "context": {"toObjectId": [item["to"]["id"]]},
                        }
                    )
                    continue
                self.links.setdefault(item["from"]["id"], set()).add(item["to"]["id"])
                results.append({"from": item["from"], "to": item["to"]})
            status = 207 if errors else 200
            return httpx.Response(status, json={"status": "COMPLETE", "results": results, "errors": errors})
        if path == "/crm/v4/associations/contacts/companies/batch/archive":
            for item in body["inputs"]:
                self.links[item["from"]["id"]] -= {t["id"] for t in item["to"]}
            return httpx.Response(204)
        return httpx.Response(404, json={"message": f"no route {path}"})


def contact(ext: str, **record: Any) -> Operation:
    return Operation("people", "contact", Action.UPSERT, ext, {"firstname": ext, **record})


def test_new_children_are_associated_without_reading_first() -> None:
    fake = FakeHubSpot({}, {}, set())
    sink = HubSpotSink("https://api.test", "pat", transport=httpx.MockTransport(fake))
    results = sink.apply([contact("P1", account="11"), contact("P2", account="12"), contact("P3")], NoLedger())
    assert all(r.outcome is Outcome.OK and r.created for r in results)
    assert fake.links == {results[0].crm_id: {"11"}, results[1].crm_id: {"12"}}
    assert fake.paths == [
        "v3/objects/contacts/batch/upsert",
        "v4/associations/contacts/companies/batch/associate/default",
    ]


def test_reparenting_removes_the_stale_association_and_keeps_right_ones_untouched() -> None:
    fake = FakeHubSpot({"P1": "501", "P2": "502", "P3": "503"}, {"501": {"11"}, "502": {"12"}, "503": {"13"}}, set())
    sink = HubSpotSink("https://api.test", "pat", transport=httpx.MockTransport(fake))
    results = sink.apply(
        [contact("P1", account="21"), contact("P2", account="12"), contact("P3", account=None)], NoLedger()
    )
    assert [r.outcome for r in results] == [Outcome.OK] * 3
    assert fake.links == {"501": {"21"}, "502": {"12"}, "503": set()}
    assert fake.paths == [
        "v3/objects/contacts/batch/upsert",
        "v4/associations/contacts/companies/batch/read",
        "v4/associations/contacts/companies/batch/associate/default",
        "v4/associations/contacts/companies/batch/archive",
    ]


def test_a_failed_association_fails_its_own_op_only() -> None:
    fake = FakeHubSpot({}, {}, {"99"})
    sink = HubSpotSink("https://api.test", "pat", transport=httpx.MockTransport(fake))
    results = sink.apply([contact("P1", account="11"), contact("P2", account="99")], NoLedger())
    assert results[0].outcome is Outcome.OK
    assert results[1].outcome is Outcome.PERMANENT
    assert results[1].crm_id is not None and results[1].error is not None
    assert "P2" in results[1].error and "account association to 99" in results[1].error
    assert "No company with id 99" in results[1].error


def test_a_whole_call_refused_for_one_bad_parent_is_bisected() -> None:
    fake = FakeHubSpot({}, {}, {"99"}, refuse_whole=True)
    sink = HubSpotSink("https://api.test", "pat", transport=httpx.MockTransport(fake))
    ops = [contact(f"P{i}", account="99" if i == 2 else str(10 + i)) for i in range(4)]
    results = sink.apply(ops, NoLedger())
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.OK, Outcome.PERMANENT, Outcome.OK]
    assert results[2].error is not None and "HTTP 400" in results[2].error
    assert sorted(t for links in fake.links.values() for t in links) == ["10", "11", "13"]
    # 4 -> 2+2 -> 1+1 on the bad side: five associate calls after the upsert.
    assert fake.paths.count("v4/associations/contacts/companies/batch/associate/default") == 5


def test_a_failed_association_read_fails_new_records_too() -> None:
    class ReadFails(FakeHubSpot):
        def __call__(self, request: httpx.Request) -> httpx.Response:
            if request.url.path.endswith("/batch/read"):
                self.paths.append(request.url.path.removeprefix("/crm/"))
                return httpx.Response(500, json={"message": "down"})
            return super().__call__(request)

    fake = ReadFails({"P1": "510"}, {"510": {"11"}}, set())
    sink = HubSpotSink("https://api.test", "pat", transport=httpx.MockTransport(fake))
    results = sink.apply([contact("P1", account="21"), contact("P2", account="12")], NoLedger())
    # P2 was created by the upsert; reporting it OK would lose its parent link for good.
    assert results[1].created
    assert [r.outcome for r in results] == [Outcome.TRANSIENT, Outcome.TRANSIENT]
    assert results[1].error is not None and "P2" in results[1].error and "account association to 12" in results[1].error
    assert "v4/associations/contacts/companies/batch/associate/default" not in fake.paths
