"""Compile mapping SQL expressions (PostgreSQL dialect) into plain Python closures.

Expressions are parsed once with sqlglot; evaluation per change only runs the closure
tree, never sqlglot. Value semantics (NULLs, numeric, casts, functions) live in
``functions``; this module handles structure: columns, operators, logic, CASE, typing
of bare string literals, constant folding and error reporting.
"""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from replicator.mapping import functions as F
from replicator.mapping.functions import ExprEvalError

__all__ = ["Context", "Expr", "ExprEvalError", "MappingError", "compile_expr", "compile_predicate"]

Context = Mapping[str | None, Mapping[str, Any] | None]
# Mapping keys are invariant: accept schemas typed with only the base row or only aliases too.
Schema = Mapping[str | None, Collection[str]] | Mapping[None, Collection[str]] | Mapping[str, Collection[str]]
Fn = Callable[[Context], Any]

CAST_TARGETS = (
    "text, varchar(n), integer, bigint, smallint, numeric(p,s), double precision, real, boolean, date, "
    "timestamp, timestamptz, json, jsonb"
)
SUPPORTED = (
    "literals, columns, + - * / %, ||, = <> < <= > >=, IS [NOT] NULL/TRUE/FALSE, IS [NOT] DISTINCT FROM, "
    "[NOT] BETWEEN, [NOT] IN (list), [NOT] LIKE/ILIKE [ESCAPE], AND/OR/NOT, CASE, CAST/::, COALESCE, NULLIF, "
    "GREATEST, LEAST, UPPER, LOWER, INITCAP, TRIM/LTRIM/RTRIM/BTRIM, LENGTH, SUBSTRING/SUBSTR, REPLACE, "
    "LEFT, RIGHT, SPLIT_PART, POSITION/STRPOS, LPAD/RPAD, CONCAT, CONCAT_WS, ROUND, TRUNC, ABS, FLOOR, CEIL, "
    "MOD, EXTRACT/DATE_PART, DATE_TRUNC, TO_CHAR (YYYY MM DD HH24 MI SS), -> and ->>"
)


class MappingError(ValueError):
    """A mapping that cannot work, found before any row is processed."""

    def __init__(self, location: str, message: str, hint: str | None = None) -> None:
        self.location, self.message, self.hint = location, message, hint
        super().__init__(f"{location}: {message}" + (f"\n  hint: {hint}" if hint else ""))


@dataclass(frozen=True)
class Expr:
    sql: str
    columns: frozenset[tuple[str | None, str]]
    fn: Fn = field(repr=False, compare=False)
    location: str = field(default="", repr=False, compare=False)

    def __call__(self, ctx: Context) -> Any:
        try:
            return self.fn(ctx)
        except ExprEvalError as e:
            raise ExprEvalError(f"{self.location}: {e} (evaluating `{self.sql}`)") from None
        except (TypeError, ValueError, ArithmeticError) as e:
            raise ExprEvalError(f"{self.location}: {e} (evaluating `{self.sql}`)") from e


def compile_expr(sql: str, *, location: str, columns: Schema | None = None) -> Expr:
    return _compile(sql, location, columns, predicate=False)


def compile_predicate(sql: str, *, location: str, columns: Schema | None = None) -> Expr:
    """Like compile_expr, but the result is a bool: NULL counts as false, as in WHERE."""
    return _compile(sql, location, columns, predicate=True)


def _compile(sql: str, location: str, schema: Schema | None, predicate: bool) -> Expr:
    try:
        tree = sqlglot.parse_one(sql, read="postgres")
    except ParseError as e:
        err = e.errors[0] if e.errors else {}
        where = f" (line {err.get('line')}, col {err.get('col')})" if err else ""
        raise MappingError(location, f"cannot parse {sql!r}: {err.get('description', e)}{where}",
                           "write a single PostgreSQL scalar expression") from None  # fmt: skip
    except TokenError as e:
        raise MappingError(location, f"cannot parse {sql!r}: {e}", "check quotes and brackets") from None
    c = _Compiler(location, schema)
    node = c.compile(tree)
    fn = node.fn
    if predicate:
        if node.const:
            fn = _const_fn(node.value is True)
        else:
            inner = fn

            def fn(ctx: Context) -> bool:
                return inner(ctx) is True

    return Expr(sql.strip(), frozenset(c.refs), fn, location)


@dataclass(frozen=True, slots=True)
class _Node:
    fn: Fn
    const: bool = False
    value: Any = None
    untyped: bool = False  # a bare string literal: PG types it after what it meets


def _const_fn(v: Any) -> Fn:
    return lambda ctx: v


def _const(v: Any, untyped: bool = False) -> _Node:
    return _Node(_const_fn(v), True, v, untyped)


def _ident(i: exp.Expr) -> str:
    # PostgreSQL folds unquoted identifiers to lower case.
    name = i.name
    return name if isinstance(i, exp.Identifier) and i.quoted else name.lower()


def _category(v: Any) -> str:
    t = type(v)
    if t is int or t is Decimal or t is float or t is F.Float4:
        return "number"
    return _CATEGORIES.get(t, t.__name__)


_CATEGORIES = {str: "text", bool: "boolean", datetime: "timestamp", date: "date", dict: "json", list: "json"}


def _align(a: Any, b: Any) -> tuple[Any, Any]:
    """Make two non-NULL values of different Python types comparable the way PG would."""
    ca, cb = _category(a), _category(b)
    if ca == cb:
        if ca == "timestamp" and (a.tzinfo is None) != (b.tzinfo is None):
            # timestamp vs timestamptz: the naive side is read in the session zone (UTC).
            return F.to_timestamp(a, aware=True), F.to_timestamp(b, aware=True)
        return a, b
    if ca == "date" and cb == "timestamp":
        return F.to_timestamp(a, b.tzinfo is not None), b
    if ca == "timestamp" and cb == "date":
        return a, F.to_timestamp(b, a.tzinfo is not None)
    raise ExprEvalError(f"cannot compare {ca} with {cb}")


def _comparison(op: Callable[[Any, Any], bool]) -> Callable[[Any, Any], bool]:
    def cmp(a: Any, b: Any) -> bool:
        if type(a) is not type(b):
            a, b = _align(a, b)
        return op(a, b)

    return cmp


_EQ = _comparison(operator.eq)
_CMP: dict[type[exp.Expr], Callable[[Any, Any], bool]] = {
    exp.EQ: _EQ,
    exp.NEQ: _comparison(operator.ne),
    exp.LT: _comparison(operator.lt),
    exp.LTE: _comparison(operator.le),
    exp.GT: _comparison(operator.gt),
    exp.GTE: _comparison(operator.ge),
}
_ARITH: dict[type[exp.Expr], Callable[[Any, Any], Any]] = {
    exp.Add: F.add,
    exp.Sub: F.sub,
    exp.Mul: F.mul,
    exp.Div: F.div,
    exp.Mod: F.mod,
}
_NONDETERMINISTIC = (exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime, exp.Rand, exp.CurrentUser)
_CAST_TYPES: dict[Any, Callable[[list[int]], Callable[[Any], Any]]] = {
    exp.DataType.Type.TEXT: lambda p: F.cast_text,
    exp.DataType.Type.VARCHAR: lambda p: F.to_varchar(p[0] if p else None),
    exp.DataType.Type.INT: lambda p: lambda v: F.to_int(v, "integer"),
    exp.DataType.Type.BIGINT: lambda p: lambda v: F.to_int(v, "bigint"),
    exp.DataType.Type.SMALLINT: lambda p: lambda v: F.to_int(v, "smallint"),
    exp.DataType.Type.DECIMAL: lambda p: lambda v: F.to_numeric(v, p[0] if p else None, p[1] if len(p) > 1 else 0),
    exp.DataType.Type.DOUBLE: lambda p: F.to_float,
    exp.DataType.Type.FLOAT: lambda p: F.to_float4,
    exp.DataType.Type.BOOLEAN: lambda p: F.to_bool,
    exp.DataType.Type.DATE: lambda p: F.to_date,
    exp.DataType.Type.TIMESTAMP: lambda p: lambda v: F.to_timestamp(v, aware=False),
    exp.DataType.Type.TIMESTAMPTZ: lambda p: lambda v: F.to_timestamp(v, aware=True),
    exp.DataType.Type.JSON: lambda p: F.to_json,
    exp.DataType.Type.JSONB: lambda p: F.to_json,
}
_UNIT_ALIASES = {"MICROSECOND": "MICROSECONDS", "MILLISECOND": "MILLISECONDS", "SECONDS": "SECOND",
                 "MINUTES": "MINUTE", "HOURS": "HOUR", "DAYS": "DAY", "WEEKS": "WEEK", "MONTHS": "MONTH",
                 "YEARS": "YEAR", "QUARTERS": "QUARTER"}  # fmt: skip


class _Compiler:
    def __init__(self, location: str, schema: Schema | None) -> None:
        self.location = location
        self.schema: Mapping[str | None, Collection[str]] | None = schema  # type: ignore[assignment]
        self.refs: set[tuple[str | None, str]] = set()

    def error(self, message: str, hint: str | None = None) -> MappingError:
        return MappingError(self.location, message, hint)

    def compile(self, e: exp.Expr) -> _Node:
        handler = _HANDLERS.get(type(e))
        if handler is None:
            raise self.unsupported(e)
        return handler(self, e)

    def unsupported(self, e: exp.Expr) -> MappingError:
        if isinstance(e, exp.AggFunc):
            msg = f"aggregate {e.sql('postgres')} is not allowed: a mapping sees one row at a time"
        elif isinstance(e, exp.Subquery | exp.Select | exp.Exists):
            msg = "subqueries are not allowed: declare a related row (alias) instead"
        elif isinstance(e, _NONDETERMINISTIC):
            msg = f"{e.sql('postgres')} is not deterministic, so replays would not reproduce it"
        elif isinstance(e, exp.Anonymous):
            msg = f"unknown function {e.name.upper()}()"
        else:
            msg = f"unsupported construct `{e.sql('postgres')}` ({type(e).__name__})"
        return self.error(msg, f"supported: {SUPPORTED}")

    # -------------------------------------------------------------- building blocks

    def fold(self, node: _Node, *parts: _Node) -> _Node:
        """Evaluate now when every input is constant; a constant that fails is a mapping bug."""
        if not all(p.const for p in parts):
            return node
        try:
            return _const(node.fn({}))
        except (ExprEvalError, TypeError, ValueError, ArithmeticError) as e:
            raise self.error(f"constant expression fails: {e}") from None

    def strict(self, f: Callable[..., Any], *args: _Node) -> _Node:
        """Apply a value function; any NULL argument makes the result NULL."""
        fns = [a.fn for a in args]
        g: Fn
        if len(fns) == 1:
            (a,) = fns

            def g(ctx: Context) -> Any:
                v = a(ctx)
                return None if v is None else f(v)
        elif len(fns) == 2:
            a, b = fns

            def g(ctx: Context) -> Any:
                x = a(ctx)
                if x is None:
                    return None
                y = b(ctx)
                return None if y is None else f(x, y)
        else:

            def g(ctx: Context) -> Any:
                vals = [h(ctx) for h in fns]
                return None if None in vals else f(*vals)

        return self.fold(_Node(g), *args)

    def binary(self, f: Callable[[Any, Any], Any], left: _Node, right: _Node) -> _Node:
        """A strict binary operator where a bare string literal takes the other side's type."""
        null_side = (left.const and left.value is None) or (right.const and right.value is None)
        if left.untyped == right.untyped or null_side:
            return self.strict(f, left, right)
        lit, other, lit_left = (left.value, right.fn, True) if left.untyped else (right.value, left.fn, False)
        cache: dict[Any, Any] = {}

        def g(ctx: Context) -> Any:
            v = other(ctx)
            if v is None:
                return None
            t = type(v)
            key = (t, v.tzinfo is None) if t is datetime else t
            typed = cache.get(key)
            if typed is None:
                typed = cache[key] = F.coerce_literal(lit, v)
            return f(typed, v) if lit_left else f(v, typed)

        return self.fold(_Node(g), left, right)

    def sub(self, e: exp.Expr, key: str = "this") -> _Node:
        child = e.args.get(key)
        if child is None:
            raise self.error(f"`{e.sql('postgres')}` lacks its {key} argument")
        return self.compile(child)

    def opt(self, e: exp.Expr, key: str) -> _Node | None:
        child = e.args.get(key)
        return None if child is None else self.compile(child)

    def constant_text(self, e: exp.Expr, what: str) -> str:
        if isinstance(e, exp.Var | exp.Literal | exp.Column):
            return str(e.name)
        raise self.error(f"{what} must be a constant, got `{e.sql('postgres')}`")

    # -------------------------------------------------------------- leaves

    def column(self, e: exp.Column) -> _Node:
        if e.args.get("db") or e.args.get("catalog") or isinstance(e.this, exp.Star):
            raise self.error(f"`{e.sql('postgres')}` is not a column: use column or alias.column")
        name = _ident(e.this)
        q = _ident(e.args["table"]) if e.args.get("table") else None
        shown = f"{q}.{name}" if q else name
        if self.schema is not None:
            if q not in self.schema:
                known = sorted(a for a in self.schema if a is not None)
                raise self.error(f"unknown table alias {q!r} in {shown}", _suggest(q or "", known, "aliases"))
            if name not in self.schema[q]:
                raise self.error(f"unknown column {shown}", _suggest(name, list(self.schema[q]), "columns"))
        self.refs.add((q, name))

        def col(ctx: Context) -> Any:
            row = ctx.get(q)
            return None if row is None else row.get(name)

        return _Node(col)

    def literal(self, e: exp.Literal) -> _Node:
        text = e.this
        if e.is_string:
            return _const(text, untyped=True)
        if any(c in text for c in ".eE"):
            return _const(F.to_decimal(text))  # PG types 1.5 and 1e3 as numeric
        return _const(int(text))


def _suggest(name: str, known: list[str], what: str) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(close) + "?"
    shown = ", ".join(sorted(known)[:20]) + (" ..." if len(known) > 20 else "")
    return f"known {what}: {shown}" if known else f"no {what} are declared here"


_HANDLERS: dict[type[exp.Expr], Callable[[_Compiler, Any], _Node]] = {}


def _on(*types: type[exp.Expr]) -> Callable[[Callable[[_Compiler, Any], _Node]], Any]:
    def register(h: Callable[[_Compiler, Any], _Node]) -> Any:
        for t in types:
            _HANDLERS[t] = h
        return h

    return register


_on(exp.Column)(_Compiler.column)
_on(exp.Literal)(_Compiler.literal)
_on(exp.Null)(lambda c, e: _const(None))
_on(exp.Boolean)(lambda c, e: _const(bool(e.this)))
_on(exp.Paren)(lambda c, e: c.sub(e))
_on(exp.Neg)(lambda c, e: c.strict(F.neg, c.sub(e)))
_on(exp.DPipe)(lambda c, e: c.strict(_dpipe, c.sub(e), c.sub(e, "expression")))


def _dpipe(a: Any, b: Any) -> str:
    return F.to_text(a) + F.to_text(b)


@_on(*_ARITH)
def _arith(c: _Compiler, e: exp.Binary) -> _Node:
    f = _ARITH[type(e)]
    if isinstance(e, exp.Div | exp.Mod):
        where = e.sql("postgres")
        raw = f

        def f(a: Any, b: Any) -> Any:
            try:
                return raw(a, b)
            except ExprEvalError as ex:
                raise ExprEvalError(f"{ex} in {where}") from None

    return c.binary(f, c.sub(e), c.sub(e, "expression"))


@_on(*_CMP)
def _compare(c: _Compiler, e: exp.Binary) -> _Node:
    return c.binary(_CMP[type(e)], c.sub(e), c.sub(e, "expression"))


@_on(exp.NullSafeEQ, exp.NullSafeNEQ)
def _distinct(c: _Compiler, e: exp.Binary) -> _Node:
    same = c.binary(_EQ, c.sub(e), c.sub(e, "expression")).fn
    a, b = c.sub(e).fn, c.sub(e, "expression").fn
    want_equal = isinstance(e, exp.NullSafeEQ)

    def g(ctx: Context) -> bool:
        x, y = a(ctx), b(ctx)
        if x is None or y is None:
            return (x is None and y is None) == want_equal
        return bool(same(ctx)) == want_equal

    return _Node(g)


@_on(exp.Is)
def _is(c: _Compiler, e: exp.Is) -> _Node:
    a = c.sub(e).fn
    target = e.expression
    negate = bool(e.args.get("negate"))
    if isinstance(target, exp.Null):
        return _Node(lambda ctx: (a(ctx) is None) != negate)
    if isinstance(target, exp.Boolean):
        want = bool(target.this)
        return _Node(lambda ctx: (a(ctx) is want) != negate)
    raise c.unsupported(e)


@_on(exp.Not)
def _not(c: _Compiler, e: exp.Not) -> _Node:
    return c.strict(operator.not_, c.sub(e))


@_on(exp.And)
def _and(c: _Compiler, e: exp.And) -> _Node:
    left, right = c.sub(e), c.sub(e, "expression")
    a, b = left.fn, right.fn

    def g(ctx: Context) -> bool | None:
        x = a(ctx)
        if x is False:
            return False
        y = b(ctx)
        if y is False:
            return False
        return None if x is None or y is None else True

    return c.fold(_Node(g), left, right)


@_on(exp.Or)
def _or(c: _Compiler, e: exp.Or) -> _Node:
    left, right = c.sub(e), c.sub(e, "expression")
    a, b = left.fn, right.fn

    def g(ctx: Context) -> bool | None:
        x = a(ctx)
        if x is True:
            return True
        y = b(ctx)
        if y is True:
            return True
        return None if x is None or y is None else False

    return c.fold(_Node(g), left, right)


@_on(exp.Between)
def _between(c: _Compiler, e: exp.Between) -> _Node:
    x, lo, hi = c.sub(e), c.sub(e, "low"), c.sub(e, "high")
    ge, le = _CMP[exp.GTE], _CMP[exp.LTE]
    inside = _and_nodes(c, c.binary(ge, x, lo), c.binary(le, x, hi))
    if not e.args.get("symmetric"):
        return inside
    swapped = _and_nodes(c, c.binary(ge, x, hi), c.binary(le, x, lo))
    a, b = inside.fn, swapped.fn

    def g(ctx: Context) -> bool | None:
        p = a(ctx)
        return True if p is True else (b(ctx) or p)

    return _Node(g)


def _and_nodes(c: _Compiler, left: _Node, right: _Node) -> _Node:
    a, b = left.fn, right.fn

    def g(ctx: Context) -> bool | None:
        x = a(ctx)
        if x is False:
            return False
        y = b(ctx)
        return False if y is False else (None if x is None or y is None else True)

    return c.fold(_Node(g), left, right)


@_on(exp.In)
def _in(c: _Compiler, e: exp.In) -> _Node:
    if e.args.get("query") or e.args.get("unnest") or e.args.get("field") or not e.expressions:
        raise c.unsupported(e)
    x = c.sub(e)
    items = [c.compile(i) for i in e.expressions]
    if all(i.const for i in items) and not x.untyped:
        return _in_constants(c, x, items)
    tests = [c.binary(_EQ, x, i).fn for i in items]

    def g(ctx: Context) -> bool | None:
        saw_null = False
        for t in tests:
            r = t(ctx)
            if r:
                return True
            saw_null = saw_null or r is None
        return None if saw_null else False

    return c.fold(_Node(g), x, *items)


def _in_constants(c: _Compiler, x: _Node, items: list[_Node]) -> _Node:
    has_null = any(i.value is None for i in items)
    miss = None if has_null else False
    sets: dict[type, frozenset[Any] | None] = {}
    fallback = [c.binary(_EQ, x, i).fn for i in items if i.value is not None]
    fx = x.fn

    def members(v: Any) -> frozenset[Any] | None:
        try:  # typed once per value type; unhashable (json) values fall back to a scan
            present = [i for i in items if i.value is not None]
            return frozenset(F.coerce_literal(i.value, v) if i.untyped else i.value for i in present)
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

    return c.fold(_Node(g), x, *items)


@_on(exp.Like, exp.ILike)
def _like(c: _Compiler, e: exp.Like | exp.ILike, escape: str | None = "\\") -> _Node:
    x, pat = c.sub(e), c.sub(e, "expression")
    negate = bool(e.args.get("negate"))
    # ILIKE lower-cases both sides first, as PostgreSQL does for multibyte encodings.
    fold = F.lower if isinstance(e, exp.ILike) else F.to_text
    if pat.const and pat.value is not None:
        try:
            rx = F.like_regex(fold(pat.value), escape)
        except ExprEvalError as ex:
            raise c.error(str(ex)) from None
        return c.strict(lambda s: (rx.fullmatch(fold(s)) is not None) != negate, x)

    def dynamic(s: Any, p: Any) -> bool:
        return (F.like_regex(fold(p), escape).fullmatch(fold(s)) is not None) != negate

    return c.strict(dynamic, x, pat)


@_on(exp.Escape)
def _escape(c: _Compiler, e: exp.Escape) -> _Node:
    if not isinstance(e.this, exp.Like | exp.ILike):
        raise c.unsupported(e)
    esc = c.sub(e, "expression")
    if not esc.const or (esc.value is not None and len(esc.value) > 1):
        raise c.error("ESCAPE must be a constant of at most one character")
    return _like(c, e.this, esc.value or None)


@_on(exp.Case)
def _case(c: _Compiler, e: exp.Case) -> _Node:
    subject = c.opt(e, "this")
    default = c.opt(e, "default") or _const(None)
    branches: list[tuple[Fn, Fn]] = []
    for branch in e.args.get("ifs") or []:
        cond, then = c.sub(branch), c.sub(branch, "true")
        test = c.binary(_EQ, subject, cond).fn if subject is not None else cond.fn
        branches.append((test, then.fn))
    dflt = default.fn

    def g(ctx: Context) -> Any:
        for test, then in branches:
            if test(ctx) is True:
                return then(ctx)
        return dflt(ctx)

    return _Node(g)


@_on(exp.Coalesce)
def _coalesce(c: _Compiler, e: exp.Coalesce) -> _Node:
    fns = [c.sub(e).fn, *(c.compile(x).fn for x in e.expressions)]

    def g(ctx: Context) -> Any:
        for f in fns:
            v = f(ctx)
            if v is not None:
                return v
        return None

    return _Node(g)


@_on(exp.Nullif)
def _nullif(c: _Compiler, e: exp.Nullif) -> _Node:
    a = c.sub(e)
    same = c.binary(_EQ, a, c.sub(e, "expression")).fn
    fa = a.fn
    return _Node(lambda ctx: None if same(ctx) is True else fa(ctx))


@_on(exp.Greatest, exp.Least)
def _extreme(c: _Compiler, e: exp.Greatest | exp.Least) -> _Node:
    nodes = [c.sub(e), *(c.compile(x) for x in e.expressions)]
    pick = max if isinstance(e, exp.Greatest) else min
    fns = [n.fn for n in nodes]
    untyped = [n.untyped for n in nodes]

    def g(ctx: Context) -> Any:
        vals = [f(ctx) for f in fns]
        typed = next((v for v, u in zip(vals, untyped, strict=True) if v is not None and not u), None)
        present = [
            F.coerce_literal(v, typed) if u and typed is not None else v
            for v, u in zip(vals, untyped, strict=True)
            if v is not None
        ]
        if not present:
            return None
        best = present[0]
        for v in present[1:]:
            a, b = (v, best) if type(v) is type(best) else _align(v, best)
            if (a > b) if pick is max else (a < b):
                best = v
        return best

    return c.fold(_Node(g), *nodes)


@_on(exp.Concat)
def _concat(c: _Compiler, e: exp.Concat) -> _Node:
    fns = [c.compile(x).fn for x in e.expressions]
    return _Node(lambda ctx: "".join(F.to_text(v) for f in fns if (v := f(ctx)) is not None))


@_on(exp.ConcatWs)
def _concat_ws(c: _Compiler, e: exp.ConcatWs) -> _Node:
    sep, *fns = [c.compile(x).fn for x in e.expressions]

    def g(ctx: Context) -> str | None:
        s = sep(ctx)
        if s is None:
            return None
        return F.to_text(s).join(F.to_text(v) for f in fns if (v := f(ctx)) is not None)

    return _Node(g)


@_on(exp.Cast)
def _cast(c: _Compiler, e: exp.Cast) -> _Node:
    to = e.args["to"]
    make = _CAST_TYPES.get(to.this)
    if make is None:
        raise c.error(f"unsupported cast target {to.sql('postgres')}", f"supported: {CAST_TARGETS}")
    params = [int(p.name) for p in to.expressions]
    return c.strict(make(params), c.sub(e))


_on(exp.Upper)(lambda c, e: c.strict(F.upper, c.sub(e)))
_on(exp.Lower)(lambda c, e: c.strict(F.lower, c.sub(e)))
_on(exp.Initcap)(lambda c, e: c.strict(F.initcap, c.sub(e)))  # sqlglot adds a delimiter list PG lacks
_on(exp.Length)(lambda c, e: c.strict(lambda s: len(F.to_text(s)), c.sub(e)))
_on(exp.Replace)(lambda c, e: c.strict(F.replace, c.sub(e), c.sub(e, "expression"), c.sub(e, "replacement")))
_on(exp.Left)(lambda c, e: c.strict(F.left, c.sub(e), c.sub(e, "expression")))
_on(exp.Right)(lambda c, e: c.strict(F.right, c.sub(e), c.sub(e, "expression")))
_on(exp.SplitPart)(lambda c, e: c.strict(F.split_part, c.sub(e), c.sub(e, "delimiter"), c.sub(e, "part_index")))
_on(exp.Abs)(lambda c, e: c.strict(F.abs_, c.sub(e)))


@_on(exp.Trim)
def _trim(c: _Compiler, e: exp.Trim) -> _Node:
    where = str(e.args.get("position") or "BOTH").upper()
    chars = c.opt(e, "expression")
    if chars is None:
        return c.strict(lambda s: F.trim(s, None, where), c.sub(e))
    return c.strict(lambda s, ch: F.trim(s, F.to_text(ch), where), c.sub(e), chars)


@_on(exp.Substring)
def _substring(c: _Compiler, e: exp.Substring) -> _Node:
    start = c.opt(e, "start") or _const(1)
    if start.untyped:
        raise c.error("SUBSTRING(x FROM pattern) (regular expressions) is not supported")
    length = c.opt(e, "length")
    if length is None:
        return c.strict(F.substring, c.sub(e), start)
    return c.strict(F.substring, c.sub(e), start, length)


@_on(exp.StrPosition)
def _strpos(c: _Compiler, e: exp.StrPosition) -> _Node:
    if e.args.get("position") or e.args.get("occurrence"):
        raise c.unsupported(e)
    return c.strict(F.strpos, c.sub(e), c.sub(e, "substr"))


@_on(exp.Pad)
def _pad(c: _Compiler, e: exp.Pad) -> _Node:
    is_left = bool(e.args.get("is_left"))
    fill = c.opt(e, "fill_pattern")
    if fill is None:
        return c.strict(lambda s, n: F.pad(s, n, None, is_left), c.sub(e), c.sub(e, "expression"))
    return c.strict(lambda s, n, f: F.pad(s, n, f, is_left), c.sub(e), c.sub(e, "expression"), fill)


@_on(exp.Round, exp.Trunc)
def _round(c: _Compiler, e: exp.Round | exp.Trunc) -> _Node:
    f = F.round_ if isinstance(e, exp.Round) else F.trunc
    digits = c.opt(e, "decimals")
    if any(e.args.get(k) for k in ("truncate", "casts_non_integer_decimals", "to", "unit")):
        raise c.unsupported(e)
    if digits is None:
        return c.strict(f, c.sub(e))
    return c.strict(lambda v, n: f(v, F.to_int(n, "integer")), c.sub(e), digits)


@_on(exp.Floor, exp.Ceil)
def _floor(c: _Compiler, e: exp.Floor | exp.Ceil) -> _Node:
    if e.args.get("decimals") or e.args.get("to"):
        raise c.unsupported(e)
    return c.strict(F.floor if isinstance(e, exp.Floor) else F.ceil, c.sub(e))


@_on(exp.Extract)
def _extract(c: _Compiler, e: exp.Extract) -> _Node:
    fld = c.constant_text(e.this, "the EXTRACT field").upper()
    fld = _UNIT_ALIASES.get(fld, fld)
    if fld not in F.EXTRACT_FIELDS:
        known = ", ".join(sorted(F.EXTRACT_FIELDS)).lower()
        raise c.error(f"unknown EXTRACT field {fld.lower()}", f"one of {known}")
    return c.strict(lambda v: F.extract(fld, v), c.sub(e, "expression"))


@_on(exp.TimestampTrunc, exp.DateTrunc)
def _date_trunc(c: _Compiler, e: exp.TimestampTrunc) -> _Node:
    if e.args.get("zone"):
        raise c.error("DATE_TRUNC with a time zone argument is not supported")
    unit = c.constant_text(e.args["unit"], "the DATE_TRUNC unit").upper()
    unit = _UNIT_ALIASES.get(unit, unit)
    if unit not in F.TRUNC_UNITS:
        known = ", ".join(sorted(F.TRUNC_UNITS)).lower()
        raise c.error(f"unknown DATE_TRUNC unit {unit.lower()}", f"one of {known}")
    return c.strict(lambda v: F.date_trunc(unit, v), c.sub(e))


@_on(exp.TimeToStr)
def _to_char(c: _Compiler, e: exp.TimeToStr) -> _Node:
    fmt = e.args.get("format")
    render = F.to_char_compiler(fmt.name) if isinstance(fmt, exp.Literal) and not e.args.get("zone") else None
    if render is None:
        raise c.error(f"unsupported TO_CHAR format in `{e.sql('postgres')}`",
                      "TO_CHAR supports dates/timestamps with the patterns YYYY MM DD HH24 MI SS and "
                      "punctuation between them")  # fmt: skip
    return c.strict(render, c.sub(e))


@_on(exp.JSONExtract, exp.JSONExtractScalar)
def _json(c: _Compiler, e: exp.JSONExtract | exp.JSONExtractScalar) -> _Node:
    node = c.sub(e)
    if not isinstance(e.this, exp.JSONExtract | exp.JSONExtractScalar):
        node = c.strict(F.json_parse_text, node)
    path = e.expression
    steps: list[_Node] = []
    if isinstance(path, exp.JSONPath):
        for part in path.expressions:
            if isinstance(part, exp.JSONPathRoot):
                continue
            step = part.this
            if not isinstance(part, exp.JSONPathKey | exp.JSONPathSubscript) or not isinstance(step, str | int):
                raise c.unsupported(e)
            steps.append(_const(part.this))
    else:
        steps.append(c.compile(path))
    for i, step in enumerate(steps):
        scalar = isinstance(e, exp.JSONExtractScalar) and i == len(steps) - 1
        node = c.strict(F.json_get_text if scalar else F.json_get, node, step)
    return node
