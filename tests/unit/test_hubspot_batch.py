"""Batch upsert/archive against a scripted HubSpot (httpx.MockTransport): every op gets its own Result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest

from replicator.sinks.base import Action, Operation, Outcome
from replicator.sinks.hubspot import HubSpotSink
from replicator.state.budget import BudgetExhausted, Priority

Handler = Callable[[httpx.Request], httpx.Response]


class NoLedger:
    def begin_create(self, op: Operation) -> bool:
        raise AssertionError("upsert by a unique property needs no create ledger")

    def finish_create(self, op: Operation, crm_id: str) -> None:
        raise AssertionError("upsert by a unique property needs no create ledger")


class Recorder:
    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.calls: list[tuple[str, str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content) if request.content else None
        self.calls.append((request.method, request.url.path, body))
        return self.handler(request)


def sink_with(handler: Handler, **options: Any) -> tuple[HubSpotSink, Recorder]:
    recorder = Recorder(handler)
    sink = HubSpotSink("https://api.test", "pat-test", transport=httpx.MockTransport(recorder), **options)
    return sink, recorder


def op(ext: str, action: Action = Action.UPSERT, **record: Any) -> Operation:
    return Operation("companies", "account", action, ext, dict(record) or {"name": f"Co {ext}"})


def upsert_ok(inputs: list[dict[str, Any]], *, new: set[str] = frozenset()) -> list[dict[str, Any]]:  # type: ignore[assignment]
    return [
        {"id": f"9{i['id'][1:]}", "new": i["id"] in new, "properties": {**i["properties"], "erp_id": i["id"]}}
        for i in inputs
    ]


def test_207_partial_answers_each_op_in_order_whatever_the_result_order() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        inputs = orjson.loads(request.content)["inputs"]
        good = [i for i in inputs if i["id"] != "E2"]
        results = list(reversed(upsert_ok(good, new={"E3"})))
        error = {
            "status": "error",
            "category": "VALIDATION_ERROR",
            "message": "Property values were not valid: industry",
            "context": {"ids": ["E2"]},
        }
        return httpx.Response(207, json={"status": "COMPLETE", "results": results, "errors": [error], "numErrors": 1})

    sink, calls = sink_with(handler)
    results = sink.apply([op("E1"), op("E2"), op("E3")], NoLedger())
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.PERMANENT, Outcome.OK]
    assert [r.crm_id for r in results] == ["91", None, "93"]
    assert [r.created for r in results] == [False, False, True]
    assert results[1].error is not None and "VALIDATION_ERROR" in results[1].error and "E2" in results[1].error
    [(method, path, body)] = calls.calls
    assert (method, path) == ("POST", "/crm/v3/objects/companies/batch/upsert")
    assert body["inputs"][0] == {
        "id": "E1",
        "idProperty": "erp_id",
        "properties": {"name": "Co E1", "erp_id": "E1"},
        "objectWriteTraceId": "E1",
    }


def test_whole_batch_400_is_bisected_to_the_bad_record() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        inputs = orjson.loads(request.content)["inputs"]
        if any(i["properties"].get("industry") == "NOPE" for i in inputs):
            return httpx.Response(
                400,
                json={"status": "error", "category": "VALIDATION_ERROR", "message": "INVALID_OPTION industry"},
            )
        return httpx.Response(200, json={"status": "COMPLETE", "results": upsert_ok(inputs)})

    sink, calls = sink_with(handler)
    ops = [op(f"E{i}", name=f"Co {i}", industry="NOPE" if i == 5 else "RETAIL") for i in range(1, 9)]
    results = sink.apply(ops, NoLedger())
    assert [r.outcome for r in results] == [Outcome.OK] * 4 + [Outcome.PERMANENT] + [Outcome.OK] * 3
    assert results[4].error is not None and "INVALID_OPTION" in results[4].error and "E5" in results[4].error
    assert [r.crm_id for r in results if r.outcome is Outcome.OK] == ["91", "92", "93", "94", "96", "97", "98"]
    # 8 -> 4+4 -> 2+2 -> 1+1: seven calls, not eight single ones plus the batch.
    assert len(calls.calls) == 7


def test_more_than_100_ops_are_split_into_batches_of_100() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        inputs = orjson.loads(request.content)["inputs"]
        return httpx.Response(200, json={"status": "COMPLETE", "results": upsert_ok(inputs)})

    sink, calls = sink_with(handler, concurrency=1)
    results = sink.apply([op(f"E{i}") for i in range(150)], NoLedger())
    assert all(r.outcome is Outcome.OK for r in results)
    assert [r.crm_id for r in results[:3]] == ["90", "91", "92"]
    assert sorted(len(body["inputs"]) for _, _, body in calls.calls) == [50, 100]


def test_429_is_transient_with_retry_after() -> None:
    sink, _ = sink_with(
        lambda request: httpx.Response(
            429, headers={"Retry-After": "7"}, json={"status": "error", "errorType": "RATE_LIMIT", "message": "slow"}
        )
    )
    results = sink.apply([op("E1"), op("E2")], NoLedger())
    assert [(r.outcome, r.retry_after, r.status_code) for r in results] == [(Outcome.TRANSIENT, 7.0, 429)] * 2


def test_429_without_retry_after_waits_the_burst_window() -> None:
    headers = {"X-HubSpot-RateLimit-Remaining": "0", "X-HubSpot-RateLimit-Interval-Milliseconds": "10000"}
    sink, _ = sink_with(lambda request: httpx.Response(429, headers=headers, json={"message": "ten secondly"}))
    [result] = sink.apply([op("E1")], NoLedger())
    assert (result.outcome, result.retry_after) == (Outcome.TRANSIENT, 10.0)


def test_transport_error_is_transient() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    sink, _ = sink_with(handler)
    [result] = sink.apply([op("E1")], NoLedger())
    assert result.outcome is Outcome.TRANSIENT and result.error is not None and "ConnectError" in result.error


class RecordingBudget:
    def __init__(self, exhausted: bool = False) -> None:
        self.exhausted = exhausted
        self.acquired: list[Priority] = []
        self.reported: list[tuple[int, float | None]] = []
        self.daily: list[int] = []

    def acquire(self, priority: Priority = Priority.LIVE, *, max_wait_s: float = 60.0) -> None:
        if self.exhausted:
            raise BudgetExhausted("daily quota used", 120.0)
        self.acquired.append(priority)

    def report(self, status: int, retry_after: float | None = None) -> None:
        self.reported.append((status, retry_after))

    def observe_daily(self, used: int) -> None:
        self.daily.append(used)


def test_every_request_goes_through_the_budget_with_the_sink_priority() -> None:
    budget = RecordingBudget()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/batch/read"):
            return httpx.Response(
                200, json={"status": "COMPLETE", "results": [{"id": "91", "properties": {"erp_id": "E1"}}]}
            )
        if request.url.path.endswith("/batch/archive"):
            return httpx.Response(429, headers={"Retry-After": "3"}, json={"message": "slow"})
        return httpx.Response(204)

    sink, calls = sink_with(handler, budget=budget)
    sink.priority = Priority.BACKFILL
    [result] = sink.apply([op("E1", Action.DELETE)], NoLedger())
    assert (result.outcome, result.retry_after) == (Outcome.TRANSIENT, 3.0)
    assert budget.acquired == [Priority.BACKFILL, Priority.BACKFILL] == [Priority.BACKFILL] * len(calls.calls)
    assert budget.reported == [(200, None), (429, 3.0)]


def test_the_daily_count_hubspot_reports_reaches_the_budget() -> None:
    budget = RecordingBudget()
    daily = {"X-HubSpot-RateLimit-Daily": "1000", "X-HubSpot-RateLimit-Daily-Remaining": "880"}

    def handler(request: httpx.Request) -> httpx.Response:
        found = [{"id": "91", "properties": {"erp_id": "E1"}}]
        if request.url.path.endswith("/batch/read"):
            return httpx.Response(200, headers=daily, json={"status": "COMPLETE", "results": found})
        return httpx.Response(204)  # no headers: nothing to observe

    sink, _ = sink_with(handler, budget=budget)
    [result] = sink.apply([op("E1", Action.DELETE)], NoLedger())
    assert result.outcome is Outcome.OK
    assert budget.daily == [120]


def test_exhausted_budget_is_transient_and_sends_nothing() -> None:
    sink, calls = sink_with(lambda request: httpx.Response(500), budget=RecordingBudget(exhausted=True))
    [result] = sink.apply([op("E1")], NoLedger())
    assert (result.outcome, result.retry_after) == (Outcome.TRANSIENT, 120.0)
    assert calls.calls == []


def test_delete_looks_ids_up_archives_found_and_accepts_gone() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        if request.url.path.endswith("/batch/read"):
            assert body["idProperty"] == "erp_id"
            found = [{"id": "92", "properties": {"erp_id": "E2"}}]
            missing = {
                "status": "error",
                "category": "OBJECT_NOT_FOUND",
                "message": "not found",
                "context": {"ids": ["E3"]},
            }
            return httpx.Response(
                207, json={"status": "COMPLETE", "results": found, "errors": [missing], "numErrors": 1}
            )
        assert request.url.path == "/crm/v3/objects/companies/batch/archive"
        return httpx.Response(204)

    sink, calls = sink_with(handler)
    ops = [
        Operation("companies", "account", Action.DELETE, "E1", crm_id="91"),
        Operation("companies", "account", Action.DELETE, "E2"),
        Operation("companies", "account", Action.DELETE, "E3"),
    ]
    results = sink.apply(ops, NoLedger())
    assert [(r.outcome, r.crm_id) for r in results] == [(Outcome.OK, "91"), (Outcome.OK, "92"), (Outcome.OK, None)]
    archived = [body for _, path, body in calls.calls if path.endswith("/batch/archive")]
    assert archived == [{"inputs": [{"id": "91"}, {"id": "92"}]}]


def test_archive_with_record_upserts_first_then_archives() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        if request.url.path.endswith("/batch/upsert"):
            return httpx.Response(200, json={"status": "COMPLETE", "results": upsert_ok(body["inputs"])})
        return httpx.Response(204)

    sink, calls = sink_with(handler)
    [result] = sink.apply([op("E4", Action.ARCHIVE, name="Gone Co")], NoLedger())
    assert (result.outcome, result.crm_id) == (Outcome.OK, "94")
    assert [path.rsplit("/", 1)[1] for _, path, _ in calls.calls] == ["upsert", "archive"]
    assert calls.calls[1][2] == {"inputs": [{"id": "94"}]}


def test_none_clears_a_property_and_unknown_objects_fail_alone() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        body = orjson.loads(request.content)
        return httpx.Response(200, json={"status": "COMPLETE", "results": upsert_ok(body["inputs"])})

    sink, calls = sink_with(handler)
    bad = Operation("x", "ticket", Action.UPSERT, "T1", {"subject": "s"})
    results = sink.apply([op("E1", name="Co", phone=None), bad], NoLedger())
    assert results[0].outcome is Outcome.OK
    assert results[1].outcome is Outcome.PERMANENT and results[1].error is not None and "ticket" in results[1].error
    assert calls.calls[0][2]["inputs"][0]["properties"] == {"name": "Co", "phone": "", "erp_id": "E1"}


@pytest.mark.parametrize("status", [401, 403])
def test_auth_failures_are_permanent_and_name_the_fix(status: int) -> None:
    sink, _ = sink_with(
        lambda request: httpx.Response(status, json={"message": "bad token", "category": "INVALID_AUTHENTICATION"})
    )
    [result] = sink.apply([op("E1")], NoLedger())
    assert result.outcome is Outcome.PERMANENT and result.error is not None and "private app" in result.error


def test_daily_quota_headers_feed_the_gauges() -> None:
    from replicator.ops.metrics import REGISTRY

    headers = {"X-HubSpot-RateLimit-Daily": "500000", "X-HubSpot-RateLimit-Daily-Remaining": "498765"}
    sink, _ = sink_with(lambda request: httpx.Response(404, headers=headers, json={"message": "none"}))
    assert sink.get("account", "1") is None
    used = REGISTRY.get_sample_value("replicator_crm_api_daily_used", {"crm": "hubspot"})
    limit = REGISTRY.get_sample_value("replicator_crm_api_daily_limit", {"crm": "hubspot"})
    assert (used, limit) == (1235.0, 500000.0)


def seven_is_bad() -> list[Operation]:
    """Companies 1, 5, 10 and 7; only 7 holds a bad value ("10.5" employees), whose error text
    mentions 1, 5 and 10."""
    return [
        Operation("companies", "account", Action.UPSERT, ext, {"numberofemployees": "10.5" if ext == "7" else "3"})
        for ext in ("1", "5", "10", "7")
    ]


def test_ids_a_message_merely_mentions_are_sent_alone_not_failed() -> None:
    # "10.5" mentions the ids 1, 5 and 10; only the record holding the bad value is at fault.
    def handler(request: httpx.Request) -> httpx.Response:
        inputs = orjson.loads(request.content)["inputs"]
        if any(i["properties"].get("numberofemployees") == "10.5" for i in inputs):
            message = "Property values were not valid: 10.5 is not a valid integer"
            return httpx.Response(400, json={"status": "error", "category": "VALIDATION_ERROR", "message": message})
        results = [{"id": f"9{i['id']}", "new": False, "properties": {"erp_id": i["id"]}} for i in inputs]
        return httpx.Response(200, json={"status": "COMPLETE", "results": results})

    sink, _ = sink_with(handler)
    results = sink.apply(seven_is_bad(), NoLedger())
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.OK, Outcome.OK, Outcome.PERMANENT]
    assert [r.crm_id for r in results[:3]] == ["91", "95", "910"]


def test_a_207_error_whose_context_names_no_input_is_learnt_by_sending_alone() -> None:
    # The batch answers no result for 1 (dropped) and 7 (bad), and one error without context.
    def handler(request: httpx.Request) -> httpx.Response:
        inputs = orjson.loads(request.content)["inputs"]
        bad = [i for i in inputs if i["properties"].get("numberofemployees") == "10.5"]
        answered = [i for i in inputs if i not in bad and (len(inputs) == 1 or i["id"] != "1")]
        results = [{"id": f"9{i['id']}", "new": False, "properties": {"erp_id": i["id"]}} for i in answered]
        error = {"status": "error", "category": "VALIDATION_ERROR", "message": "10.5 is not a valid integer"}
        errors = [error] * len(bad)
        return httpx.Response(207 if errors else 200, json={"status": "COMPLETE", "results": results, "errors": errors})

    sink, calls = sink_with(handler)
    results = sink.apply(seven_is_bad(), NoLedger())
    assert [r.outcome for r in results] == [Outcome.OK, Outcome.OK, Outcome.OK, Outcome.PERMANENT]
    assert results[0].crm_id == "91"
    assert results[3].error is not None and "not a valid integer" in results[3].error
    # The batch, then 1 and 7 alone.
    assert sorted(len(body["inputs"]) for _, _, body in calls.calls) == [1, 1, 4]


def test_results_without_the_id_property_are_not_matched_by_position() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        inputs = orjson.loads(request.content)["inputs"]
        results = [{"id": f"9{n}", "new": False, "properties": {"name": "?"}} for n, _ in enumerate(inputs)]
        return httpx.Response(200, json={"status": "COMPLETE", "results": list(reversed(results))})

    sink, _ = sink_with(handler)
    results = sink.apply([op("E1"), op("E2")], NoLedger())
    assert [r.outcome for r in results] == [Outcome.TRANSIENT, Outcome.TRANSIENT]
    assert [r.crm_id for r in results] == [None, None]
    assert results[0].error is not None and "without a result for it" in results[0].error
