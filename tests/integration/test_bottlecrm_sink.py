"""BottleCrmSink against a real BottleCRM server (tests/fixtures/crm.py)."""

from __future__ import annotations

import threading
from decimal import Decimal
from typing import Any

import httpx
import pytest

from replicator.devstack.bottlecrm import BottleCrm
from replicator.sinks.base import Action, Operation, Outcome, Result
from replicator.sinks.bottlecrm import BottleCrmSink

pytestmark = pytest.mark.integration


class MemoryLedger:
    """IntentLedger in memory: an intent stays open until finish_create resolves it."""

    def __init__(self) -> None:
        self.crash_before_finish = False  # simulate dying between the CRM call and the ledger write
        self.open: dict[tuple[str, str], Operation] = {}
        self.finished: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def begin_create(self, op: Operation) -> bool:
        with self._lock:
            key = (op.object, op.external_id)
            existed = key in self.open
            self.open[key] = op
            return existed

    def finish_create(self, op: Operation, crm_id: str) -> None:
        if self.crash_before_finish:
            return
        with self._lock:
            self.open.pop((op.object, op.external_id), None)
            self.finished[(op.object, op.external_id)] = crm_id


def upsert(obj: str, ext: str, record: dict[str, Any], crm_id: str | None = None) -> Operation:
    return Operation(entity=obj, object=obj, action=Action.UPSERT, external_id=ext, record=record, crm_id=crm_id)


def one(sink: BottleCrmSink, op: Operation, ledger: MemoryLedger | None = None) -> Result:
    [result] = sink.apply([op], ledger or MemoryLedger())
    return result


def ok(result: Result) -> str:
    assert result.outcome is Outcome.OK, result.error
    assert result.crm_id
    return result.crm_id


def all_records(sink: BottleCrmSink, obj: str) -> list[dict[str, Any]]:
    return list(sink.iter_records(obj))


@pytest.fixture
def account_id(crm: BottleCrmSink) -> str:
    return ok(one(crm, upsert("account", "ACC-1", {"name": "Parent Co"})))


def _records(account_id: str) -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """Per object: (create record, update record)."""
    return {
        "account": (
            {"name": "Acme", "city": "Paris", "email": "info@acme.test", "industry": "TECHNOLOGY"},
            {"name": "Acme", "city": "Lyon", "phone": "+33102030405"},
        ),
        "contact": (
            {"first_name": "Ada", "last_name": "Lovelace", "email": "ada@acme.test", "account": account_id},
            {"first_name": "Ada", "last_name": "King", "title": "Countess"},
        ),
        "product": (
            {"name": "Widget", "price": Decimal("9.50"), "currency": "EUR"},
            {"name": "Widget XL", "price": Decimal("12.00")},
        ),
        "opportunity": (
            {"name": "Big deal", "account": account_id, "amount": Decimal("1000"), "stage": "PROSPECTING"},
            {"name": "Big deal", "stage": "CLOSED_WON", "amount": Decimal("1200"), "closed_on": "2026-01-31"},
        ),
    }


def _assert_fields(record: dict[str, Any], expected: dict[str, Any]) -> None:
    for key, value in expected.items():
        have = record[key]
        if isinstance(have, dict) and "id" in have:  # nested relation, e.g. contact.account
            have = have["id"]
        if isinstance(value, Decimal):
            assert Decimal(str(have)) == value, key
        else:
            assert have == value, key


@pytest.mark.parametrize("obj", ["account", "contact", "product", "opportunity"])
def test_create_update_archive_delete(crm: BottleCrmSink, account_id: str, obj: str) -> None:
    create, update = _records(account_id)[obj]
    ext = f"{obj.upper()}-42"

    created = one(crm, upsert(obj, ext, create))
    crm_id = ok(created)
    assert created.created
    record = crm.get(obj, crm_id)
    assert record is not None and record["external_id"] == ext
    _assert_fields(record, create)
    assert crm.lookup(obj, ext) is not None and crm.lookup(obj, ext)["id"] == crm_id  # type: ignore[index]

    updated = one(crm, upsert(obj, ext, update, crm_id=crm_id))
    assert ok(updated) == crm_id and not updated.created
    record = crm.get(obj, crm_id)
    assert record is not None
    _assert_fields(record, update)
    assert record["external_id"] == ext  # a partial update keeps the external id

    archive = Operation(entity=obj, object=obj, action=Action.ARCHIVE, external_id=ext, crm_id=crm_id)
    assert ok(one(crm, archive)) == crm_id
    record = crm.get(obj, crm_id)
    assert record is not None and record["is_active"] is False
    assert [r["id"] for r in all_records(crm, obj) if r["external_id"] == ext] == [crm_id]

    delete = Operation(entity=obj, object=obj, action=Action.DELETE, external_id=ext, crm_id=crm_id)
    assert ok(one(crm, delete)) == crm_id
    assert crm.get(obj, crm_id) is None
    assert crm.lookup(obj, ext) is None
    # Deleting again (a replay) is fine: 404 means done.
    assert one(crm, delete).outcome is Outcome.OK


def test_delete_and_archive_by_external_id_without_crm_id(crm: BottleCrmSink) -> None:
    crm_id = ok(one(crm, upsert("account", "A-7", {"name": "Seven"})))
    archive = Operation(entity="a", object="account", action=Action.ARCHIVE, external_id="A-7")
    assert ok(one(crm, archive)) == crm_id
    assert crm.get("account", crm_id)["is_active"] is False  # type: ignore[index]
    delete = Operation(entity="a", object="account", action=Action.DELETE, external_id="A-7")
    assert ok(one(crm, delete)) == crm_id
    assert crm.get("account", crm_id) is None
    # Nothing left to delete or archive: OK without an id.
    assert one(crm, delete) == Result(Outcome.OK)
    assert one(crm, archive) == Result(Outcome.OK)


@pytest.mark.parametrize(
    ("obj", "record"),
    [
        ("contact", {"first_name": "No", "last_name": "Email"}),  # no natural key to trip over
        ("product", {"name": "Gadget", "price": "3.00"}),  # duplicate SKU is an HTML 500 upstream
        ("account", {"name": "Crashy"}),
    ],
)
def test_create_intent_recovery_after_crash(crm: BottleCrmSink, obj: str, record: dict[str, Any]) -> None:
    ledger = MemoryLedger()
    ledger.crash_before_finish = True
    first = one(crm, upsert(obj, "X-1", record), ledger)
    first_id = ok(first)
    assert first.created
    assert (obj, "X-1") in ledger.open  # never resolved

    # Restarted: the ledger reports the unresolved intent, the sink finds the record.
    ledger.crash_before_finish = False
    again = one(crm, upsert(obj, "X-1", record), ledger)
    assert ok(again) == first_id
    assert not again.created
    assert ledger.finished[(obj, "X-1")] == first_id and not ledger.open
    assert [r["id"] for r in all_records(crm, obj)] == [first_id]


def test_lost_id_map_adopts_own_record_on_name_clash(crm: BottleCrmSink) -> None:
    first_id = ok(one(crm, upsert("account", "A-1", {"name": "Globex"})))
    # Same external id, no crm_id, no open intent (e.g. the id map was rebuilt).
    again = one(crm, upsert("account", "A-1", {"name": "Globex", "city": "Springfield"}))
    assert ok(again) == first_id and not again.created
    assert crm.get("account", first_id)["city"] == "Springfield"  # type: ignore[index]
    assert len(all_records(crm, "account")) == 1


def test_update_of_record_deleted_in_crm_recreates(crm: BottleCrmSink) -> None:
    old_id = ok(one(crm, upsert("contact", "C-1", {"first_name": "Bob", "last_name": "B", "email": "bob@x.test"})))
    one(crm, Operation(entity="c", object="contact", action=Action.DELETE, external_id="C-1", crm_id=old_id))
    again = one(
        crm,
        upsert("contact", "C-1", {"first_name": "Bob", "last_name": "B", "email": "bob@x.test"}, crm_id=old_id),
    )
    assert again.created and ok(again) != old_id
    assert crm.lookup("contact", "C-1")["id"] == again.crm_id  # type: ignore[index]


@pytest.mark.parametrize(
    ("obj", "record", "key"),
    [
        ("account", {"name": "Initech"}, "name"),
        ("contact", {"first_name": "Peter", "last_name": "Gibbons", "email": "peter@initech.test"}, "email"),
        ("opportunity", {"name": "TPS reports"}, "name"),
    ],
)
def test_natural_key_owned_by_another_external_id_is_permanent(
    crm: BottleCrmSink, obj: str, record: dict[str, Any], key: str
) -> None:
    owner_id = ok(one(crm, upsert(obj, "OWNER-1", record)))
    clash = one(crm, upsert(obj, "INTRUDER-2", record))
    assert clash.outcome is Outcome.PERMANENT
    assert clash.error and "OWNER-1" in clash.error and "INTRUDER-2" in clash.error and owner_id in clash.error
    assert key in clash.error
    assert [r["external_id"] for r in all_records(crm, obj)] == ["OWNER-1"]


@pytest.mark.parametrize(
    ("obj", "path", "record", "key"),
    [
        ("account", "/api/accounts/", {"name": "Hand Made Ltd"}, "name"),
        (
            "contact",
            "/api/contacts/",
            {"first_name": "Manual", "last_name": "Entry", "email": "manual@x.test"},
            "email",
        ),
        ("opportunity", "/api/opportunities/", {"name": "Hand deal"}, "name"),
    ],
)
def test_claims_record_without_external_id(
    crm: BottleCrmSink, bottlecrm: BottleCrm, obj: str, path: str, record: dict[str, Any], key: str
) -> None:
    # Someone typed the record into the CRM before the replicator knew about it.
    resp = httpx.post(f"{bottlecrm.url}{path}", json=record, headers={"Authorization": f"Bearer {bottlecrm.token}"})
    assert resp.status_code == 200, resp.text
    manual_id = resp.json()["id"]
    assert crm.lookup(obj, "ERP-9") is None

    result = one(crm, upsert(obj, "ERP-9", {**record, "description": "from ERP"}))
    assert ok(result) == manual_id and not result.created
    claimed = crm.get(obj, manual_id)
    assert claimed is not None and claimed["external_id"] == "ERP-9" and claimed["description"] == "from ERP"
    assert len(all_records(crm, obj)) == 1


def test_product_sku_must_be_the_external_id(crm: BottleCrmSink) -> None:
    bad = one(crm, upsert("product", "SKU-1", {"name": "Thing", "sku": "OTHER"}))
    assert bad.outcome is Outcome.PERMANENT and bad.error and "SKU" in bad.error
    good = one(crm, upsert("product", "SKU-1", {"name": "Thing", "sku": "SKU-1"}))
    assert crm.get("product", ok(good))["sku"] == "SKU-1"  # type: ignore[index]


def test_validation_error_is_permanent_with_crm_body(crm: BottleCrmSink) -> None:
    result = one(crm, upsert("opportunity", "O-1", {"name": "Bad stage", "stage": "NOT_A_STAGE"}))
    assert result.outcome is Outcome.PERMANENT and result.status_code == 400
    assert result.error and "stage" in result.error
    assert crm.lookup("opportunity", "O-1") is None


def test_bad_token_is_permanent(bottlecrm: BottleCrm, crm: BottleCrmSink) -> None:
    sink = BottleCrmSink(bottlecrm.url, "bcrm_pat_not-a-real-token")
    try:
        result = one(sink, upsert("account", "A-1", {"name": "Nope"}))
        assert result.outcome is Outcome.PERMANENT and result.status_code == 403
        assert result.error and result.error.startswith("token rejected")
        [(name, passed, detail)] = sink.check()
        assert name == "credentials" and not passed and "403" in detail
    finally:
        sink.close()
    assert all_records(crm, "account") == []


def test_unreachable_crm_is_transient() -> None:
    sink = BottleCrmSink("http://127.0.0.1:9", "x", timeout=2)
    try:
        result = one(sink, upsert("account", "A-1", {"name": "Nope"}))
        assert result.outcome is Outcome.TRANSIENT and result.error and "ConnectError" in result.error
    finally:
        sink.close()


def test_check_and_idempotent_setup(crm: BottleCrmSink) -> None:
    crm.ensure_setup()  # second time: nothing to do
    checks = crm.check()
    assert all(passed for _, passed, _ in checks), checks
    assert {name for name, _, _ in checks} >= {"credentials", "custom field Account.erp_id"}


def test_concurrent_batch_keeps_order(crm: BottleCrmSink) -> None:
    ops = [upsert("account", f"B-{i}", {"name": f"Batch {i}"}) for i in range(12)]
    results = crm.apply(ops, MemoryLedger())
    assert [r.outcome for r in results] == [Outcome.OK] * 12
    by_ext = {r["external_id"]: r for r in all_records(crm, "account")}
    for i, result in enumerate(results):
        assert by_ext[f"B-{i}"]["id"] == result.crm_id and by_ext[f"B-{i}"]["name"] == f"Batch {i}"


def test_iter_records_pages_through_active_and_archived(crm: BottleCrmSink) -> None:
    ops = [upsert("product", f"P-{i:03}", {"name": f"Product {i}", "price": "1.00"}) for i in range(105)]
    results = crm.apply(ops, MemoryLedger())
    assert all(r.outcome is Outcome.OK for r in results), [r.error for r in results if r.error][:3]
    archive = Operation(entity="p", object="product", action=Action.ARCHIVE, external_id="P-007")
    ok(one(crm, archive))
    records = all_records(crm, "product")
    assert sorted(r["external_id"] for r in records) == [f"P-{i:03}" for i in range(105)]
    assert [r["external_id"] for r in records if not r["is_active"]] == ["P-007"]


def test_same_name_race_in_one_batch_leaves_one_record(crm: BottleCrmSink) -> None:
    # Two ERP rows that map to one account name, applied concurrently: BottleCRM's
    # name check races (its HTML 500), and the sink must not end up with two records.
    ops = [upsert("account", f"R-{i}", {"name": "Racy Corp"}) for i in range(2)]
    results = crm.apply(ops, MemoryLedger())
    assert sorted(r.outcome for r in results).count(Outcome.OK) == 1, results
    loser = next(r for r in results if r.outcome is not Outcome.OK)
    assert loser.outcome in (Outcome.PERMANENT, Outcome.TRANSIENT) and loser.error
    [record] = all_records(crm, "account")
    assert record["id"] == next(r.crm_id for r in results if r.outcome is Outcome.OK)


def test_check_reports_a_deactivated_custom_field_and_setup_restores_it(
    crm: BottleCrmSink, bottlecrm: BottleCrm
) -> None:
    headers = {"Authorization": f"Bearer {bottlecrm.token}"}
    defs = httpx.get(f"{bottlecrm.url}/api/custom-fields/?target_model=Contact", headers=headers).json()
    [field] = [d for d in defs["definitions"] if d["key"] == "erp_id"]
    httpx.delete(f"{bottlecrm.url}/api/custom-fields/{field['id']}/", headers=headers).raise_for_status()
    try:
        failing = {name: detail for name, passed, detail in crm.check() if not passed}
        assert list(failing) == ["custom field Contact.erp_id"]
        assert "inactive" in failing["custom field Contact.erp_id"]
        assert "ensure_setup" in failing["custom field Contact.erp_id"]
    finally:
        crm.ensure_setup()
    assert all(passed for _, passed, _ in crm.check())
    assert ok(one(crm, upsert("contact", "C-5", {"first_name": "Re", "last_name": "Stored"})))
    assert crm.lookup("contact", "C-5") is not None


def test_lost_id_map_adopts_product_after_duplicate_sku_html_500(crm: BottleCrmSink) -> None:
    first_id = ok(one(crm, upsert("product", "SKU-9", {"name": "Bolt", "price": "1.00"})))
    # BottleCRM answers a duplicate SKU with an HTML 500; the sink re-queries and adopts.
    again = one(crm, upsert("product", "SKU-9", {"name": "Bolt", "price": "2.00"}))
    assert ok(again) == first_id and not again.created
    assert crm.get("product", first_id)["price"] == "2.00"  # type: ignore[index]
    assert len(all_records(crm, "product")) == 1
