"""Rendering ERP writes as SQL for PostgreSQL, MariaDB and SQL Server."""

from __future__ import annotations

import re

import pytest
import sqlglot
from hypothesis import given
from hypothesis import strategies as st
from sqlglot import exp

from replicator.sinks.erp.model import ChildWrite, RowWrite
from replicator.sinks.erp.sql import Statement, render, render_select_by

ORDER = RowWrite(
    "public.sales_orders",
    "insert",
    values={"order_no": "SO-1", "total": "12.50"},
    audit={"ordered_at": "now()", "created_by": "'replicator'"},
    returning=("id", "order_no"),
)


def test_insert_in_each_dialect() -> None:
    assert render(ORDER, "postgres") == Statement(
        'INSERT INTO "public"."sales_orders" ("order_no", "total", "ordered_at", "created_by") '
        'VALUES (%s, %s, CURRENT_TIMESTAMP, \'replicator\') RETURNING "id", "order_no"',
        ["SO-1", "12.50"],
    )
    assert render(ORDER, "mysql") == Statement(
        "INSERT INTO `public`.`sales_orders` (`order_no`, `total`, `ordered_at`, `created_by`) "
        "VALUES (%s, %s, CURRENT_TIMESTAMP(), 'replicator') RETURNING `id`, `order_no`",
        ["SO-1", "12.50"],
    )
    assert render(ORDER, "tsql") == Statement(
        "INSERT INTO [public].[sales_orders] ([order_no], [total], [ordered_at], [created_by]) "
        "OUTPUT INSERTED.[id], INSERTED.[order_no] VALUES (?, ?, GETDATE(), 'replicator')",
        ["SO-1", "12.50"],
    )


def test_update_in_each_dialect() -> None:
    w = RowWrite(
        "erp.customers",
        "update",
        key={"id": 7},
        values={"name": "Acme"},
        audit={"updated_at": "now()"},
        returning=("updated_at",),
    )
    assert render(w, "postgres") == Statement(
        'UPDATE "erp"."customers" SET "name" = %s, "updated_at" = CURRENT_TIMESTAMP WHERE "id" = %s '
        'RETURNING "updated_at"',
        ["Acme", 7],
    )
    # MariaDB has no UPDATE ... RETURNING: the writer re-reads the row in the same transaction.
    assert render(w, "mysql") == Statement(
        "UPDATE `erp`.`customers` SET `name` = %s, `updated_at` = CURRENT_TIMESTAMP() WHERE `id` = %s", ["Acme", 7]
    )
    assert render(w, "tsql") == Statement(
        "UPDATE [erp].[customers] SET [name] = ?, [updated_at] = GETDATE() OUTPUT INSERTED.[updated_at] WHERE [id] = ?",
        ["Acme", 7],
    )


def test_delete_in_each_dialect() -> None:
    w = RowWrite("erp.customers", "delete", key={"id": 7, "code": "C7"}, returning=("id",))
    assert render(w, "postgres") == Statement(
        'DELETE FROM "erp"."customers" WHERE "id" = %s AND "code" = %s RETURNING "id"', [7, "C7"]
    )
    assert render(w, "mysql") == Statement(
        "DELETE FROM `erp`.`customers` WHERE `id` = %s AND `code` = %s RETURNING `id`", [7, "C7"]
    )
    assert render(w, "tsql") == Statement(
        "DELETE [erp].[customers] OUTPUT DELETED.[id] FROM [erp].[customers] WHERE [id] = ? AND [code] = ?", [7, "C7"]
    )
    plain = RowWrite("erp.customers", "delete", key={"id": 7})
    assert render(plain, "tsql") == Statement("DELETE FROM [erp].[customers] WHERE [id] = ?", [7])


def test_an_insert_of_defaults_only() -> None:
    w = RowWrite("s.t", "insert", returning=("id",))
    assert render(w, "postgres").sql == 'INSERT INTO "s"."t" DEFAULT VALUES RETURNING "id"'
    assert render(w, "mysql").sql == "INSERT INTO `s`.`t` VALUES () RETURNING `id`"
    assert render(w, "tsql").sql == "INSERT INTO [s].[t] OUTPUT INSERTED.[id] DEFAULT VALUES"


def test_values_never_enter_the_sql_text() -> None:
    evil = "x'); DROP TABLE customers; --"
    w = RowWrite("public.customers", "update", key={"code": evil}, values={"notes": evil, "name": "100% 'sure'"})
    for dialect in ("postgres", "mysql", "tsql"):
        statement = render(w, dialect)  # type: ignore[arg-type]
        assert "DROP" not in statement.sql and "sure" not in statement.sql
        assert statement.params == [evil, "100% 'sure'", evil]


def test_odd_identifiers_are_quoted_and_percent_is_escaped_for_the_drivers() -> None:
    w = RowWrite('we"ird.ta`b]le', "insert", values={"select": 1, "100%": 2, "a b": 3, "%s": 4}, returning=("id",))
    assert render(w, "postgres").sql == (
        'INSERT INTO "we""ird"."ta`b]le" ("select", "100%%", "a b", "%%s") VALUES (%s, %s, %s, %s) RETURNING "id"'
    )
    assert render(w, "mysql").sql == (
        'INSERT INTO `we"ird`.`ta``b]le` (`select`, `100%%`, `a b`, `%%s`) VALUES (%s, %s, %s, %s) RETURNING `id`'
    )
    assert render(w, "tsql").sql == (
        'INSERT INTO [we"ird].[ta`b]]le] ([select], [100%], [a b], [%s]) OUTPUT INSERTED.[id] VALUES (?, ?, ?, ?)'
    )


def _unpercent(sql: str) -> tuple[str, int]:
    """What psycopg/PyMySQL send for `sql`: %% -> %, and each %s a parameter (rendered as NULL here)."""
    count = 0

    def sub(m: re.Match[str]) -> str:
        nonlocal count
        if m.group(1) == "%":
            return "%"
        count += 1
        return "NULL"

    return re.sub(r"%([%s])", sub, sql), count


names = st.text(st.characters(exclude_characters="\x00", exclude_categories=("Cs",)), min_size=1, max_size=12)


@given(table=names.filter(lambda t: "." not in t), columns=st.lists(names, min_size=1, max_size=4, unique=True))
def test_any_identifier_survives_rendering(table: str, columns: list[str]) -> None:
    w = RowWrite(f"sch.{table}", "insert", values={c: i for i, c in enumerate(columns)})
    for dialect in ("postgres", "mysql"):
        sql, count = _unpercent(render(w, dialect).sql)  # type: ignore[arg-type]
        assert count == len(columns)
        tree = sqlglot.parse_one(sql, read=dialect)
        assert isinstance(tree, exp.Insert)
        assert tree.this.this.name == table and tree.this.this.db == "sch"
        assert [c.name for c in tree.this.expressions] == columns


def test_audit_expressions_render_per_dialect() -> None:
    w = RowWrite("s.t", "update", key={"id": 1}, audit={"a": "now()", "b": "current_user", "c": "upper('x')"})
    assert 'SET "a" = CURRENT_TIMESTAMP, "b" = CURRENT_USER, "c" = UPPER(\'x\')' in render(w, "postgres").sql
    assert "SET `a` = CURRENT_TIMESTAMP(), `b` = CURRENT_USER(), `c` = UPPER('x')" in render(w, "mysql").sql
    assert "SET [a] = GETDATE()" in render(w, "tsql").sql
    assert render(w, "postgres").params == [1]


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("(SELECT max(id) FROM customers)", "subquery"),
        ("now(); DROP TABLE customers", "exactly one expression"),
        ("DELETE FROM customers", "delete"),
        ("now", "column"),
        ("%s", "placeholder"),
        ("now(", "not a valid sql expression"),
    ],
)
def test_audit_expressions_must_be_pure(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="audit column 'updated_at'") as e:
        RowWrite("s.t", "update", key={"id": 1}, audit={"updated_at": text})
    assert complaint in str(e.value).lower()


def test_audit_expression_without_an_equivalent_in_the_dialect() -> None:
    w = RowWrite("s.t", "update", key={"id": 1}, audit={"at": "now() AT TIME ZONE 'UTC'"})
    assert "AT TIME ZONE" in render(w, "postgres").sql
    with pytest.raises(ValueError, match=r"audit column 'at'.*no mysql equivalent"):
        render(w, "mysql")


def test_select_by_for_adoption_and_re_reads() -> None:
    assert render_select_by("erp.orders", ["id"], {"crm_ref": "d-1", "gone": None}, "postgres", limit=2) == Statement(
        'SELECT "id" FROM "erp"."orders" WHERE "crm_ref" = %s AND "gone" IS NULL LIMIT 2', ["d-1"]
    )
    assert render_select_by("erp.orders", ["id", "x"], {"crm_ref": "d-1"}, "mysql").sql == (
        "SELECT `id`, `x` FROM `erp`.`orders` WHERE `crm_ref` = %s"
    )
    assert render_select_by("erp.orders", ["id"], {"crm_ref": "d-1"}, "tsql", limit=2).sql == (
        "SELECT TOP 2 [id] FROM [erp].[orders] WHERE [crm_ref] = ?"
    )


@pytest.mark.parametrize(
    ("kwargs", "complaint"),
    [
        ({"action": "update", "values": {"a": 1}}, "needs `key`"),
        ({"action": "delete", "key": {"id": None}}, "null"),
        ({"action": "insert", "key": {"id": 1}}, "takes no `key`"),
        ({"action": "delete", "key": {"id": 1}, "values": {"a": 1}}, "takes no `values`"),
        ({"action": "update", "key": {"id": 1}}, "needs `values` or `audit`"),
        ({"action": "insert", "values": {"a": 1}, "audit": {"a": "now()"}}, "both"),
        ({"action": "update", "key": {"id": 1}, "values": {"a": 1}, "adopt_by": {"a": 1}}, "only applies to inserts"),
        ({"action": "upsert"}, "must be one of"),
    ],
)
def test_malformed_writes_are_refused_at_construction(kwargs: dict[str, object], complaint: str) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        RowWrite("s.t", **kwargs)  # type: ignore[arg-type]


def test_child_writes_are_plain_inserts_with_a_link() -> None:
    line = RowWrite("s.lines", "insert", values={"qty": 1})
    assert ChildWrite(line, {"order_id": "id"}).link == {"order_id": "id"}
    with pytest.raises(ValueError, match="needs `link`"):
        ChildWrite(line, {})
    with pytest.raises(ValueError, match="must be an insert"):
        ChildWrite(RowWrite("s.lines", "delete", key={"id": 1}), {"order_id": "id"})
    with pytest.raises(ValueError, match="both by `link` and in `values`"):
        ChildWrite(line, {"qty": "id"})
