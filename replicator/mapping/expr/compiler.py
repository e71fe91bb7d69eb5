"""The compiler core: parse once with sqlglot, dispatch each node to its handler, wrap the result in an Expr."""

# Evaluation per change only runs the closure tree, never sqlglot. This module handles
# structure: columns, literals, typing of bare string literals, constant folding, NULL
# strictness and error reporting; the handler modules hold the operators and functions.

from __future__ import annotations

import difflib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from replicator.mapping.expr.casts import HANDLERS as CAST_HANDLERS
from replicator.mapping.expr.casts import coerce_literal, to_decimal
from replicator.mapping.expr.comparisons import HANDLERS as COMPARISON_HANDLERS
from replicator.mapping.expr.datetimes import HANDLERS as DATETIME_HANDLERS
from replicator.mapping.expr.errors import ExprEvalError, MappingError
from replicator.mapping.expr.json import HANDLERS as JSON_HANDLERS
from replicator.mapping.expr.logic import HANDLERS as LOGIC_HANDLERS
from replicator.mapping.expr.nodes import Context, Fn, Node, Schema, const, const_fn
from replicator.mapping.expr.numbers import HANDLERS as NUMBER_HANDLERS
from replicator.mapping.expr.strings import HANDLERS as STRING_HANDLERS

SUPPORTED = (
    "literals, columns, + - * / %, ||, = <> < <= > >=, IS [NOT] NULL/TRUE/FALSE, IS [NOT] DISTINCT FROM, "
    "[NOT] BETWEEN, [NOT] IN (list), [NOT] LIKE/ILIKE [ESCAPE], AND/OR/NOT, CASE, CAST/::, COALESCE, NULLIF, "
    "GREATEST, LEAST, UPPER, LOWER, INITCAP, TRIM/LTRIM/RTRIM/BTRIM, LENGTH, SUBSTRING/SUBSTR, REPLACE, "
    "LEFT, RIGHT, SPLIT_PART, POSITION/STRPOS, LPAD/RPAD, CONCAT, CONCAT_WS, ROUND, TRUNC, ABS, FLOOR, CEIL, "
    "MOD, EXTRACT/DATE_PART, DATE_TRUNC, TO_CHAR (YYYY MM DD HH24 MI SS), -> and ->>"
)
_NONDETERMINISTIC = (exp.CurrentTimestamp, exp.CurrentDate, exp.CurrentTime, exp.Rand, exp.CurrentUser)


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
            fn = const_fn(node.value is True)
        else:
            inner = fn

            def fn(ctx: Context) -> bool:
                return inner(ctx) is True

    return Expr(sql.strip(), frozenset(c.refs), fn, location)


def _ident(i: exp.Expr) -> str:
    # PostgreSQL folds unquoted identifiers to lower case.
    name = i.name
    return name if isinstance(i, exp.Identifier) and i.quoted else name.lower()


class _Compiler:
    def __init__(self, location: str, schema: Schema | None) -> None:
        self.location = location
        self.schema: Mapping[str | None, Collection[str]] | None = schema  # type: ignore[assignment]
        self.refs: set[tuple[str | None, str]] = set()

    def error(self, message: str, hint: str | None = None) -> MappingError:
        return MappingError(self.location, message, hint)

    def compile(self, e: exp.Expr) -> Node:
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

    def fold(self, node: Node, *parts: Node) -> Node:
        """Evaluate now when every input is constant; a constant that fails is a mapping bug."""
        if not all(p.const for p in parts):
            return node
        try:
            return const(node.fn({}))
        except (ExprEvalError, TypeError, ValueError, ArithmeticError) as e:
            raise self.error(f"constant expression fails: {e}") from None

    def strict(self, f: Callable[..., Any], *args: Node) -> Node:
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

        return self.fold(Node(g), *args)

    def binary(self, f: Callable[[Any, Any], Any], left: Node, right: Node) -> Node:
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
                typed = cache[key] = coerce_literal(lit, v)
            return f(typed, v) if lit_left else f(v, typed)

        return self.fold(Node(g), left, right)

    def sub(self, e: exp.Expr, key: str = "this") -> Node:
        child = e.args.get(key)
        if child is None:
            raise self.error(f"`{e.sql('postgres')}` lacks its {key} argument")
        return self.compile(child)

    def opt(self, e: exp.Expr, key: str) -> Node | None:
        child = e.args.get(key)
        return None if child is None else self.compile(child)

    def constant_text(self, e: exp.Expr, what: str) -> str:
        if isinstance(e, exp.Var | exp.Literal | exp.Column):
            return str(e.name)
        raise self.error(f"{what} must be a constant, got `{e.sql('postgres')}`")

    # -------------------------------------------------------------- leaves

    def column(self, e: exp.Column) -> Node:
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

        return Node(col)

    def literal(self, e: exp.Literal) -> Node:
        text = e.this
        if e.is_string:
            return const(text, untyped=True)
        if any(c in text for c in ".eE"):
            return const(to_decimal(text))  # PG types 1.5 and 1e3 as numeric
        return const(int(text))


def _suggest(name: str, known: list[str], what: str) -> str:
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(close) + "?"
    shown = ", ".join(sorted(known)[:20]) + (" ..." if len(known) > 20 else "")
    return f"known {what}: {shown}" if known else f"no {what} are declared here"


# The dispatch table: the compiler's own leaves plus every handler module's table. The
# handler modules never import this one, so there is no import cycle.
_HANDLERS: dict[type[exp.Expr], Callable[[_Compiler, Any], Node]] = {
    exp.Column: _Compiler.column,
    exp.Literal: _Compiler.literal,
    exp.Null: lambda c, e: const(None),
    exp.Boolean: lambda c, e: const(bool(e.this)),
    exp.Paren: lambda c, e: c.sub(e),
}
for _table in (LOGIC_HANDLERS, COMPARISON_HANDLERS, NUMBER_HANDLERS, STRING_HANDLERS, DATETIME_HANDLERS,
               CAST_HANDLERS, JSON_HANDLERS):  # fmt: skip
    if _clash := _HANDLERS.keys() & _table.keys():
        raise RuntimeError(f"sqlglot node types handled twice: {sorted(t.__name__ for t in _clash)}")
    _HANDLERS.update(_table)
