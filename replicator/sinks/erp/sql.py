"""SQL for ERP writes, built as sqlglot expressions and rendered per dialect.

Values never enter the SQL text: each becomes a bound parameter (`%s` for psycopg and
PyMySQL, `?` for SQL Server drivers). Identifiers are always quoted, so reserved words,
spaces, quotes and `%` in names are safe. Audit expressions are parsed as PostgreSQL
and rendered in the target dialect (`now()` becomes CURRENT_TIMESTAMP, NOW() ...).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from sqlglot import exp
from sqlglot.errors import ErrorLevel, UnsupportedError

from replicator.sinks.erp.model import RowWrite, audit_expression

Dialect = Literal["postgres", "mysql", "tsql"]
DIALECTS: tuple[Dialect, ...] = ("postgres", "mysql", "tsql")

# Stands for one bound parameter while sqlglot renders; no identifier or audit expression can hold a NUL.
_MARK = "\x00"


@dataclass(frozen=True)
class Statement:
    sql: str
    params: list[Any]


class _Params:
    def __init__(self) -> None:
        self.values: list[Any] = []

    def bind(self, value: Any) -> exp.Expression:
        self.values.append(value)
        return exp.Var(this=_MARK)


def table_expr(table: str) -> exp.Table:
    """`schema.table` (MariaDB: `db.table`) as a quoted table reference."""
    schema, _, name = table.rpartition(".")
    return exp.Table(this=_ident(name), db=_ident(schema) if schema else None)


def _ident(name: str) -> exp.Identifier:
    return exp.Identifier(this=name, quoted=True)


def _column(name: str, table: str | None = None) -> exp.Column:
    return exp.Column(this=_ident(name), table=exp.Identifier(this=table, quoted=False) if table else None)


def _where(match: Mapping[str, Any], params: _Params) -> exp.Condition:
    conditions: list[exp.Condition] = []
    for column, value in match.items():
        if value is None:
            conditions.append(exp.Is(this=_column(column), expression=exp.Null()))
        else:
            conditions.append(exp.EQ(this=_column(column), expression=params.bind(value)))
    if not conditions:
        raise ValueError("a WHERE clause needs at least one column")
    return exp.and_(*conditions)


def audit_sql(column: str, text: str, dialect: Dialect) -> exp.Expr:
    """The audit expression as a tree that renders in `dialect`; ValueError when the dialect has no equivalent."""
    tree = audit_expression(column, text).copy()
    try:
        tree.sql(dialect=dialect, unsupported_level=ErrorLevel.RAISE)
    except UnsupportedError as e:
        raise ValueError(f"audit column {column!r}: {text!r} has no {dialect} equivalent ({e})") from e
    return tree


def _returning(columns: Sequence[str], dialect: Dialect, pseudo_table: str) -> exp.Returning | None:
    if not columns:
        return None
    # SQL Server's OUTPUT names the row image explicitly: INSERTED.<col> / DELETED.<col>.
    table = pseudo_table if dialect == "tsql" else None
    return exp.Returning(expressions=[_column(c, table) for c in columns])


def _finish(tree: exp.Expression, params: _Params, dialect: Dialect) -> Statement:
    text = tree.sql(dialect=dialect, unsupported_level=ErrorLevel.RAISE)
    if text.count(_MARK) != len(params.values):
        raise AssertionError(f"parameter count mismatch in rendered SQL: {text!r}")
    if dialect == "tsql":
        return Statement(text.replace(_MARK, "?"), params.values)
    # psycopg and PyMySQL both treat `%` as the start of a placeholder: a literal one is doubled.
    return Statement(text.replace("%", "%%").replace(_MARK, "%s"), params.values)


def render_insert(
    table: str, values: Mapping[str, Any], audit: Mapping[str, str], returning: Sequence[str], dialect: Dialect
) -> Statement:
    params = _Params()
    columns = [*values, *audit]
    row = [params.bind(v) for v in values.values()] + [audit_sql(c, t, dialect) for c, t in audit.items()]
    target = table_expr(table)
    tree: exp.Insert
    if columns:
        tree = exp.Insert(
            this=exp.Schema(this=target, expressions=[_ident(c) for c in columns]),
            expression=exp.Values(expressions=[exp.Tuple(expressions=row)]),
        )
    elif dialect == "mysql":
        # MariaDB has no DEFAULT VALUES; an empty column list with an empty row means the same.
        tree = exp.Insert(
            this=exp.Schema(this=target, expressions=[]), expression=exp.Values(expressions=[exp.Tuple()])
        )
    else:
        tree = exp.Insert(this=target, default=True)
    tree.set("returning", _returning(returning, dialect, "INSERTED"))
    statement = _finish(tree, params, dialect)
    if not columns and dialect == "tsql" and not statement.sql.endswith("DEFAULT VALUES"):
        # sqlglot drops DEFAULT VALUES when OUTPUT precedes it; T-SQL wants it last.
        return Statement(f"{statement.sql} DEFAULT VALUES", statement.params)
    return statement


def render_update(
    table: str,
    key: Mapping[str, Any],
    values: Mapping[str, Any],
    audit: Mapping[str, str],
    returning: Sequence[str],
    dialect: Dialect,
) -> Statement:
    """MariaDB has no UPDATE ... RETURNING: for "mysql" the statement comes without it (re-read the row by key)."""
    params = _Params()
    assignments: list[exp.Expression] = [exp.EQ(this=_column(c), expression=params.bind(v)) for c, v in values.items()]
    assignments += [exp.EQ(this=_column(c), expression=audit_sql(c, t, dialect)) for c, t in audit.items()]
    tree = exp.Update(this=table_expr(table), expressions=assignments, where=exp.Where(this=_where(key, params)))
    if dialect != "mysql":
        tree.set("returning", _returning(returning, dialect, "INSERTED"))
    return _finish(tree, params, dialect)


def render_delete(table: str, key: Mapping[str, Any], returning: Sequence[str], dialect: Dialect) -> Statement:
    params = _Params()
    tree = exp.Delete(this=table_expr(table), where=exp.Where(this=_where(key, params)))
    output = _returning(returning, dialect, "DELETED")
    if output is not None:
        tree.set("returning", output)
        if dialect == "tsql":
            # T-SQL wants the target before OUTPUT: DELETE t OUTPUT DELETED.x FROM t WHERE ...
            tree.set("tables", [table_expr(table)])
    return _finish(tree, params, dialect)


def render(w: RowWrite, dialect: Dialect) -> Statement:
    """The main statement for `w`; its children and adopt_by lookups are separate statements."""
    if dialect not in DIALECTS:
        raise ValueError(f"unknown SQL dialect {dialect!r}; expected one of {', '.join(DIALECTS)}")
    if w.action == "insert":
        return render_insert(w.table, w.values, w.audit, w.returning, dialect)
    if w.action == "update":
        return render_update(w.table, w.key, w.values, w.audit, w.returning, dialect)
    return render_delete(w.table, w.key, w.returning, dialect)


def render_select_by(
    table: str, columns: Iterable[str], where: Mapping[str, Any], dialect: Dialect, *, limit: int | None = None
) -> Statement:
    """SELECT columns FROM table WHERE each column equals its value (IS NULL for None)."""
    params = _Params()
    names = list(columns)
    if not names:
        raise ValueError(f"{table}: select at least one column")
    tree = exp.Select(expressions=[_column(c) for c in names]).from_(table_expr(table)).where(_where(where, params))
    if limit is not None:
        tree = tree.limit(limit)
    return _finish(tree, params, dialect)
