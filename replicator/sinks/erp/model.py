"""What the ERP writer is asked to do, and what it answers.

A `RowWrite` is one row change with optional child rows inserted in the same
transaction. Values are always bound as parameters; audit columns carry SQL
expressions (written in PostgreSQL's dialect) that are rendered in the ERP's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Literal, Protocol

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

Action = Literal["insert", "update", "delete"]
_ACTIONS = ("insert", "update", "delete")

# Anything that reads or changes other rows, or is not an expression at all, has no place in an audit column.
# Column references are refused too: an insert has no row to refer to, and a bare word (`now`) is a typo.
_FORBIDDEN = (
    exp.Query,
    exp.DML,
    exp.DDL,
    exp.Command,
    exp.Subquery,
    exp.Star,
    exp.Placeholder,
    exp.Parameter,
    exp.Column,
)


@lru_cache(maxsize=256)
def audit_expression(column: str, text: str) -> exp.Expr:
    """The parsed audit expression (PostgreSQL dialect); ValueError when it is not one pure expression."""
    where = f"audit column {column!r}: {text!r}"
    if "\x00" in text:
        raise ValueError(f"{where} contains a NUL character")
    try:
        parsed = sqlglot.parse(text, read="postgres")
    except ParseError as e:
        raise ValueError(
            f"{where} is not a valid SQL expression ({e.errors[0]['description'] if e.errors else e})"
        ) from e
    if len(parsed) != 1 or parsed[0] is None:
        raise ValueError(f"{where} must be exactly one expression, e.g. now() or 'replicator'")
    tree: exp.Expr = parsed[0]
    for node in tree.walk():
        if isinstance(node, _FORBIDDEN):
            raise ValueError(
                f"{where} must be a pure expression: {type(node).__name__.lower()} {node.sql('postgres')!r} "
                "is not allowed "
                "(use a function call or a literal such as now() or 'replicator')"
            )
    return tree


def _check_names(what: str, table: str, names: Any) -> None:
    for name in names:
        if not isinstance(name, str) or not name or "\x00" in name:
            raise ValueError(f"{table}: {what} column name {name!r} is not a valid identifier")


@dataclass
class RowWrite:
    table: str  # schema-qualified ("public.customers"; on MariaDB "db.table")
    action: Action
    key: dict[str, Any] = field(default_factory=dict)  # update/delete: key column -> value
    values: dict[str, Any] = field(default_factory=dict)  # column -> Python value (bound as a parameter)
    audit: dict[str, str] = field(default_factory=dict)  # column -> SQL expression in PostgreSQL's dialect
    returning: tuple[str, ...] = ()  # columns of the written row to return
    adopt_by: dict[str, Any] | None = None  # insert only: adopt an existing row with these values
    children: list[ChildWrite] = field(default_factory=list)  # inserted after the parent, same transaction

    def __post_init__(self) -> None:
        t = self.table
        if not t or "\x00" in t or t.startswith(".") or t.endswith("."):
            raise ValueError(f"RowWrite.table {t!r} must be a qualified table name such as 'public.customers'")
        if self.action not in _ACTIONS:
            raise ValueError(f"{t}: action {self.action!r} must be one of {', '.join(_ACTIONS)}")
        self.returning = tuple(self.returning)
        for what, names in (("key", self.key), ("values", self.values), ("audit", self.audit)):
            _check_names(what, t, names)
        _check_names("returning", t, self.returning)
        if self.action in ("update", "delete"):
            if not self.key:
                raise ValueError(f"{t}: an {self.action} needs `key` (the columns that identify the row)")
            nulls = [c for c, v in self.key.items() if v is None]
            if nulls:
                raise ValueError(f"{t}: key column(s) {', '.join(nulls)} are null: a null key identifies no row")
        elif self.key:
            raise ValueError(f"{t}: an insert takes no `key`; put the columns in `values`")
        if self.action == "delete" and (self.values or self.audit):
            raise ValueError(f"{t}: a delete takes no `values` or `audit`")
        if self.action == "update" and not (self.values or self.audit):
            raise ValueError(f"{t}: an update needs `values` or `audit` to set")
        both = sorted(set(self.values) & set(self.audit))
        if both:
            raise ValueError(f"{t}: column(s) {', '.join(both)} are in both `values` and `audit`; keep one")
        if self.adopt_by is not None:
            if self.action != "insert":
                raise ValueError(f"{t}: adopt_by only applies to inserts")
            if not self.adopt_by:
                raise ValueError(f"{t}: adopt_by needs at least one column (e.g. the CRM id column)")
            _check_names("adopt_by", t, self.adopt_by)
        if self.children and self.action != "insert":
            raise ValueError(f"{t}: children are only inserted together with an inserted parent")
        for column, text in self.audit.items():
            audit_expression(column, text)


@dataclass
class ChildWrite:
    write: RowWrite  # action "insert"
    link: dict[str, str]  # child column -> column of the parent's written row (e.g. {"order_id": "id"})

    def __post_init__(self) -> None:
        w = self.write
        if w.action != "insert":
            raise ValueError(f"{w.table}: a child write must be an insert, not {w.action}")
        if w.adopt_by is not None:
            raise ValueError(f"{w.table}: a child write cannot adopt rows (adopt_by is for the parent only)")
        if not self.link:
            raise ValueError(f"{w.table}: a child write needs `link` (child column -> parent column)")
        both = sorted(set(self.link) & set(w.values))
        if both:
            raise ValueError(f"{w.table}: column(s) {', '.join(both)} are set both by `link` and in `values`")


@dataclass
class WriteOutcome:
    row: dict[str, Any] | None  # the parent's `returning` columns; None when an update/delete matched no row
    inserted: bool = False  # a new row was inserted (False: updated, deleted, or adopted)
    adopted: bool = False


class WriteRejected(Exception):
    """Permanent: nothing was written. Retrying the same write cannot succeed."""

    def __init__(self, reason: str, *, table: str, column: str | None = None) -> None:
        self.reason = reason
        self.table = table
        self.column = column
        where = f"{table}.{column}" if column else table
        super().__init__(f"{where}: {reason}")


class ErpWriter(Protocol):
    dialect: str

    def write(self, w: RowWrite) -> WriteOutcome: ...

    def close(self) -> None: ...
