"""Boolean logic and NULL handling: AND, OR, NOT, IS [NOT] NULL/TRUE/FALSE, CASE, COALESCE."""

from __future__ import annotations

import operator
from typing import Any

from sqlglot import exp

from replicator.mapping.expr.comparisons import EQ
from replicator.mapping.expr.nodes import Compiler, Context, Fn, Handlers, Node, const

HANDLERS = Handlers()


@HANDLERS.on(exp.Is)
def _is(c: Compiler, e: exp.Is) -> Node:
    a = c.sub(e).fn
    target = e.expression
    negate = bool(e.args.get("negate"))
    if isinstance(target, exp.Null):
        return Node(lambda ctx: (a(ctx) is None) != negate)
    if isinstance(target, exp.Boolean):
        want = bool(target.this)
        return Node(lambda ctx: (a(ctx) is want) != negate)
    raise c.unsupported(e)


@HANDLERS.on(exp.Not)
def _not(c: Compiler, e: exp.Not) -> Node:
    return c.strict(operator.not_, c.sub(e))


@HANDLERS.on(exp.And)
def _and(c: Compiler, e: exp.And) -> Node:
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

    return c.fold(Node(g), left, right)


@HANDLERS.on(exp.Or)
def _or(c: Compiler, e: exp.Or) -> Node:
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

    return c.fold(Node(g), left, right)


@HANDLERS.on(exp.Case)
def _case(c: Compiler, e: exp.Case) -> Node:
    subject = c.opt(e, "this")
    default = c.opt(e, "default") or const(None)
    branches: list[tuple[Fn, Fn]] = []
    for branch in e.args.get("ifs") or []:
        cond, then = c.sub(branch), c.sub(branch, "true")
        test = c.binary(EQ, subject, cond).fn if subject is not None else cond.fn
        branches.append((test, then.fn))
    dflt = default.fn

    def g(ctx: Context) -> Any:
        for test, then in branches:
            if test(ctx) is True:
                return then(ctx)
        return dflt(ctx)

    return Node(g)


@HANDLERS.on(exp.Coalesce)
def _coalesce(c: Compiler, e: exp.Coalesce) -> Node:
    fns = [c.sub(e).fn, *(c.compile(x).fn for x in e.expressions)]

    def g(ctx: Context) -> Any:
        for f in fns:
            v = f(ctx)
            if v is not None:
                return v
        return None

    return Node(g)
