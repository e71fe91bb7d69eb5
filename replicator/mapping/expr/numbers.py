"""Arithmetic (+ - * / %, unary minus) and numeric functions (ROUND, TRUNC, FLOOR, CEIL, ABS)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Context, Decimal
from typing import Any

from sqlglot import exp

from replicator.mapping.expr.casts import to_decimal, to_float, to_int
from replicator.mapping.expr.errors import ExprEvalError
from replicator.mapping.expr.nodes import Compiler, Handlers, Node
from replicator.mapping.expr.values import DEC, ONE, Float4, nz

# ---------------------------------------------------------------- arithmetic


def _num_pair(a: Any, b: Any, op: str) -> tuple[Any, Any]:
    ta, tb = type(a), type(b)
    numbers = int | float | Decimal
    if ta is bool or tb is bool or not isinstance(a, numbers) or not isinstance(b, numbers):
        raise ExprEvalError(f"operator does not exist: {type(a).__name__} {op} {type(b).__name__}")
    if ta is float or tb is float or ta is Float4 or tb is Float4:
        return float(a), float(b)
    return Decimal(a), Decimal(b)


def add(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        return a + b
    if isinstance(a, date) and type(b) is int and not isinstance(a, datetime):
        return a + timedelta(days=b)
    if isinstance(b, date) and type(a) is int and not isinstance(b, datetime):
        return b + timedelta(days=a)
    if isinstance(a, datetime) and isinstance(b, timedelta):
        return a + b
    x, y = _num_pair(a, b, "+")
    return nz(DEC.add(x, y)) if type(x) is Decimal else x + y


def sub(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        return a - b
    if isinstance(a, date) and not isinstance(a, datetime):
        if type(b) is int:
            return a - timedelta(days=b)
        if type(b) is date:
            return (a - b).days
    if isinstance(a, datetime) and isinstance(b, datetime | timedelta):
        return a - b
    x, y = _num_pair(a, b, "-")
    return nz(DEC.subtract(x, y)) if type(x) is Decimal else x - y


def mul(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        return a * b
    x, y = _num_pair(a, b, "*")
    return nz(DEC.multiply(x, y)) if type(x) is Decimal else x * y


def div(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        if b == 0:
            raise ExprEvalError("division by zero")
        q = a // b
        return q + 1 if q < 0 and q * b != a else q  # truncate toward zero, not floor
    x, y = _num_pair(a, b, "/")
    if not y:
        raise ExprEvalError("division by zero")
    if type(x) is Decimal:
        return _numeric_div(x, y)
    return x / y


def mod(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        if b == 0:
            raise ExprEvalError("division by zero")
        r = abs(a) % abs(b)
        return -r if a < 0 else r  # the sign follows the dividend
    x, y = _num_pair(a, b, "%")
    if not y:
        raise ExprEvalError("division by zero")
    if type(x) is Decimal:
        return nz(DEC.remainder(x, y))
    return math.fmod(x, y)


def neg(a: Any) -> Any:
    if isinstance(a, bool) or not isinstance(a, int | float | Decimal | timedelta):
        raise ExprEvalError(f"operator does not exist: - {type(a).__name__}")
    return nz(a.copy_negate()) if type(a) is Decimal else -a  # unary minus on Decimal would round to 28 digits


def _dscale(d: Decimal) -> int:
    return max(0, -int(d.as_tuple().exponent))


def _nbase_weight(d: Decimal) -> tuple[int, int]:
    # PG stores numerics in base-10000 digits; the division scale is chosen from them.
    if not d:
        return 0, 0
    w = d.adjusted() // 4
    return w, int(d.copy_abs().scaleb(-4 * w))


def _numeric_div(x: Decimal, y: Decimal) -> Decimal:
    """numeric / numeric with PG's select_div_scale() and half-away-from-zero rounding."""
    if not (x.is_finite() and y.is_finite()):
        return DEC.divide(x, y)
    w1, d1 = _nbase_weight(x)
    w2, d2 = _nbase_weight(y)
    qweight = w1 - w2 - (1 if d1 <= d2 else 0)
    rscale = min(max(16 - qweight * 4, _dscale(x), _dscale(y), 0), 1000)
    if not x:
        return Decimal(0).scaleb(-rscale)
    prec = max(1, x.adjusted() - y.adjusted() + 2 + rscale + 2)
    q = Context(prec=prec, rounding=ROUND_DOWN, Emax=999_999, Emin=-999_999).divide(x, y)
    return nz(q.quantize(Decimal(1).scaleb(-rscale), rounding=ROUND_HALF_UP, context=DEC))


# ---------------------------------------------------------------- numeric functions


def _signed_zero(r: int, x: float) -> float:
    # float8 keeps the sign of a zero result (ceil(-0.5) is -0), int conversion would not.
    return math.copysign(0.0, x) if r == 0 else float(r)


def _round_dec(d: Decimal, n: int, mode: str) -> Decimal:
    if not d.is_finite():
        return d
    r = d.quantize(Decimal(1).scaleb(-n), rounding=mode, context=DEC)
    return nz(r if n >= 0 else r.quantize(ONE, context=DEC))


def round_(v: Any, n: int | None = None) -> Any:
    if n is None:
        if isinstance(v, Decimal):
            return _round_dec(v, 0, ROUND_HALF_UP)
        return round(to_float(v), 0)  # round(float8) is rint(): half to even, keeps -0
    return _round_dec(to_decimal(v), n, ROUND_HALF_UP)


def trunc(v: Any, n: int | None = None) -> Any:
    if n is None:
        if isinstance(v, Decimal):
            return _round_dec(v, 0, ROUND_DOWN)
        return _signed_zero(math.trunc(x := to_float(v)), x)
    return _round_dec(to_decimal(v), n, ROUND_DOWN)


def floor(v: Any) -> Any:
    if isinstance(v, Decimal):
        return nz(v.to_integral_value(rounding="ROUND_FLOOR")) if v.is_finite() else v
    return _signed_zero(math.floor(x := to_float(v)), x)


def ceil(v: Any) -> Any:
    if isinstance(v, Decimal):
        return nz(v.to_integral_value(rounding="ROUND_CEILING")) if v.is_finite() else v
    return _signed_zero(math.ceil(x := to_float(v)), x)


def abs_(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | float | Decimal):
        raise ExprEvalError(f"function abs({type(v).__name__}) does not exist")
    return v.copy_abs() if type(v) is Decimal else abs(v)


# ---------------------------------------------------------------- handlers

_ARITH: dict[type[exp.Expr], Callable[[Any, Any], Any]] = {
    exp.Add: add,
    exp.Sub: sub,
    exp.Mul: mul,
    exp.Div: div,
    exp.Mod: mod,
}

HANDLERS = Handlers()
HANDLERS.on(exp.Neg)(lambda c, e: c.strict(neg, c.sub(e)))
HANDLERS.on(exp.Abs)(lambda c, e: c.strict(abs_, c.sub(e)))


@HANDLERS.on(*_ARITH)
def _arith(c: Compiler, e: exp.Binary) -> Node:
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


@HANDLERS.on(exp.Round, exp.Trunc)
def _round(c: Compiler, e: exp.Round | exp.Trunc) -> Node:
    f = round_ if isinstance(e, exp.Round) else trunc
    digits = c.opt(e, "decimals")
    if any(e.args.get(k) for k in ("truncate", "casts_non_integer_decimals", "to", "unit")):
        raise c.unsupported(e)
    if digits is None:
        return c.strict(f, c.sub(e))
    return c.strict(lambda v, n: f(v, to_int(n, "integer")), c.sub(e), digits)


@HANDLERS.on(exp.Floor, exp.Ceil)
def _floor(c: Compiler, e: exp.Floor | exp.Ceil) -> Node:
    if e.args.get("decimals") or e.args.get("to"):
        raise c.unsupported(e)
    return c.strict(floor if isinstance(e, exp.Floor) else ceil, c.sub(e))
