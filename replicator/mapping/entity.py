"""Compiling the `mappings:` section against the ERP catalog, once, at startup."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlglot

from replicator.change import Row
from replicator.config.model import EntityConfig, LookupConfig
from replicator.mapping.catalog import TableInfo
from replicator.mapping.expr import Expr, MappingError, compile_expr, compile_predicate

KEY_SEPARATOR = ":"


@dataclass(frozen=True)
class Related:
    alias: str
    table: str
    join: dict[str, str]  # related column -> base column
    where_sql: str | None  # rendered in the ERP's dialect, run by the ERP itself
    order_by_sql: str | None
    columns: tuple[str, ...]
    # SQL types of the join columns (related side, base side): text values must be cast to be compared.
    join_types: tuple[str, ...] = ()
    base_join_types: tuple[str, ...] = ()

    def join_values(self, related_rows: Sequence[Row]) -> list[tuple[Any, ...]]:
        """Join values (in base-column order) that changed related rows point at."""
        rel_cols = list(self.join)
        return [tuple(r.get(c) for c in rel_cols) for r in related_rows]


@dataclass
class Entity:
    name: str
    table: str
    object: str
    key: tuple[str, ...]
    fields: dict[str, Expr]
    external_id: Expr | None
    filter: Expr | None
    soft_delete: Expr | None
    on_delete: str
    related: dict[str, Related]
    lookups: dict[str, LookupConfig]
    columns: tuple[str, ...]
    key_types: tuple[str, ...] = ()
    rank: int = 0
    # Base columns the record depends on; an unchanged TOAST column among them forces a re-read.
    needed: frozenset[str] = field(default_factory=frozenset)

    def external_id_of(self, key: tuple[Any, ...]) -> str:
        """The external id (also our state key) for an ERP key."""
        if self.external_id is None:
            return KEY_SEPARATOR.join("" if v is None else str(v) for v in key)
        value = self.external_id({None: dict(zip(self.key, key, strict=True))})
        if value is None:
            raise MappingError(f"mappings.{self.name}.external_id", f"evaluated to NULL for key {key!r}")
        return str(value)

    def key_of(self, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return tuple(row.get(c) for c in self.key)


Dialect = Literal["postgres", "mysql"]


def _erp_sql(sql: str, location: str, dialect: Dialect = "postgres") -> str:
    """Mapping SQL (written in PostgreSQL's dialect, like every expression) as the ERP runs it."""
    try:
        return sqlglot.transpile(sql, read="postgres", write=dialect)[0]
    except sqlglot.errors.ParseError as exc:
        raise MappingError(location, f"not valid SQL: {exc}") from None


def compile_entity(
    name: str, cfg: EntityConfig, catalog: Mapping[str, TableInfo], dialect: Dialect = "postgres"
) -> Entity:
    loc = f"mappings.{name}"
    info = catalog.get(cfg.table)
    if info is None:
        raise MappingError(
            f"{loc}.table",
            f"table {cfg.table} does not exist in the ERP database",
            "check the schema-qualified name, or run the ERP's migrations first",
        )
    key = tuple(cfg.key or info.primary_key)
    if not key:
        raise MappingError(f"{loc}.key", f"{cfg.table} has no primary key", "name the key columns with `key:`")
    for col in key:
        if col not in info.columns:
            raise MappingError(f"{loc}.key", f"column {col!r} is not in {cfg.table}")

    related: dict[str, Related] = {}
    schema: dict[str | None, tuple[str, ...]] = {None: info.columns}
    for alias, rel_cfg in cfg.related.items():
        rloc = f"{loc}.related.{alias}"
        rinfo = catalog.get(rel_cfg.table)
        if rinfo is None:
            raise MappingError(f"{rloc}.table", f"table {rel_cfg.table} does not exist in the ERP database")
        for rcol, bcol in rel_cfg.join.items():
            if rcol not in rinfo.columns:
                raise MappingError(f"{rloc}.join", f"column {rcol!r} is not in {rinfo.name}")
            if bcol not in info.columns:
                raise MappingError(f"{rloc}.join", f"column {bcol!r} is not in {cfg.table}")
        if rel_cfg.where:
            compile_predicate(rel_cfg.where, location=f"{rloc}.where", columns={None: rinfo.columns})
        related[alias] = Related(
            alias=alias,
            table=rinfo.name,
            join=dict(rel_cfg.join),
            where_sql=_erp_sql(rel_cfg.where, f"{rloc}.where", dialect) if rel_cfg.where else None,
            order_by_sql=_order_by_sql(rel_cfg.order_by, f"{rloc}.order_by", dialect) if rel_cfg.order_by else None,
            columns=rinfo.columns,
            join_types=tuple(rinfo.types[c] for c in rel_cfg.join),
            base_join_types=tuple(info.types[c] for c in rel_cfg.join.values()),
        )
        schema[alias] = rinfo.columns

    fields = {
        f: compile_expr(sql, location=f"{loc}.fields.{f}", columns=schema) for f, sql in cfg.forward_fields.items()
    }
    for field_name, lookup in cfg.lookups.items():
        if field_name in fields:
            raise MappingError(f"{loc}.lookups.{field_name}", "is also defined under fields", "keep one of the two")
        for col in lookup.key:
            if col not in info.columns:
                raise MappingError(f"{loc}.lookups.{field_name}.key", f"column {col!r} is not in {cfg.table}")
    external_id = None
    if cfg.external_id:
        external_id = compile_expr(cfg.external_id, location=f"{loc}.external_id", columns={None: key})
    base_only = {None: info.columns}
    entity = Entity(
        name=name,
        table=cfg.table,
        object=cfg.object,
        key=key,
        fields=fields,
        external_id=external_id,
        filter=compile_predicate(cfg.filter, location=f"{loc}.filter", columns=base_only) if cfg.filter else None,
        soft_delete=(
            compile_predicate(cfg.soft_delete, location=f"{loc}.soft_delete", columns=base_only)
            if cfg.soft_delete
            else None
        ),
        on_delete=cfg.on_delete,
        related=related,
        lookups=dict(cfg.lookups),
        columns=info.columns,
        key_types=tuple(info.types[c] for c in key),
    )
    needed = {c for e in fields.values() for q, c in e.columns if q is None}
    for e in (entity.filter, entity.soft_delete):
        if e is not None:
            needed |= {c for _, c in e.columns}
    for lookup in cfg.lookups.values():
        needed |= set(lookup.key)
    for rel in related.values():
        needed |= set(rel.join.values())
    entity.needed = frozenset(needed)
    return entity


def _order_by_sql(order_by: str, location: str, dialect: Dialect = "postgres") -> str:
    try:
        select = sqlglot.parse_one(f"SELECT 1 ORDER BY {order_by}", read="postgres")
    except sqlglot.errors.ParseError as exc:
        raise MappingError(location, f"not a valid ORDER BY list: {exc}") from None
    order = select.args.get("order")
    return order.sql(dialect=dialect) if order is not None else ""


def rank_entities(entities: dict[str, Entity]) -> None:
    """Parents before children: an entity's rank is one more than its deepest parent's."""
    state: dict[str, int] = {}

    def visit(name: str, path: tuple[str, ...]) -> int:
        if name in path:
            cycle = " -> ".join((*path[path.index(name) :], name))
            raise MappingError(
                f"mappings.{name}.lookups",
                f"lookups form a cycle: {cycle}",
                "one side of a cycle must be synced without its lookup",
            )
        if name in state:
            return state[name]
        parents = [lk.entity for lk in entities[name].lookups.values() if lk.entity != name]
        rank = 1 + max((visit(p, (*path, name)) for p in parents), default=-1)
        state[name] = rank
        return rank

    for name in entities:
        entities[name].rank = visit(name, ())


def compile_mappings(
    mappings: Mapping[str, EntityConfig], catalog: Mapping[str, TableInfo], dialect: Dialect = "postgres"
) -> dict[str, Entity]:
    entities = {name: compile_entity(name, cfg, catalog, dialect) for name, cfg in mappings.items()}
    rank_entities(entities)
    for name, entity in entities.items():
        for field_name, lookup in entity.lookups.items():
            parent = entities[lookup.entity]
            if len(lookup.key) != len(parent.key):
                raise MappingError(
                    f"mappings.{name}.lookups.{field_name}.key",
                    f"names {len(lookup.key)} column(s) but {lookup.entity} has a {len(parent.key)}-column key",
                )
    return entities
