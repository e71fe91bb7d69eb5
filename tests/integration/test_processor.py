"""The batch processor on a real ERP and state store, with a sink that records what it is asked."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import psycopg

from replicator.change import Change, Op, Position
from replicator.config import parse_config
from replicator.mapping.catalog import read_catalog
from replicator.mapping.entity import compile_mappings
from replicator.mapping.plan import Planner
from replicator.mapping.reader import ErpReader
from replicator.pipeline.processor import Processor
from replicator.sinks.base import Action, IntentLedger, Operation, Outcome, Result
from replicator.state.migrations import migrate
from replicator.state.store import StateStore

CONFIG = """\
erp: {dsn: x}
crm: {kind: discard}
mappings:
  accounts:
    table: accounts
    object: account
    fields: {name: name}
  people:
    table: people
    object: contact
    fields: {first_name: name}
    lookups:
      account: {entity: accounts, key: account_id}
"""


class RecordingSink:
    name = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[str, Action, str]] = []

    def apply(self, ops: Sequence[Operation], ledger: IntentLedger) -> list[Result]:
        self.calls.extend((op.entity, op.action, op.external_id) for op in ops)
        return [Result(Outcome.OK, crm_id=op.crm_id or f"crm-{op.entity}-{op.external_id}") for op in ops]

    def close(self) -> None:
        pass


def change(table: str, op: Op, row: dict[str, Any], lsn: int) -> Change:
    return Change(
        "t",
        f"public.{table}",
        op,
        (row["id"],),
        row if op is Op.DELETE else None,
        None if op is Op.DELETE else row,
        Position("s", lsn),
    )


def setup(dsn: str) -> tuple[Processor, RecordingSink]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id int PRIMARY KEY, name text)")
        conn.execute("CREATE TABLE people (id int PRIMARY KEY, account_id int, name text)")
        catalog = read_catalog(conn, ["public.accounts", "public.people"])
    migrate(dsn)
    entities = compile_mappings(parse_config(CONFIG, "t.yaml", {}).mappings, catalog)
    sink = RecordingSink()
    cfg = parse_config(CONFIG, "t.yaml", {})
    return Processor(Planner(entities), ErpReader(dsn), StateStore(dsn), sink, cfg.pipeline.retry), sink


def test_writes_go_parents_first_and_deletes_children_first(pg_db: str) -> None:
    processor, sink = setup(pg_db)
    processor.process(
        [
            change("accounts", Op.CREATE, {"id": 1, "name": "A"}, 10),
            change("people", Op.CREATE, {"id": 5, "account_id": 1, "name": "P"}, 10),
        ]
    )
    assert sink.calls == [("accounts", Action.UPSERT, "1"), ("people", Action.UPSERT, "5")]
    sink.calls.clear()
    # One batch: the child arrives first in the stream, then the parent's delete.
    processor.process(
        [
            change("people", Op.DELETE, {"id": 5, "account_id": 1, "name": "P"}, 20),
            change("accounts", Op.DELETE, {"id": 1, "name": "A"}, 20),
            change("accounts", Op.CREATE, {"id": 2, "name": "B"}, 21),
            change("people", Op.CREATE, {"id": 6, "account_id": 2, "name": "Q"}, 21),
        ]
    )
    assert sink.calls == [
        ("accounts", Action.UPSERT, "2"),
        ("people", Action.UPSERT, "6"),
        ("people", Action.DELETE, "5"),
        ("accounts", Action.DELETE, "1"),
    ]


def test_a_child_whose_parent_never_synced_brings_the_parent_along(pg_db: str) -> None:
    processor, sink = setup(pg_db)
    with psycopg.connect(pg_db, autocommit=True) as conn:
        conn.execute("INSERT INTO accounts VALUES (3, 'created before the slot')")
    processor.process([change("people", Op.CREATE, {"id": 7, "account_id": 3, "name": "R"}, 30)])
    assert sink.calls == [("accounts", Action.UPSERT, "3"), ("people", Action.UPSERT, "7")]
    with psycopg.connect(pg_db) as conn:
        synced = conn.execute("SELECT entity, erp_key, status FROM replicator.sync_state ORDER BY 1").fetchall()
    assert synced == [("accounts", "3", "synced"), ("people", "7", "synced")]
