"""Date/time functions: EXTRACT/DATE_PART, DATE_TRUNC and the TO_CHAR subset."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlglot import exp

from replicator.mapping.expr.casts import to_timestamp
from replicator.mapping.expr.errors import ExprEvalError
from replicator.mapping.expr.nodes import Compiler, Handlers, Node

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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


# ---------------------------------------------------------------- handlers

_UNIT_ALIASES = {"MICROSECOND": "MICROSECONDS", "MILLISECOND": "MILLISECONDS", "SECONDS": "SECOND",
                 "MINUTES": "MINUTE", "HOURS": "HOUR", "DAYS": "DAY", "WEEKS": "WEEK", "MONTHS": "MONTH",
                 "YEARS": "YEAR", "QUARTERS": "QUARTER"}  # fmt: skip

HANDLERS = Handlers()


@HANDLERS.on(exp.Extract)
def _extract(c: Compiler, e: exp.Extract) -> Node:
    fld = c.constant_text(e.this, "the EXTRACT field").upper()
    fld = _UNIT_ALIASES.get(fld, fld)
    if fld not in EXTRACT_FIELDS:
        known = ", ".join(sorted(EXTRACT_FIELDS)).lower()
        raise c.error(f"unknown EXTRACT field {fld.lower()}", f"one of {known}")
    return c.strict(lambda v: extract(fld, v), c.sub(e, "expression"))


@HANDLERS.on(exp.TimestampTrunc, exp.DateTrunc)
def _date_trunc(c: Compiler, e: exp.TimestampTrunc) -> Node:
    if e.args.get("zone"):
        raise c.error("DATE_TRUNC with a time zone argument is not supported")
    unit = c.constant_text(e.args["unit"], "the DATE_TRUNC unit").upper()
    unit = _UNIT_ALIASES.get(unit, unit)
    if unit not in TRUNC_UNITS:
        known = ", ".join(sorted(TRUNC_UNITS)).lower()
        raise c.error(f"unknown DATE_TRUNC unit {unit.lower()}", f"one of {known}")
    return c.strict(lambda v: date_trunc(unit, v), c.sub(e))


@HANDLERS.on(exp.TimeToStr)
def _to_char(c: Compiler, e: exp.TimeToStr) -> Node:
    fmt = e.args.get("format")
    render = to_char_compiler(fmt.name) if isinstance(fmt, exp.Literal) and not e.args.get("zone") else None
    if render is None:
        raise c.error(f"unsupported TO_CHAR format in `{e.sql('postgres')}`",
                      "TO_CHAR supports dates/timestamps with the patterns YYYY MM DD HH24 MI SS and "
                      "punctuation between them")  # fmt: skip
    return c.strict(render, c.sub(e))
