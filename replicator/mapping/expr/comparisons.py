"""Comparisons and what makes two values comparable: = <> < >, IS DISTINCT FROM, BETWEEN, IN, NULLIF, GREATEST/LEAST."""

from __future__ import annotations

import operator
from collections.abc import Callable
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlglot import exp

from replicator.mapping.expr.casts import coerce_literal, to_timestamp
from replicator.mapping.expr.errors import ExprEvalError
from replicator.mapping.expr.nodes import Compiler, Context, Handlers, Node
from replicator.mapping.expr.values import Float4


def _category(v: Any) -> str:
    t = type(v)
    if t is int or t is Decimal or t is float or t is Float4:
        return "number"
    return _CATEGORIES.get(t, t.__name__)


_CATEGORIES = {str: "text", bool: "boolean", datetime: "timestamp", date: "date", dict: "json", list: "json"}


def align(a: Any, b: Any) -> tuple[Any, Any]:
    """Make two non-NULL values of different Python types comparable the way PG would."""
    ca, cb = _category(a), _category(b)
    if ca == cb:
        if ca == "timestamp" and (a.tzinfo is None) != (b.tzinfo is None):
            # timestamp vs timestamptz: the naive side is read in the session zone (UTC).
            return to_timestamp(a, aware=True), to_timestamp(b, aware=True)
        return a, b
    if ca == "date" and cb == "timestamp":
        return to_timestamp(a, b.tzinfo is not None), b
    if ca == "timestamp" and cb == "date":
        return a, to_timestamp(b, a.tzinfo is not None)
    raise ExprEvalError(f"cannot compare {ca} with {cb}")


def _comparison(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def cmp(a: Any, b: Any) -> bool:
        if type(a) is not type(b):
            a, b = align(a, b)
        return op(a, b)

    return cmp


EQ = _comparison(operator.eq)
CMP: dict[type[exp.Expr], Callable[[Any, Any], bool]] = {
    exp.EQ: EQ,
    exp.NEQ: _comparison(operator.ne),
    exp.LT: _comparison(operator.lt),
    exp.LTE: _comparison(operator.le),
    exp.GT: _comparison(operator.gt),
    exp.GTE: _comparison(operator.ge),
}

HANDLERS = Handlers()


@HANDLERS.on(*CMP)
def _compare(c: Compiler, e: exp.Binary) -> Node:
    return c.binary(CMP[type(e)], c.sub(e), c.sub(e, "expression"))


@HANDLERS.on(exp.NullSafeEQ, exp.NullSafeNEQ)
def _distinct(c: Compiler, e: exp.Binary) -> Node:
    same = c.binary(EQ, c.sub(e), c.sub(e, "expression")).fn
    a, b = c.sub(e).fn, c.sub(e, "expression").fn
    want_equal = isinstance(e, exp.NullSafeEQ)

    def g(ctx: Context) -> bool:
        x, y = a(ctx), b(ctx)
        if x is None or y is None:
            return (x is None and y is None) == want_equal
        return bool(same(ctx)) == want_equal

    return Node(g)


@HANDLERS.on(exp.Between)
def _between(c: Compiler, e: exp.Between) -> Node:
    x, lo, hi = c.sub(e), c.sub(e, "low"), c.sub(e, "high")
    ge, le = CMP[exp.GTE], CMP[exp.LTE]
    inside = _and_nodes(c, c.binary(ge, x, lo), c.binary(le, x, hi))
    if not e.args.get("symmetric"):
        return inside
    swapped = _and_nodes(c, c.binary(ge, x, hi), c.binary(le, x, lo))
    a, b = inside.fn, swapped.fn

    def g(ctx: Context) -> bool | None:
        p = a(ctx)
        return True if p is True else (b(ctx) or p)

    return Node(g)


def _and_nodes(c: Compiler, left: Node, right: Node) -> Node:
    a, b = left.fn, right.fn

    def g(ctx: Context) -> bool | None:
        x = a(ctx)
        if x is False:
            return False
        y = b(ctx)
        return False if y is False else (None if x is None or y is None else True)

    return c.fold(Node(g), left, right)


@HANDLERS.on(exp.In)
def _in(c: Compiler, e: exp.In) -> Node:
    if e.args.get("query") or e.args.get("unnest") or e.args.get("field") or not e.expressions:
        raise c.unsupported(e)
    x = c.sub(e)
    items = [c.compile(i) for i in e.expressions]
    if all(i.const for i in items) and not x.untyped:
        return _in_constants(c, x, items)
    tests = [c.binary(EQ, x, i).fn for i in items]

    def g(ctx: Context) -> bool | None:
        saw_null = False
        for t in tests:
            r = t(ctx)
            if r:
                return True
            saw_null = saw_null or r is None
        return None if saw_null else False

    return c.fold(Node(g), x, *items)


def _in_constants(c: Compiler, x: Node, items: list[Node]) -> Node:
    has_null = any(i.value is None for i in items)
    miss = None if has_null else False
    sets: dict[type, frozenset[Any] | None] = {}
    fallback = [c.binary(EQ, x, i).fn for i in items if i.value is not None]
    fx = x.fn

    def members(v: Any) -> frozenset[Any] | None:
        try:  # typed once per value type; unhashable (json) values fall back to a scan
            present = [i for i in items if i.value is not None]
            return frozenset(coerce_literal(i.value, v) if i.untyped else i.value for i in present)
        except TypeError:
            return None

    def g(ctx: Context) -> bool | None:
        v = fx(ctx)
        if v is None:
            return None
        t = type(v)
        if t not in sets:
            sets[t] = members(v) if t is not datetime else None
        s = sets[t]
        if s is not None:
            return True if v in s else miss
        return True if any(f(ctx) for f in fallback) else miss

    return c.fold(Node(g), x, *items)


@HANDLERS.on(exp.Nullif)
def _nullif(c: Compiler, e: exp.Nullif) -> Node:
    a = c.sub(e)
    same = c.binary(EQ, a, c.sub(e, "expression")).fn
    fa = a.fn
    return Node(lambda ctx: None if same(ctx) is True else fa(ctx))


@HANDLERS.on(exp.Greatest, exp.Least)
def _extreme(c: Compiler, e: exp.Greatest | exp.Least) -> Node:
    nodes = [c.sub(e), *(c.compile(x) for x in e.expressions)]
    pick = max if isinstance(e, exp.Greatest) else min
    fns = [n.fn for n in nodes]
    untyped = [n.untyped for n in nodes]

    def g(ctx: Context) -> Any:
        vals = [f(ctx) for f in fns]
        typed = next((v for v, u in zip(vals, untyped, strict=True) if v is not None and not u), None)
        present = [
            coerce_literal(v, typed) if u and typed is not None else v
            for v, u in zip(vals, untyped, strict=True)
            if v is not None
        ]
        if not present:
            return None
        best = present[0]
        for v in present[1:]:
            a, b = (v, best) if type(v) is type(best) else align(v, best)
            if (a > b) if pick is max else (a < b):
                best = v
        return best

    return c.fold(Node(g), *nodes)
