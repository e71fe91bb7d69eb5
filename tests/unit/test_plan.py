from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from replicator.change import Change, Op, Position
from replicator.config import parse_config
from replicator.mapping.catalog import TableInfo
from replicator.mapping.entity import compile_mappings
from replicator.mapping.expr import MappingError
from replicator.mapping.plan import Planner, Skip, Target, payload_hash
from replicator.sinks.base import Action


def table(name: str, columns: dict[str, str]) -> TableInfo:
    return TableInfo(name, tuple(columns), columns, ("id",), "d")


CATALOG = {
    "public.customers": table(
        "public.customers",
        {"id": "bigint", "name": "text", "credit": "numeric(14,2)", "active": "boolean", "created_at": "timestamptz"},
    ),
    "public.contacts": table(
        "public.contacts",
        {"id": "bigint", "customer_id": "bigint", "first": "text", "last": "text", "status": "text"},
    ),
}

CONFIG = """\
erp: {dsn: x}
crm: {kind: discard}
mappings:
  contacts:
    table: contacts
    object: contact
    external_id: "'CONT-' || id"
    filter: "status <> 'draft'"
    fields:
      full_name: "first || ' ' || upper(last)"
    lookups:
      account: {entity: customers, key: customer_id}
    on_delete: archive
  customers:
    table: customers
    object: account
    fields:
      name: name
      credit: credit
      since: created_at
    soft_delete: NOT active
"""


class NoReader:
    """Every row the planner needs is in the changes; touching the ERP is a bug here."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"unexpected ERP read: {name}")


def entities(config: str = CONFIG) -> dict[str, Any]:
    return compile_mappings(parse_config(config, "t.yaml", {}).mappings, CATALOG)


def ids(known: dict[tuple[str, str], str]) -> Any:
    def crm_ids(entity: str, keys: Iterable[str]) -> dict[str, str]:
        return {k: known[(entity, k)] for k in keys if (entity, k) in known}

    return crm_ids


def no_hashes(entity: str, keys: Iterable[str]) -> dict[str, tuple[str | None, str]]:
    return {}


def target(ents: dict[str, Any], name: str, row: dict[str, Any] | None, op: Op = Op.UPDATE, key: tuple = ()) -> Target:
    ent = ents[name]
    k = ent.key_of(row) if row else key
    change = Change("t", ent.table, op, k, None if row else dict(zip(ent.key, k, strict=True)), row, Position("s", 1))
    return Target(ent, k, change, row, deleted=op is Op.DELETE)


def test_fields_are_mapped_and_values_made_json_safe() -> None:
    ents = entities()
    row = {
        "id": 7,
        "name": "Acme",
        "credit": Decimal("12.30"),
        "active": True,
        "created_at": datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
    }
    (p,) = Planner(ents).plan([target(ents, "customers", row)], NoReader(), ids({}), no_hashes)  # type: ignore[arg-type]
    assert p.op is not None
    assert p.op.action is Action.UPSERT
    assert p.op.external_id == "7"
    assert p.op.record == {"name": "Acme", "credit": "12.30", "since": "2024-01-02T03:04:05+00:00"}
    assert p.op.idempotency_key.startswith("customers:7:upsert:")


def test_soft_delete_archives_synced_and_unsynced_records() -> None:
    ents = entities()
    row = {"id": 7, "name": "Acme", "credit": None, "active": False, "created_at": None}
    planner = Planner(ents)
    (p,) = planner.plan([target(ents, "customers", row)], NoReader(), ids({("customers", "7"): "crm-1"}), no_hashes)  # type: ignore[arg-type]
    assert p.op is not None and p.op.action is Action.ARCHIVE and p.op.crm_id == "crm-1"
    # Never synced: still sent, archived, so that history (orders of a former customer) keeps its parent.
    (p,) = planner.plan([target(ents, "customers", row)], NoReader(), ids({}), no_hashes)  # type: ignore[arg-type]
    assert p.op is not None and p.op.action is Action.ARCHIVE and p.op.record["name"] == "Acme"


def test_lookup_resolves_the_parent_crm_id() -> None:
    ents = entities()
    row = {"id": 3, "customer_id": 7, "first": "Ada", "last": "Lovelace", "status": "active"}
    (p,) = Planner(ents).plan(
        [target(ents, "contacts", row)], NoReader(), ids({("customers", "7"): "acc-9"}), no_hashes
    )  # type: ignore[arg-type]
    assert p.op is not None
    assert p.op.external_id == "CONT-3"
    assert p.op.record == {"full_name": "Ada LOVELACE", "account": "acc-9"}


def test_missing_required_parent_is_a_planning_error_naming_the_parent() -> None:
    ents = entities()
    row = {"id": 3, "customer_id": 7, "first": "Ada", "last": "L", "status": "active"}
    (p,) = Planner(ents).plan([target(ents, "contacts", row)], NoReader(), ids({}), no_hashes)  # type: ignore[arg-type]
    assert p.op is None and p.error is not None
    assert "customers 7" in p.error and "contacts.account" in p.error


def test_filter_leaving_the_synced_set_applies_the_delete_policy() -> None:
    ents = entities()
    row = {"id": 3, "customer_id": 7, "first": "Ada", "last": "L", "status": "draft"}
    known = ids({("customers", "7"): "acc-9", ("contacts", "CONT-3"): "c-3"})
    (p,) = Planner(ents).plan([target(ents, "contacts", row)], NoReader(), known, no_hashes)  # type: ignore[arg-type]
    assert p.op is not None and p.op.action is Action.ARCHIVE  # on_delete: archive
    (p,) = Planner(ents).plan([target(ents, "contacts", row)], NoReader(), ids({}), no_hashes)  # type: ignore[arg-type]
    assert p.skip is Skip.FILTERED


def test_delete_follows_on_delete_and_unknown_records_are_skipped() -> None:
    ents = entities()
    t = target(ents, "customers", None, Op.DELETE, key=(7,))
    (p,) = Planner(ents).plan([t], NoReader(), ids({("customers", "7"): "acc-9"}), no_hashes)  # type: ignore[arg-type]
    assert p.op is not None and p.op.action is Action.DELETE and p.op.crm_id == "acc-9"
    (p,) = Planner(ents).plan([t], NoReader(), ids({}), no_hashes)  # type: ignore[arg-type]
    assert p.skip is Skip.FILTERED


def test_an_acknowledged_identical_payload_is_not_sent_again() -> None:
    ents = entities()
    row = {"id": 7, "name": "Acme", "credit": None, "active": True, "created_at": None}
    record = {"name": "Acme", "credit": None, "since": None}
    digest = payload_hash(Action.UPSERT, record)

    def hashes(entity: str, keys: Iterable[str]) -> dict[str, tuple[str | None, str]]:
        return {"7": (digest, "synced")}

    (p,) = Planner(ents).plan([target(ents, "customers", row)], NoReader(), ids({("customers", "7"): "a"}), hashes)  # type: ignore[arg-type]
    assert p.skip is Skip.UNCHANGED


def test_parents_rank_before_children() -> None:
    ents = entities()
    assert ents["customers"].rank == 0
    assert ents["contacts"].rank == 1


def test_lookup_cycle_is_a_startup_error() -> None:
    cyclic = CONFIG.replace(
        "    soft_delete: NOT active\n",
        "    soft_delete: NOT active\n    lookups:\n      owner: {entity: contacts, key: id}\n",
    )
    with pytest.raises(MappingError) as err:
        entities(cyclic)
    assert "cycle" in str(err.value)


def test_unknown_column_is_located_with_a_suggestion() -> None:
    bad = CONFIG.replace("name: name", "name: nmae")
    with pytest.raises(MappingError) as err:
        entities(bad)
    assert "mappings.customers.fields.name" in str(err.value)
    assert "name" in str(err.value)


def test_unknown_table_is_a_startup_error() -> None:
    bad = CONFIG.replace("table: customers", "table: customer")
    with pytest.raises(MappingError) as err:
        entities(bad)
    assert "public.customer does not exist" in str(err.value)


RELATED_CONFIG = """\
erp: {dsn: x}
crm: {kind: discard}
mappings:
  customers:
    table: customers
    object: account
    related:
      email: {table: contacts, join: {customer_id: id}, where: "status = 'email'"}
    fields:
      name: name
      email: email.last
"""


class JoinReader:
    """Answers the planner's routing questions from memory: join value -> base key."""

    def __init__(self) -> None:
        self.queries = 0

    def base_keys_by_join(self, table: str, key: Any, rel: Any, values: list[tuple[Any, ...]]) -> list[Any]:
        self.queries += 1
        return [(v, v) for v in values]


def contact_change(customer_id: int, op: Op, n: int) -> Change:
    row = {"id": 100 + n, "customer_id": customer_id, "status": "email", "last": f"x{n}@example.com"}
    return Change(
        "t",
        "public.contacts",
        op,
        (row["id"],),
        row if op is Op.DELETE else None,
        None if op is Op.DELETE else row,
        Position("s", n),
    )


def test_related_changes_resync_their_parent_with_one_lookup_per_batch() -> None:
    ents = entities(RELATED_CONFIG)
    reader = JoinReader()
    changes = [contact_change(1, Op.UPDATE, 1), contact_change(2, Op.CREATE, 2), contact_change(1, Op.UPDATE, 3)]
    targets = Planner(ents).targets(changes, reader)  # type: ignore[arg-type]
    assert sorted(t.key for t in targets) == [(1,), (2,)]
    assert all(t.row is None and not t.deleted for t in targets)  # re-read from the ERP when planned
    assert reader.queries == 1


def test_a_related_change_never_overrides_the_parents_delete() -> None:
    ents = entities(RELATED_CONFIG)
    parent_delete = Change("t", "public.customers", Op.DELETE, (1,), {"id": 1}, None, Position("s", 1))
    targets = Planner(ents).targets([parent_delete, contact_change(1, Op.DELETE, 2)], JoinReader())  # type: ignore[arg-type]
    assert len(targets) == 1 and targets[0].deleted


def test_a_failed_record_is_resent_even_with_its_last_successful_payload() -> None:
    ents = entities()
    row = {"id": 7, "name": "Acme", "credit": None, "active": True, "created_at": None}
    digest = payload_hash(Action.UPSERT, {"name": "Acme", "credit": None, "since": None})

    def hashes(entity: str, keys: Iterable[str]) -> dict[str, tuple[str | None, str]]:
        return {"7": (digest, "failed")}

    known = ids({("customers", "7"): "a"})
    (p,) = Planner(ents).plan([target(ents, "customers", row)], NoReader(), known, hashes)  # type: ignore[arg-type]
    assert p.op is not None and p.op.payload_hash == digest
