"""Input parsing and casts (CAST/::), and the typing of untyped string literals."""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

from sqlglot import exp

from replicator.mapping.expr.errors import ExprEvalError
from replicator.mapping.expr.nodes import Compiler, Handlers, Node
from replicator.mapping.expr.values import DEC, ONE, Float4, cast_text, nz

_INT_RE = re.compile(r"\s*[+-]?\d+\s*")
_BOOL_WORDS = {"true": True, "yes": True, "on": True, "1": True}
_BOOL_WORDS |= {"false": False, "no": False, "off": False, "0": False}
_INT_RANGE = {"smallint": 2**15, "integer": 2**31, "bigint": 2**63}


def parse_bool(s: str) -> bool:
    w = s.strip().lower()
    # boolin accepts any unambiguous prefix ("t", "ye", "of" ...).
    hits = {val for word, val in _BOOL_WORDS.items() if w and word.startswith(w)}
    if len(hits) == 1:
        return hits.pop()
    raise ExprEvalError(f"invalid input syntax for type boolean: {s!r}")


def parse_timestamp(s: str, aware: bool) -> datetime:
    txt = s.strip()
    try:
        v = datetime.fromisoformat(txt)
    except ValueError:
        raise ExprEvalError(f"invalid input syntax for type timestamp: {s!r}") from None
    if aware:
        return v.replace(tzinfo=UTC) if v.tzinfo is None else v
    # timestamp without time zone silently ignores a zone in its input.
    return v.replace(tzinfo=None)


def to_int(v: Any, kind: str = "bigint") -> int:
    t = type(v)
    if t is int:
        r = v
    elif t is bool:
        r = int(v)
    elif t is Decimal:
        r = int(v.to_integral_value(ROUND_HALF_UP))
    elif t is float or t is Float4:
        if not math.isfinite(v):
            raise ExprEvalError(f"{kind} out of range")
        r = round(v)  # float8 -> int uses rint(): half to even, like round().
    elif t is str:
        if not _INT_RE.fullmatch(v):
            raise ExprEvalError(f"invalid input syntax for type {kind}: {v!r}")
        r = int(v)
    else:
        raise ExprEvalError(f"cannot cast {type(v).__name__} to {kind}")
    lim = _INT_RANGE[kind]
    if not -lim <= r < lim:
        raise ExprEvalError(f"{kind} out of range")
    return r


def to_decimal(v: Any) -> Decimal:
    t = type(v)
    if t is Decimal:
        return v
    if t is int:
        return Decimal(v)
    if t is float or t is Float4:
        # float8 -> numeric keeps DBL_DIG (15) significant digits.
        return Decimal(f"{v:.15g}") if math.isfinite(v) else Decimal(v)
    if t is str:
        try:
            d = Decimal(v.strip())
        except InvalidOperation:
            raise ExprEvalError(f"invalid input syntax for type numeric: {v!r}") from None
        # 1e3 is numeric 1000 (scale 0) in PG, never an exponent form.
        return d.quantize(ONE, context=DEC) if d.is_finite() and int(d.as_tuple().exponent) > 0 else d
    raise ExprEvalError(f"cannot cast {type(v).__name__} to numeric")


def to_float(v: Any) -> float:
    if isinstance(v, bool):
        raise ExprEvalError("cannot cast boolean to double precision")
    if isinstance(v, int | float | Decimal):
        return float(v)
    if isinstance(v, str):
        s = v.strip().lower()
        s = {"infinity": "inf", "-infinity": "-inf", "+infinity": "inf"}.get(s, s)
        try:
            return float(s)
        except ValueError:
            raise ExprEvalError(f"invalid input syntax for type double precision: {v!r}") from None
    raise ExprEvalError(f"cannot cast {type(v).__name__} to double precision")


def to_float4(v: Any) -> Float4:
    return Float4(struct.unpack("f", struct.pack("f", to_float(v)))[0])


def to_numeric(v: Any, precision: int | None, scale: int) -> Decimal:
    d = to_decimal(v)
    if precision is None or not d.is_finite():
        return d
    d = nz(d.quantize(Decimal(1).scaleb(-scale), context=DEC))
    if d.copy_abs() >= Decimal(1).scaleb(precision - scale):
        raise ExprEvalError(f"numeric field overflow: precision {precision}, scale {scale} cannot hold {d}")
    return d


def to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, int):
        return v != 0
    if isinstance(v, str):
        return parse_bool(v)
    raise ExprEvalError(f"cannot cast {type(v).__name__} to boolean")


def to_date(v: Any) -> date:
    if isinstance(v, datetime):
        return (v.astimezone(UTC) if v.tzinfo else v).date()
    if isinstance(v, date):
        return v
    if isinstance(v, str):
        try:
            return date.fromisoformat(v.strip())
        except ValueError:
            return parse_timestamp(v, aware=False).date()
    raise ExprEvalError(f"cannot cast {type(v).__name__} to date")


def to_timestamp(v: Any, aware: bool) -> datetime:
    if isinstance(v, datetime):
        if aware:
            return v if v.tzinfo else v.replace(tzinfo=UTC)
        return v.astimezone(UTC).replace(tzinfo=None) if v.tzinfo else v
    if isinstance(v, date):
        return datetime(v.year, v.month, v.day, tzinfo=UTC if aware else None)
    if isinstance(v, str):
        return parse_timestamp(v, aware)
    raise ExprEvalError(f"cannot cast {type(v).__name__} to timestamp")


def to_json(v: Any) -> Any:
    if isinstance(v, str):
        try:
            return json.loads(v)
        except ValueError:
            raise ExprEvalError(f"invalid input syntax for type json: {v!r}") from None
    return v


def to_varchar(n: int | None) -> Callable[[Any], str]:
    if n is None:
        return cast_text
    return lambda v: cast_text(v)[:n]  # an explicit cast to varchar(n) truncates silently


def coerce_literal(s: str, like: Any) -> Any:
    """Type an untyped string literal after the value it meets, as PG's 'unknown' type does."""
    t = type(like)
    if t is str:
        return s
    if t is bool:
        return parse_bool(s)
    if t is int:
        return to_int(s)
    if t is Decimal:
        return to_decimal(s)
    if t is float or t is Float4:
        return to_float(s)
    if t is datetime:
        return parse_timestamp(s, like.tzinfo is not None)
    if t is date:
        return to_date(s)
    if t is dict or t is list:
        return to_json(s)
    return s


# ---------------------------------------------------------------- CAST / ::

CAST_TARGETS = (
    "text, varchar(n), integer, bigint, smallint, numeric(p,s), double precision, real, boolean, date, "
    "timestamp, timestamptz, json, jsonb"
)
_CAST_TYPES: dict[Any, Callable[[list[int]], Callable[[Any], Any]]] = {
    exp.DataType.Type.TEXT: lambda p: cast_text,
    exp.DataType.Type.VARCHAR: lambda p: to_varchar(p[0] if p else None),
    exp.DataType.Type.INT: lambda p: lambda v: to_int(v, "integer"),
    exp.DataType.Type.BIGINT: lambda p: lambda v: to_int(v, "bigint"),
    exp.DataType.Type.SMALLINT: lambda p: lambda v: to_int(v, "smallint"),
    exp.DataType.Type.DECIMAL: lambda p: lambda v: to_numeric(v, p[0] if p else None, p[1] if len(p) > 1 else 0),
    exp.DataType.Type.DOUBLE: lambda p: to_float,
    exp.DataType.Type.FLOAT: lambda p: to_float4,
    exp.DataType.Type.BOOLEAN: lambda p: to_bool,
    exp.DataType.Type.DATE: lambda p: to_date,
    exp.DataType.Type.TIMESTAMP: lambda p: lambda v: to_timestamp(v, aware=False),
    exp.DataType.Type.TIMESTAMPTZ: lambda p: lambda v: to_timestamp(v, aware=True),
    exp.DataType.Type.JSON: lambda p: to_json,
    exp.DataType.Type.JSONB: lambda p: to_json,
}

HANDLERS = Handlers()


@HANDLERS.on(exp.Cast)
def _cast(c: Compiler, e: exp.Cast) -> Node:
    to = e.args["to"]
    make = _CAST_TYPES.get(to.this)
    if make is None:
        raise c.error(f"unsupported cast target {to.sql('postgres')}", f"supported: {CAST_TARGETS}")
    params = [int(p.name) for p in to.expressions]
    return c.strict(make(params), c.sub(e))
