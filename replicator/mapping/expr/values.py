"""The Python value model of SQL values (Float4, the numeric context) and PostgreSQL's text output."""

# Value semantics are modelled on PostgreSQL 15. Every value function in this package
# receives non-NULL Python values (NULL handling is the compiler's job) as psycopg / the
# CDC decoder produce them: int, Decimal (numeric), float, str, bool, date, datetime,
# dict/list (json). The session is assumed to run with TimeZone=UTC: aware datetimes are
# rendered and truncated in UTC, and naive ones meet aware ones as UTC.

from __future__ import annotations

import json
import math
import struct
from datetime import UTC, date, datetime
from decimal import ROUND_HALF_UP, Context, Decimal
from typing import Any

# Wide enough that numeric +, -, * are exact like PG's; rounding only where PG rounds.
DEC = Context(prec=2000, rounding=ROUND_HALF_UP, Emax=999_999, Emin=-999_999)
ONE = Decimal(1)


class Float4(float):
    """A ``real``: a float8 holding a float4 value, printed with float4's shortest digits."""


def nz(d: Decimal) -> Decimal:
    # numeric has no negative zero; Decimal does (-1 * 0.00 is -0.00).
    return d.copy_abs() if not d and d.is_signed() else d


# ---------------------------------------------------------------- text output


def to_text(v: Any) -> str:
    """PostgreSQL's output function for the value's type (DateStyle ISO, TimeZone UTC)."""
    t = type(v)
    if t is str:
        return v
    if t is bool:
        return "t" if v else "f"  # boolout; only an explicit ::text says "true"
    if t is int:
        return str(v)
    if t is Decimal:
        return decimal_text(v)
    if t is float or t is Float4:
        return float_text(v)
    if t is datetime:
        return timestamp_text(v)
    if t is date:
        return v.isoformat()
    if t is dict or t is list:
        return json_text(v)
    return str(v)


def cast_text(v: Any) -> str:
    """``v::text``: like to_text, but booleans read "true"/"false"."""
    if type(v) is bool:
        return "true" if v else "false"
    return to_text(v)


def decimal_text(v: Decimal) -> str:
    if v.is_nan():
        return "NaN"
    if v.is_infinite():
        return "-Infinity" if v < 0 else "Infinity"
    return format(v, "f")


def float_text(v: float) -> str:
    if v != v:
        return "NaN"
    if math.isinf(v):
        return "-Infinity" if v < 0 else "Infinity"
    if v == 0:
        return "-0" if math.copysign(1, v) < 0 else "0"
    r = repr(v) if type(v) is float else _float4_repr(v)
    sign, digits, exp = Decimal(r).as_tuple()
    ds = "".join(map(str, digits)).rstrip("0") or "0"
    exp = int(exp) + len(digits) - len(ds)
    e10 = len(ds) + exp - 1
    s = "-" if sign else ""
    # float8out switches to exponent form outside [1e-4, 1e15), like %g with DBL_DIG.
    if -4 <= e10 < 15:
        return s + format(Decimal(f"{ds}e{exp}"), "f")
    mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
    return f"{s}{mant}e{'+' if e10 >= 0 else '-'}{abs(e10):02d}"


def _float4_repr(v: float) -> str:
    for p in range(1, 10):
        r = f"{v:.{p}g}"
        if struct.unpack("f", struct.pack("f", float(r)))[0] == v:
            return r
    return repr(v)


def timestamp_text(v: datetime) -> str:
    tz = ""
    if v.tzinfo is not None:
        v = v.astimezone(UTC)
        tz = "+00"
    s = f"{v.year:04d}-{v.month:02d}-{v.day:02d} {v.hour:02d}:{v.minute:02d}:{v.second:02d}"
    if v.microsecond:
        s += f".{v.microsecond:06d}".rstrip("0")
    return s + tz


def json_text(v: Any) -> str:
    # jsonb's output uses ", " and ": " separators, as json.dumps does by default.
    return json.dumps(v, ensure_ascii=False, default=_json_default)


def _json_default(o: Any) -> Any:
    if isinstance(o, Decimal):
        return float(o)
    if isinstance(o, date | datetime):
        return o.isoformat()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
