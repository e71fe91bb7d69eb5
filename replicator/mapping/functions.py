"""Value-level semantics of the mapping expression language, modelled on PostgreSQL 15.

Every function here receives non-NULL Python values (NULL handling is the compiler's
job) as psycopg / the CDC decoder produce them: int, Decimal (numeric), float, str,
bool, date, datetime, dict/list (json). The session is assumed to run with
TimeZone=UTC: aware datetimes are rendered and truncated in UTC, and naive ones meet
aware ones as UTC.
"""

from __future__ import annotations

import json
import math
import re
import struct
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_DOWN, ROUND_HALF_UP, Context, Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

# Wide enough that numeric +, -, * are exact like PG's; rounding only where PG rounds.
DEC = Context(prec=2000, rounding=ROUND_HALF_UP, Emax=999_999, Emin=-999_999)
_ONE = Decimal(1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ExprEvalError(ValueError):
    """A row made an expression fail (division by zero, bad cast input, ...)."""


class Float4(float):
    """A ``real``: a float8 holding a float4 value, printed with float4's shortest digits."""


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


# ---------------------------------------------------------------- input parsing / casts

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
        return d.quantize(_ONE, context=DEC) if d.is_finite() and int(d.as_tuple().exponent) > 0 else d
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
    d = _nz(d.quantize(Decimal(1).scaleb(-scale), context=DEC))
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
    return _nz(DEC.add(x, y)) if type(x) is Decimal else x + y


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
    return _nz(DEC.subtract(x, y)) if type(x) is Decimal else x - y


def mul(a: Any, b: Any) -> Any:
    if type(a) is int and type(b) is int:
        return a * b
    x, y = _num_pair(a, b, "*")
    return _nz(DEC.multiply(x, y)) if type(x) is Decimal else x * y


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
        return _nz(DEC.remainder(x, y))
    return math.fmod(x, y)


def neg(a: Any) -> Any:
    if isinstance(a, bool) or not isinstance(a, int | float | Decimal | timedelta):
        raise ExprEvalError(f"operator does not exist: - {type(a).__name__}")
    return _nz(a.copy_negate()) if type(a) is Decimal else -a  # unary minus on Decimal would round to 28 digits


def _nz(d: Decimal) -> Decimal:
    # numeric has no negative zero; Decimal does (-1 * 0.00 is -0.00).
    return d.copy_abs() if not d and d.is_signed() else d


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
    return _nz(q.quantize(Decimal(1).scaleb(-rscale), rounding=ROUND_HALF_UP, context=DEC))


# ---------------------------------------------------------------- numeric functions


def _signed_zero(r: int, x: float) -> float:
    # float8 keeps the sign of a zero result (ceil(-0.5) is -0), int conversion would not.
    return math.copysign(0.0, x) if r == 0 else float(r)


def _round_dec(d: Decimal, n: int, mode: str) -> Decimal:
    if not d.is_finite():
        return d
    r = d.quantize(Decimal(1).scaleb(-n), rounding=mode, context=DEC)
    return _nz(r if n >= 0 else r.quantize(_ONE, context=DEC))


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
        return _nz(v.to_integral_value(rounding="ROUND_FLOOR")) if v.is_finite() else v
    return _signed_zero(math.floor(x := to_float(v)), x)


def ceil(v: Any) -> Any:
    if isinstance(v, Decimal):
        return _nz(v.to_integral_value(rounding="ROUND_CEILING")) if v.is_finite() else v
    return _signed_zero(math.ceil(x := to_float(v)), x)


def abs_(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | float | Decimal):
        raise ExprEvalError(f"function abs({type(v).__name__}) does not exist")
    return v.copy_abs() if type(v) is Decimal else abs(v)


# ---------------------------------------------------------------- string functions


def _case_map(s: str, f: Callable[[str], str]) -> str:
    r = f(s)
    if len(r) == len(s):
        return r
    # libc's towupper() maps one character to one ('ß' stays 'ß'); str.upper() may not.
    return "".join(m if len(m := f(c)) == 1 else c for c in s)


def upper(s: Any) -> str:
    return _case_map(to_text(s), str.upper)


def lower(s: Any) -> str:
    s = to_text(s)
    r = s.lower()
    # Only 'İ' lowercases to two characters; its single-character mapping is 'i'.
    return r if len(r) == len(s) else "".join(c.lower()[0] for c in s)


_HAS_DIGIT = re.compile(r"\d")


def initcap(s: Any) -> str:
    s = to_text(s)
    if s.isascii() and not _HAS_DIGIT.search(s):
        return s.title()  # same word boundaries as PG when there are only ASCII letters to case
    out = []
    in_word = False
    for c in s:
        m = c.lower()[0] if in_word else c.upper()  # lower()[0]: 'İ' -> 'i', as towlower() does
        out.append(m if len(m) == 1 else c)
        in_word = c.isalnum()
    return "".join(out)


def trim(s: Any, chars: str | None, where: str) -> str:
    s = to_text(s)
    chars = " " if chars is None else chars
    if where == "LEADING":
        return s.lstrip(chars)
    if where == "TRAILING":
        return s.rstrip(chars)
    return s.strip(chars)


def substring(s: Any, start: Any, count: Any = None) -> str:
    s = to_text(s)
    start = to_int(start, "integer")
    begin = max(start, 1)
    if count is None:
        return s[begin - 1 :]
    count = to_int(count, "integer")
    if count < 0:
        raise ExprEvalError("negative substring length not allowed")
    end = start + count
    return s[begin - 1 : end - 1] if end > begin else ""


def replace(s: Any, old: Any, new: Any) -> str:
    s, old = to_text(s), to_text(old)
    return s.replace(old, to_text(new)) if old else s


def left(s: Any, n: Any) -> str:
    return to_text(s)[: to_int(n, "integer")]


def right(s: Any, n: Any) -> str:
    s, n = to_text(s), to_int(n, "integer")
    if n >= 0:
        return s[len(s) - n :] if n else ""
    return s[-n:]


def split_part(s: Any, delim: Any, n: Any) -> str:
    s, delim, n = to_text(s), to_text(delim), to_int(n, "integer")
    if n == 0:
        raise ExprEvalError("field position must not be zero")
    if not s:
        return ""
    parts = s.split(delim) if delim else [s]
    idx = n - 1 if n > 0 else len(parts) + n
    return parts[idx] if 0 <= idx < len(parts) else ""


def strpos(s: Any, sub: Any) -> int:
    return to_text(s).find(to_text(sub)) + 1


def pad(s: Any, length: Any, fill: Any, is_left: bool) -> str:
    s, n = to_text(s), to_int(length, "integer")
    fill = " " if fill is None else to_text(fill)
    if n <= 0:
        return ""
    if len(s) >= n or not fill:
        return s[:n]
    padding = (fill * ((n - len(s)) // len(fill) + 1))[: n - len(s)]
    return padding + s if is_left else s + padding


@lru_cache(maxsize=512)
def like_regex(pattern: str, escape: str | None) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if escape and c == escape:
            i += 1
            if i == len(pattern):
                raise ExprEvalError("LIKE pattern must not end with escape character")
            out.append(re.escape(pattern[i]))
        elif c == "%":
            out.append(".*")
        elif c == "_":
            out.append(".")
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL)


# ---------------------------------------------------------------- dates

_DATE_FIELDS = {"YEAR", "MONTH", "DAY", "DOW", "ISODOW", "DOY", "WEEK", "QUARTER", "DECADE", "CENTURY",
                "MILLENNIUM", "ISOYEAR", "EPOCH", "JULIAN"}  # fmt: skip
_TIME_FIELDS = {"HOUR", "MINUTE", "SECOND", "MILLISECOND", "MILLISECONDS", "MICROSECOND", "MICROSECONDS"}
EXTRACT_FIELDS = frozenset(_DATE_FIELDS | _TIME_FIELDS | {"TIMEZONE"})
TRUNC_UNITS = frozenset({"MICROSECONDS", "MILLISECONDS", "SECOND", "MINUTE", "HOUR", "DAY", "WEEK", "MONTH",
                         "QUARTER", "YEAR", "DECADE", "CENTURY", "MILLENNIUM"})  # fmt: skip


def extract(fld: str, v: Any) -> Decimal:
    """EXTRACT(fld FROM v): numeric, like PG 14+ (DATE_PART is mapped here too)."""
    if isinstance(v, datetime):
        if v.tzinfo is not None:
            v = v.astimezone(UTC)
        usec = v.second * 1_000_000 + v.microsecond
        if fld == "SECOND":
            return Decimal(usec).scaleb(-6)
        if fld in ("MILLISECOND", "MILLISECONDS"):
            return Decimal(usec).scaleb(-3).quantize(Decimal("0.001"))
        if fld in ("MICROSECOND", "MICROSECONDS"):
            return Decimal(usec)
        if fld == "EPOCH":
            d = v.replace(tzinfo=UTC) - _EPOCH
            return Decimal((d.days * 86400 + d.seconds) * 1_000_000 + d.microseconds).scaleb(-6)
        if fld == "HOUR":
            return Decimal(v.hour)
        if fld == "MINUTE":
            return Decimal(v.minute)
        if fld == "TIMEZONE":
            return Decimal(0)
    elif isinstance(v, date):
        if fld not in _DATE_FIELDS:
            raise ExprEvalError(f'unit "{fld.lower()}" not supported for type date')
        if fld == "EPOCH":
            return Decimal((v - date(1970, 1, 1)).days * 86400)
    else:
        raise ExprEvalError(f"cannot extract {fld.lower()} from {type(v).__name__}")
    y = v.year
    r = {
        "YEAR": y, "MONTH": v.month, "DAY": v.day, "DOW": v.isoweekday() % 7, "ISODOW": v.isoweekday(),
        "DOY": v.timetuple().tm_yday, "WEEK": v.isocalendar()[1], "ISOYEAR": v.isocalendar()[0],
        "QUARTER": (v.month - 1) // 3 + 1, "DECADE": y // 10, "CENTURY": (y + 99) // 100,
        "MILLENNIUM": (y + 999) // 1000, "JULIAN": v.toordinal() + 1721425,
    }[fld]  # fmt: skip
    return Decimal(r)


def date_trunc(unit: str, v: Any) -> datetime:
    # date_trunc(text, date) resolves to the timestamptz variant in PG.
    v = to_timestamp(v, aware=True) if not isinstance(v, datetime) else v
    tz = v.tzinfo
    if tz is not None:
        v = v.astimezone(UTC)
    if unit == "MILLISECONDS":
        v = v.replace(microsecond=v.microsecond // 1000 * 1000)
    elif unit != "MICROSECONDS":
        v = v.replace(microsecond=0)
        steps = ["SECOND", "MINUTE", "HOUR", "DAY"]
        if unit not in steps[:1]:
            v = v.replace(second=0)
        if unit not in steps[:2]:
            v = v.replace(minute=0)
        if unit not in steps[:3]:
            v = v.replace(hour=0)
        if unit == "WEEK":
            v -= timedelta(days=v.weekday())
        elif unit == "MONTH":
            v = v.replace(day=1)
        elif unit == "QUARTER":
            v = v.replace(month=(v.month - 1) // 3 * 3 + 1, day=1)
        elif unit in ("YEAR", "DECADE", "CENTURY", "MILLENNIUM"):
            y = v.year
            y = {"YEAR": y, "DECADE": y // 10 * 10, "CENTURY": (y - 1) // 100 * 100 + 1,
                 "MILLENNIUM": (y - 1) // 1000 * 1000 + 1}[unit]  # fmt: skip
            v = v.replace(year=y, month=1, day=1)
    return v if tz is None else v.replace(tzinfo=UTC)


TO_CHAR_CODES = {"%Y": "YYYY", "%m": "MM", "%d": "DD", "%H": "HH24", "%M": "MI", "%S": "SS"}


def to_char_compiler(fmt: str) -> Callable[[Any], str] | None:
    """Compile a TO_CHAR format (as sqlglot rewrote it to strftime); None if outside the subset."""
    parts = re.split(r"(%.)", fmt)
    for i, p in enumerate(parts):
        if i % 2 == 1 and p not in TO_CHAR_CODES:
            return None
        if i % 2 == 0 and re.search(r'[A-Za-z"%]', p):
            return None

    def render(v: Any) -> str:
        if not isinstance(v, date):
            raise ExprEvalError(f"TO_CHAR expects a date or timestamp, got {type(v).__name__}")
        if isinstance(v, datetime) and v.tzinfo is not None:
            v = v.astimezone(UTC)
        h, mi, s = (v.hour, v.minute, v.second) if isinstance(v, datetime) else (0, 0, 0)
        vals = {"%Y": f"{v.year:04d}", "%m": f"{v.month:02d}", "%d": f"{v.day:02d}",
                "%H": f"{h:02d}", "%M": f"{mi:02d}", "%S": f"{s:02d}"}  # fmt: skip
        return "".join(vals[p] if i % 2 else p for i, p in enumerate(parts))

    return render


# ---------------------------------------------------------------- json


def json_get(v: Any, key: Any) -> Any:
    if isinstance(key, int) and not isinstance(key, bool):
        if not isinstance(v, dict | list):
            v = [v]  # jsonb stores a scalar as a one-element array, and '5'::jsonb -> 0 shows it
        if isinstance(v, list) and -len(v) <= key < len(v):
            return v[key]
        return None
    if isinstance(v, dict):
        return v.get(to_text(key))
    return None


def json_parse_text(v: Any) -> Any:
    # Some decoders hand json/jsonb columns over as text.
    return to_json(v) if type(v) is str else v


def json_get_text(v: Any, key: Any) -> str | None:
    r = json_get(v, key)
    if r is None or type(r) is str:
        return r
    if type(r) is bool:
        return "true" if r else "false"
    if type(r) is float:
        return format(Decimal(repr(r)), "f") if math.isfinite(r) else json_text(r)
    return to_text(r)
