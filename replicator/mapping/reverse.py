"""Compiling the CRM -> ERP half of the mappings, once, at startup.

A field that syncs CRM -> ERP names the ERP column it writes and a reverse
expression: SQL over the CRM record (its field names are the columns) giving the
column's value. Everything is checked here against the ERP catalog and the CRM's
field names, so a mistake stops startup with its location instead of failing at
the first webhook.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import sqlglot
from sqlglot import exp

from replicator.config.model import ConflictPolicy, EntityConfig
from replicator.mapping.catalog import TableInfo
from replicator.mapping.entity import KEY_SEPARATOR, Entity
from replicator.mapping.expr import Expr, MappingError, compile_expr, compile_predicate

# Fields of a CRM line item (BottleCRM's opportunity line items), for validating line mappings.
LINE_FIELDS = frozenset(
    {
        "id",
        "product",
        "product_id",
        "name",
        "description",
        "quantity",
        "unit_price",
        "discount_type",
        "discount_value",
        "discount_amount",
        "subtotal",
        "total",
        "order",
    }
)


@dataclass(frozen=True)
class ReverseField:
    name: str  # the CRM field
    column: str  # the ERP column it is written to
    expr: Expr  # over the CRM record
    direction: str  # crm_to_erp or both
    policy: ConflictPolicy


@dataclass(frozen=True)
class ReverseLookup:
    """A CRM field holding a parent's CRM id, written to the child's key columns."""

    field: str
    entity: str  # parent entity
    columns: tuple[str, ...]  # child columns, in the parent's key order
    required: bool


@dataclass(frozen=True)
class LineLookup:
    entity: str
    crm_field: str
    column: str


@dataclass(frozen=True)
class ReverseLines:
    table: str
    source: str
    parent: dict[str, str]
    values: dict[str, Expr]
    lookups: dict[str, LineLookup]


@dataclass
class ReverseEntity:
    entity: Entity
    fields: dict[str, ReverseField]
    lookups: list[ReverseLookup]
    audit: dict[str, str]
    erp_ts: Expr | None
    crm_ts_field: str | None  # None: the CRM's modification time is not known
    insert: bool
    insert_when: Expr | None
    crm_id_column: str | None
    insert_values: dict[str, Expr]
    insert_lookups: list[ReverseLookup]
    lines: ReverseLines | None
    delete: str
    key_of_external_id: Callable[[str], tuple[Any, ...] | None] = field(repr=False)
    # The same inverse for each entity this one's lookups and lines point at.
    parent_keys: dict[str, Callable[[str], tuple[Any, ...] | None]] = field(default_factory=dict, repr=False)

    @property
    def name(self) -> str:
        return self.entity.name

    @property
    def object(self) -> str:
        return self.entity.object


def compile_reverse(
    mappings: Mapping[str, EntityConfig],
    entities: Mapping[str, Entity],
    catalog: Mapping[str, TableInfo],
    crm_fields: Mapping[str, frozenset[str]] | None = None,
) -> dict[str, ReverseEntity]:
    """CRM object -> its reverse mapping, for every entity with a `crm_to_erp:` section.

    `crm_fields` lists each CRM object's field names; None skips that check (a CRM
    whose fields are only known at run time)."""
    out: dict[str, ReverseEntity] = {}
    for name, cfg in mappings.items():
        if cfg.crm_to_erp is None:
            continue
        entity = entities[name]
        if entity.object in out:
            other = out[entity.object].name
            raise MappingError(
                f"mappings.{name}.crm_to_erp",
                f"CRM object {entity.object!r} is already written to the ERP by mapping {other!r}",
                "a CRM record can only be written back through one mapping; keep crm_to_erp on one of them",
            )
        rev = _compile_one(name, cfg, entity, entities, catalog, crm_fields)
        parents = {lk.entity for lk in rev.insert_lookups}
        if rev.lines is not None:
            parents |= {lk.entity for lk in rev.lines.lookups.values()}
        rev.parent_keys = {p: _key_inverter(p, mappings[p], entities[p]) for p in sorted(parents)}
        out[entity.object] = rev
    return out


def _compile_one(
    name: str,
    cfg: EntityConfig,
    entity: Entity,
    entities: Mapping[str, Entity],
    catalog: Mapping[str, TableInfo],
    crm_fields: Mapping[str, frozenset[str]] | None,
) -> ReverseEntity:
    assert cfg.crm_to_erp is not None
    rev = cfg.crm_to_erp
    loc = f"mappings.{name}"
    info = catalog[entity.table]
    known = None
    if crm_fields is not None and entity.object in crm_fields:
        known = tuple(sorted(crm_fields[entity.object] | set(cfg.fields) | set(cfg.lookups)))
    crm_schema = {None: known} if known is not None else None

    def column_of(where: str, column: str, table: TableInfo = info) -> str:
        if column not in table.columns:
            raise MappingError(
                where, f"column {column!r} is not in {table.name}", f"columns are: {', '.join(table.columns)}"
            )
        return column

    fields: dict[str, ReverseField] = {}
    for fname, spec in cfg.field_specs.items():
        if spec.direction == "erp_to_crm":
            continue
        floc = f"{loc}.fields.{fname}"
        column = spec.column or _bare_column(spec.erp)
        if column is None:
            raise MappingError(
                floc,
                f"syncs CRM -> ERP but its SQL {spec.erp!r} is not a bare column, "
                "so the ERP column to write is unknown",
                "name it with `column:` and give the CRM -> ERP SQL with `reverse:`",
            )
        column_of(f"{floc}.column", column)
        if column in entity.key:
            raise MappingError(
                f"{floc}.column", f"{column!r} is part of the key of {entity.table}", "keys are not rewritten"
            )
        reverse_sql = spec.reverse or _quote(fname)
        expr = compile_expr(reverse_sql, location=f"{floc}.reverse", columns=crm_schema)
        policy = spec.policy or rev.conflict
        fields[fname] = ReverseField(fname, column, expr, spec.direction, policy)

    lookups = []
    insert_lookups = []
    for fname, lk in cfg.lookups.items():
        rl = ReverseLookup(fname, lk.entity, tuple(lk.key), lk.required)
        insert_lookups.append(rl)
        if lk.direction != "erp_to_crm":
            lookups.append(rl)

    erp_ts = None
    if rev.timestamps.erp:
        erp_ts = compile_expr(
            rev.timestamps.erp, location=f"{loc}.crm_to_erp.timestamps.erp", columns={None: info.columns}
        )
    if any(f.policy == "latest_wins" for f in fields.values()) and erp_ts is None:
        raise MappingError(
            f"{loc}.crm_to_erp.timestamps.erp",
            "latest_wins compares each side's modification time, and the ERP's is not configured",
            "set timestamps.erp to the SQL of the row's modification time, e.g. updated_at",
        )
    for column, sql in rev.audit.items():
        column_of(f"{loc}.crm_to_erp.audit.{column}", column)
        _check_audit(sql, f"{loc}.crm_to_erp.audit.{column}")

    ins = rev.insert
    insert_values: dict[str, Expr] = {}
    lines = None
    if ins is not None:
        for column, sql in ins.values.items():
            column_of(f"{loc}.crm_to_erp.insert.values.{column}", column)
            insert_values[column] = compile_expr(
                sql, location=f"{loc}.crm_to_erp.insert.values.{column}", columns=crm_schema
            )
        if ins.crm_id_column:
            column_of(f"{loc}.crm_to_erp.insert.crm_id_column", ins.crm_id_column)
        if ins.lines is not None:
            lines = _compile_lines(f"{loc}.crm_to_erp.insert.lines", ins.lines, info, entities, catalog)

    return ReverseEntity(
        entity=entity,
        fields=fields,
        lookups=lookups,
        audit=dict(rev.audit),
        erp_ts=erp_ts,
        crm_ts_field=rev.timestamps.crm,
        insert=ins is not None,
        insert_when=(
            compile_predicate(ins.when, location=f"{loc}.crm_to_erp.insert.when", columns=crm_schema)
            if ins is not None and ins.when
            else None
        ),
        crm_id_column=ins.crm_id_column if ins is not None else None,
        insert_values=insert_values,
        insert_lookups=insert_lookups,
        lines=lines,
        delete=rev.delete,
        key_of_external_id=_key_inverter(name, cfg, entity),
    )


def _compile_lines(
    loc: str, cfg: Any, parent: TableInfo, entities: Mapping[str, Entity], catalog: Mapping[str, TableInfo]
) -> ReverseLines:
    table = cfg.table
    info = catalog.get(table)
    if info is None:
        raise MappingError(f"{loc}.table", f"table {table} does not exist in the ERP database")
    for child, parent_col in cfg.parent.items():
        if child not in info.columns:
            raise MappingError(f"{loc}.parent", f"column {child!r} is not in {table}")
        if parent_col not in parent.columns:
            raise MappingError(f"{loc}.parent", f"column {parent_col!r} is not in {parent.name}")
    values = {}
    for column, sql in cfg.values.items():
        if column not in info.columns:
            raise MappingError(f"{loc}.values.{column}", f"column {column!r} is not in {table}")
        values[column] = compile_expr(
            sql, location=f"{loc}.values.{column}", columns={None: tuple(sorted(LINE_FIELDS))}
        )
    lookups = {}
    for column, lk in cfg.lookups.items():
        if column not in info.columns:
            raise MappingError(f"{loc}.lookups.{column}", f"column {column!r} is not in {table}")
        target = entities.get(lk.entity)
        if target is None:
            raise MappingError(
                f"{loc}.lookups.{column}.entity",
                f"unknown entity {lk.entity!r}; mapped: {', '.join(entities)}",
            )
        if lk.column not in target.columns:
            raise MappingError(f"{loc}.lookups.{column}.column", f"column {lk.column!r} is not in {target.table}")
        lookups[column] = LineLookup(lk.entity, lk.crm_field, lk.column)
    return ReverseLines(table, cfg.source, dict(cfg.parent), values, lookups)


def _bare_column(sql: str | None) -> str | None:
    if sql is None:
        return None
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.ParseError:
        return None
    if isinstance(tree, exp.Column) and not tree.table:
        return tree.name
    return None


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _check_audit(sql: str, location: str) -> None:
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.ParseError as exc:
        raise MappingError(location, f"not valid SQL: {exc}") from None
    if tree.find(exp.Select, exp.Column) is not None:
        raise MappingError(location, f"{sql!r} must be a value such as now() or 'replicator', not a query or column")


def _key_inverter(name: str, cfg: EntityConfig, entity: Entity) -> Callable[[str], tuple[Any, ...] | None]:
    """The ERP key (as text values) of an external id: the inverse of `external_id`.

    Only the forms that can be inverted are accepted: the default (key values joined
    by ':'), or a constant prefix before the single key column ('CUST-' || id)."""
    width = len(entity.key)
    if cfg.external_id is None:

        def split(ext: str) -> tuple[Any, ...] | None:
            parts = ext.split(KEY_SEPARATOR) if width > 1 else [ext]
            return tuple(parts) if len(parts) == width else None

        return split
    prefix = _constant_prefix(cfg.external_id, entity.key)
    if prefix is None:
        raise MappingError(
            f"mappings.{name}.external_id",
            f"{cfg.external_id!r} cannot be inverted, so a CRM record's external id does not lead back to its ERP row",
            "for entities with crm_to_erp use the default external id or a constant prefix before the single key "
            "column, e.g. 'CUST-' || id",
        )

    def strip(ext: str) -> tuple[Any, ...] | None:
        return (ext[len(prefix) :],) if ext.startswith(prefix) and len(ext) > len(prefix) else None

    return strip


def _constant_prefix(sql: str, key: tuple[str, ...]) -> str | None:
    if len(key) != 1:
        return None
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except sqlglot.errors.ParseError:
        return None
    parts: list[exp.Expression]
    if isinstance(tree, exp.DPipe):
        parts = [tree.this, tree.expression]
    elif isinstance(tree, exp.Concat):
        parts = list(tree.expressions)
    else:
        return None
    if len(parts) != 2:
        return None
    head, tail = parts
    if isinstance(head, exp.Literal) and head.is_string and isinstance(tail, exp.Column) and tail.name == key[0]:
        return str(head.this)
    return None
