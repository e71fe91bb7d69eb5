"""Fitting values to ERP column types before they are written.

Every value is coerced to its column's type from the catalog (PostgreSQL `format_type()`
or MariaDB `COLUMN_TYPE`) or rejected with a `WriteRejected` naming the table, column,
value, type and fix. Nothing is ever truncated or rounded: a string longer than its
varchar, a decimal with more digits than its scale, an integer out of range, fractional
seconds a column cannot hold, all are refused. Strings arrive as JSON-ish text too
("1234.50", "2026-11-25", ISO-8601 timestamps); a naive timestamp means `zone`.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, time, tzinfo
from decimal import Decimal, InvalidOperation
from typing import Any, Literal

from replicator.mapping.catalog import TableInfo
from replicator.sinks.erp.model import ChildWrite, RowWrite, WriteRejected

FitDialect = Literal["postgres", "mysql"]

_SHOW = 60
_TRUE = {"true", "t", "yes", "y", "on", "1"}
_FALSE = {"false", "f", "no", "n", "off", "0"}
_INTEGER_TEXT = re.compile(r"[+-]?\d+")
_PG_INTS = {"smallint": 16, "int2": 16, "integer": 32, "int": 32, "int4": 32, "bigint": 64, "int8": 64}
_MY_INTS = {"tinyint": 8, "smallint": 16, "mediumint": 24, "int": 32, "integer": 32, "bigint": 64}
# MariaDB's TEXT and BLOB types are limited in bytes, not characters.
_MY_TEXT_BYTES = {"tinytext": 255, "text": 65_535, "mediumtext": 16_777_215, "longtext": 4_294_967_295}
_MY_BLOB_BYTES = {"tinyblob": 255, "blob": 65_535, "mediumblob": 16_777_215, "longblob": 4_294_967_295}
_MY_TIMESTAMP_MIN = datetime(1970, 1, 1, 0, 0, 1, tzinfo=UTC)
_MY_TIMESTAMP_MAX = datetime(2038, 1, 19, 3, 14, 7, 999999, tzinfo=UTC)
_ENUM_MEMBER = re.compile(r"'((?:[^']|'')*)'")

Kind = Literal[
    "text", "int", "decimal", "float", "bool", "date", "timestamp", "time", "json", "uuid", "bytes", "enum", "other"
]


@dataclass(frozen=True)
class ColumnType:
    """What a catalog type string means for fitting values into it."""

    text: str  # as the catalog spells it
    kind: Kind
    length: int | None = None  # characters (text) or bytes (bytes)
    byte_length: int | None = None  # MariaDB TEXT types: limit in UTF-8 bytes
    bits: int | None = None  # integers
    unsigned: bool = False
    precision: int | None = None  # decimals
    scale: int | None = None
    fsp: int = 6  # fractional-second digits a timestamp/time holds
    zone: Literal["aware", "local", "utc"] = "aware"  # timestamps: how the column holds a point in time
    boolean_like: bool = False  # MariaDB BOOLEAN (tinyint(1))
    jsonb: bool = False
    members: tuple[str, ...] = ()  # MariaDB ENUM


def _args(text: str) -> list[int]:
    m = re.search(r"\(([\d\s,]+)\)", text)
    return [int(a) for a in m.group(1).split(",")] if m else []


def parse_type(type_text: str, dialect: FitDialect) -> ColumnType:
    t = type_text.strip().lower()
    if dialect == "mysql":
        return _mysql_type(type_text, t)
    return _pg_type(type_text, t)


def _pg_type(raw: str, t: str) -> ColumnType:
    if t.endswith("]"):
        return ColumnType(raw, "other")
    base = re.sub(r"\(.*?\)", "", t).strip()
    args = _args(t)
    if base in ("character varying", "varchar", "text", "citext", "name"):
        return ColumnType(raw, "text", length=args[0] if args else None)
    if base in ("character", "char"):
        return ColumnType(raw, "text", length=args[0] if args else 1)
    if base == "bpchar":
        return ColumnType(raw, "text", length=args[0] if args else None)
    if base in _PG_INTS:
        return ColumnType(raw, "int", bits=_PG_INTS[base])
    if base in ("numeric", "decimal"):
        if not args:
            return ColumnType(raw, "decimal")
        return ColumnType(raw, "decimal", precision=args[0], scale=args[1] if len(args) > 1 else 0)
    if base in ("real", "double precision", "float4", "float8"):
        return ColumnType(raw, "float")
    if base in ("boolean", "bool"):
        return ColumnType(raw, "bool")
    if base == "date":
        return ColumnType(raw, "date")
    fsp = args[0] if args else 6
    if base in ("timestamp with time zone", "timestamptz"):
        return ColumnType(raw, "timestamp", fsp=fsp, zone="aware")
    if base in ("timestamp without time zone", "timestamp"):
        return ColumnType(raw, "timestamp", fsp=fsp, zone="local")
    if base.startswith("time"):
        return ColumnType(raw, "time", fsp=fsp)
    if base in ("json", "jsonb"):
        return ColumnType(raw, "json", jsonb=base == "jsonb")
    if base == "uuid":
        return ColumnType(raw, "uuid")
    if base == "bytea":
        return ColumnType(raw, "bytes")
    return ColumnType(raw, "other")


def _mysql_type(raw: str, t: str) -> ColumnType:
    base = re.match(r"[a-z ]+", t)
    name = base.group(0).strip() if base else t
    unsigned = " unsigned" in t
    args = _args(t)
    if name in ("varchar", "char"):
        return ColumnType(raw, "text", length=args[0] if args else 1)
    if name in _MY_TEXT_BYTES:
        return ColumnType(raw, "text", byte_length=_MY_TEXT_BYTES[name])
    if name in _MY_INTS:
        return ColumnType(raw, "int", bits=_MY_INTS[name], unsigned=unsigned, boolean_like=t.startswith("tinyint(1)"))
    if name in ("decimal", "numeric", "dec", "fixed"):
        return ColumnType(
            raw, "decimal", precision=args[0] if args else 10, scale=args[1] if len(args) > 1 else 0, unsigned=unsigned
        )
    if name in ("float", "double", "real", "double precision"):
        return ColumnType(raw, "float", unsigned=unsigned)
    if name in ("bool", "boolean"):
        return ColumnType(raw, "int", bits=8, boolean_like=True)
    if name == "date":
        return ColumnType(raw, "date")
    fsp = args[0] if args else 0
    if name == "datetime":
        return ColumnType(raw, "timestamp", fsp=fsp, zone="local")
    if name == "timestamp":
        return ColumnType(raw, "timestamp", fsp=fsp, zone="utc")
    if name == "time":
        return ColumnType(raw, "time", fsp=fsp)
    if name == "json":
        return ColumnType(raw, "json")
    if name == "uuid":
        return ColumnType(raw, "uuid")
    if name in ("binary", "varbinary"):
        return ColumnType(raw, "bytes", length=args[0] if args else 1)
    if name in _MY_BLOB_BYTES:
        return ColumnType(raw, "bytes", length=_MY_BLOB_BYTES[name])
    if name == "enum":
        return ColumnType(raw, "enum", members=tuple(m.replace("''", "'") for m in _ENUM_MEMBER.findall(raw)))
    return ColumnType(raw, "other")


def shorten(value: Any) -> str:
    """`value` for an error message: repr, cut to about 60 characters, with the length of long strings."""
    shown = repr(value)
    if len(shown) > _SHOW:
        shown = shown[: _SHOW - 3] + "..."
        if isinstance(value, str | bytes):
            shown += f" ({len(value)} {'characters' if isinstance(value, str) else 'bytes'})"
    return shown


class _Misfit(Exception):
    """Why a value does not fit, and how to fix it; turned into WriteRejected with table and column."""

    def __init__(self, why: str, fix: str) -> None:
        super().__init__(why)
        self.why = why
        self.fix = fix


_FIX_SOURCE = "correct the value at its source"


def _text(value: Any, ct: ColumnType, dialect: FitDialect) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal | date | time | uuid.UUID):
        raise _Misfit(f"expected text, got {type(value).__name__}", "map a text value to this column")
    text = value.isoformat() if isinstance(value, date | time) else str(value)
    try:
        encoded = text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise _Misfit("is not valid Unicode (it holds a lone surrogate)", _FIX_SOURCE) from e
    if dialect == "postgres" and "\x00" in text:
        raise _Misfit(
            "contains a NUL character (\\x00), which PostgreSQL text cannot store",
            "remove NUL characters at the source (or in the mapping)",
        )
    if ct.length is not None and len(text) > ct.length:
        raise _Misfit(
            f"is {len(text)} characters long; at most {ct.length} fit",
            "shorten it at the source, widen the column, or map it to a column that fits",
        )
    if ct.byte_length is not None and len(encoded) > ct.byte_length:
        raise _Misfit(
            f"is {len(encoded)} bytes long in UTF-8; at most {ct.byte_length} fit",
            "shorten it at the source or use a larger text type (MEDIUMTEXT, LONGTEXT)",
        )
    return text


def _decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise _Misfit("expected a number, got a boolean", "map a number to this column")
    if isinstance(value, Decimal):
        return value
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, str):
        try:
            return Decimal(value.strip())
        except InvalidOperation:
            raise _Misfit("is not a number", "send a decimal number such as 1234.50") from None
    raise _Misfit(f"expected a number, got {type(value).__name__}", "map a number to this column")


def _digits(d: Decimal) -> tuple[int, int]:
    """(digits before the point, digits after it) of a finite decimal, ignoring leading and trailing zeros."""
    _, digits, exponent = d.as_tuple()
    assert isinstance(exponent, int)
    ds = list(digits)
    while len(ds) > 1 and ds[-1] == 0 and exponent < 0:
        ds.pop()
        exponent += 1
    if ds == [0]:
        return 0, 0
    return max(0, len(ds) + exponent), max(0, -exponent)


def _numeric(value: Any, ct: ColumnType, dialect: FitDialect) -> Decimal:
    d = _decimal(value)
    if not d.is_finite():
        if dialect == "postgres" and ct.precision is None and d.is_nan():
            return d
        raise _Misfit(f"is not a finite number; {ct.text} holds none", "send a finite number")
    if ct.unsigned and d < 0:
        raise _Misfit(f"is negative; {ct.text} holds no negative values", _FIX_SOURCE)
    if ct.precision is None:
        return d
    scale = ct.scale or 0
    before, after = _digits(d)
    if after > scale:
        raise _Misfit(
            f"has {after} digits after the decimal point; {ct.text} holds {scale}, and values are never rounded",
            f"round it to {scale} decimal places at the source or in the mapping, or widen the column's scale",
        )
    if before > ct.precision - scale:
        raise _Misfit(
            f"has {before} digits before the decimal point; {ct.text} holds at most {ct.precision - scale}",
            "correct the value at its source or widen the column's precision",
        )
    return d


def _integer(value: Any, ct: ColumnType) -> int:
    if isinstance(value, bool):
        if ct.boolean_like:
            return int(value)
        raise _Misfit("expected an integer, got a boolean", "map an integer to this column")
    if isinstance(value, int):
        n = value
    elif isinstance(value, str) and _INTEGER_TEXT.fullmatch(value.strip()):
        n = int(value.strip())
    elif isinstance(value, str) and ct.boolean_like and value.strip().lower() in _TRUE | _FALSE:
        n = int(value.strip().lower() in _TRUE)
    else:
        d = _decimal(value)
        if not d.is_finite() or d != d.to_integral_value():
            raise _Misfit(f"is not a whole number; {ct.text} holds integers only", "send a whole number")
        n = int(d)
    bits = ct.bits or 64
    low, high = (0, 2**bits - 1) if ct.unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
    if not low <= n <= high:
        raise _Misfit(f"is out of range for {ct.text} ({low} to {high})", "correct the value or widen the column")
    return n


def _float(value: Any, dialect: FitDialect) -> float:
    if isinstance(value, bool):
        raise _Misfit("expected a number, got a boolean", "map a number to this column")
    try:
        f = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise _Misfit("is not a number", "send a number such as 12.5") from None
    if dialect == "mysql" and (f != f or f in (float("inf"), float("-inf"))):
        raise _Misfit("is not a finite number; MariaDB stores none", "send a finite number")
    return f


def _boolean(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _Misfit("is not a boolean", "send true/false (or 1/0, yes/no)")


def _parse_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            pass
    raise _Misfit("is not a timestamp", "send an ISO-8601 timestamp such as 2026-11-25T14:30:00+01:00")


def _check_fraction(moment: datetime | time, ct: ColumnType) -> None:
    if ct.fsp < 6 and moment.microsecond % 10 ** (6 - ct.fsp):
        held = f"{ct.fsp} fractional second digits" if ct.fsp else "no fractional seconds"
        raise _Misfit(
            f"has fractional seconds; {ct.text} holds {held}, and values are never rounded",
            "drop the fraction in the mapping or give the column more precision (e.g. DATETIME(6))",
        )


def _timestamp(value: Any, ct: ColumnType, dialect: FitDialect, zone: tzinfo) -> datetime:
    moment = _parse_datetime(value)
    _check_fraction(moment, ct)
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=zone)
    if ct.zone == "aware":
        return aware
    if ct.zone == "local":
        local = aware.astimezone(zone).replace(tzinfo=None) if moment.tzinfo is not None else moment
        if dialect == "mysql" and not 1000 <= local.year <= 9999:
            raise _Misfit(f"is outside the range of {ct.text} (years 1000 to 9999)", _FIX_SOURCE)
        return local
    # MariaDB TIMESTAMP: the writer's session runs in UTC, so the column takes UTC wall time.
    if not _MY_TIMESTAMP_MIN <= aware <= _MY_TIMESTAMP_MAX:
        raise _Misfit(
            f"is outside the range of {ct.text} (1970-01-01 00:00:01 to 2038-01-19 03:14:07 UTC)",
            "correct the value at its source or use a DATETIME column",
        )
    return aware.astimezone(UTC).replace(tzinfo=None)


def _date(value: Any, dialect: FitDialect) -> date:
    day = _as_date(value)
    if dialect == "mysql" and day.year < 1000:
        raise _Misfit("is outside the range of DATE (years 1000 to 9999)", _FIX_SOURCE)
    return day


def _as_date(value: Any) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip())
        except ValueError:
            pass
    try:
        moment = _parse_datetime(value)
    except _Misfit:
        raise _Misfit("is not a date", "send an ISO-8601 date such as 2026-11-25") from None
    if moment.time() != time(0) or moment.tzinfo is not None:
        raise _Misfit("has a time of day (or zone), which a date column would drop", "send just the date")
    return moment.date()


def _time(value: Any, ct: ColumnType) -> time:
    if isinstance(value, time):
        t = value
    elif isinstance(value, str):
        try:
            t = time.fromisoformat(value.strip())
        except ValueError:
            raise _Misfit("is not a time of day", "send an ISO-8601 time such as 14:30:00") from None
    else:
        raise _Misfit(f"expected a time of day, got {type(value).__name__}", "send an ISO-8601 time such as 14:30:00")
    _check_fraction(t, ct)
    return t


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


def _json(value: Any, ct: ColumnType, dialect: FitDialect) -> str:
    if isinstance(value, str):
        text = value
        try:
            parsed = json.loads(text)
        except ValueError:
            raise _Misfit("is not valid JSON", "send a JSON document (or a dict/list)") from None
    else:
        parsed = value
        try:
            text = json.dumps(value, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise _Misfit(f"cannot be written as JSON ({e})", "send JSON-compatible values") from None
    if dialect == "postgres" and ("\x00" in text or (ct.jsonb and _has_nul(parsed))):
        raise _Misfit("contains a NUL character, which PostgreSQL cannot store", "remove NUL characters at the source")
    return text


def _uuid(value: Any, dialect: FitDialect) -> uuid.UUID | str:
    try:
        u = value if isinstance(value, uuid.UUID) else uuid.UUID(str(value).strip())
    except ValueError:
        raise _Misfit("is not a UUID", "send a UUID such as a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11") from None
    return u if dialect == "postgres" else str(u)


def _bytes(value: Any, ct: ColumnType) -> bytes:
    if not isinstance(value, bytes | bytearray | memoryview):
        raise _Misfit(f"expected bytes, got {type(value).__name__}", "map binary data (bytes) to this column")
    data = bytes(value)
    if ct.length is not None and len(data) > ct.length:
        raise _Misfit(f"is {len(data)} bytes long; at most {ct.length} fit", "shorten it or widen the column")
    return data


def _enum(value: Any, ct: ColumnType) -> str:
    if isinstance(value, str) and value in ct.members:
        return value
    raise _Misfit(f"is not one of {', '.join(repr(m) for m in ct.members)}", "map the value to one of the members")


def _other(value: Any, dialect: FitDialect) -> Any:
    if dialect == "postgres" and isinstance(value, str) and "\x00" in value:
        raise _Misfit("contains a NUL character (\\x00), which PostgreSQL cannot store", "remove NUL characters")
    return value


def coerce(value: Any, ct: ColumnType, dialect: FitDialect, zone: tzinfo) -> Any:
    """`value` as the driver should bind it for a column of type `ct`; raises _Misfit."""
    if value is None:
        return None
    fitters: dict[str, Callable[[], Any]] = {
        "text": lambda: _text(value, ct, dialect),
        "int": lambda: _integer(value, ct),
        "decimal": lambda: _numeric(value, ct, dialect),
        "float": lambda: _float(value, dialect),
        "bool": lambda: _boolean(value),
        "date": lambda: _date(value, dialect),
        "timestamp": lambda: _timestamp(value, ct, dialect, zone),
        "time": lambda: _time(value, ct),
        "json": lambda: _json(value, ct, dialect),
        "uuid": lambda: _uuid(value, dialect),
        "bytes": lambda: _bytes(value, ct),
        "enum": lambda: _enum(value, ct),
    }
    fitter = fitters.get(ct.kind)
    return fitter() if fitter is not None else _other(value, dialect)


def fit_value(value: Any, *, table: str, column: str, type_text: str, dialect: FitDialect, zone: tzinfo) -> Any:
    """`value` coerced for column `table.column` of catalog type `type_text`, or WriteRejected."""
    ct = parse_type(type_text, dialect)
    try:
        return coerce(value, ct, dialect, zone)
    except _Misfit as m:
        raise WriteRejected(
            f"value {shorten(value)} does not fit {type_text}: it {m.why}; fix: {m.fix}", table=table, column=column
        ) from None


def check_columns(info: TableInfo, names: Iterable[str], what: str) -> None:
    """WriteRejected for the first name that is not a column of `info`."""
    for name in names:
        if name not in info.types:
            raise WriteRejected(
                f"unknown column in {what}; the table's columns are {', '.join(info.columns)}; "
                "fix: correct the column name in the mapping",
                table=info.name,
                column=name,
            )


def fit_row(
    info: TableInfo, values: Mapping[str, Any], dialect: FitDialect, zone: tzinfo, *, what: str = "values"
) -> dict[str, Any]:
    check_columns(info, values, what)
    return {
        column: fit_value(
            value, table=info.name, column=column, type_text=info.types[column], dialect=dialect, zone=zone
        )
        for column, value in values.items()
    }


def table_info(catalog: Mapping[str, TableInfo], table: str) -> TableInfo:
    info = catalog.get(table)
    if info is None:
        known = ", ".join(sorted(catalog)) or "none"
        raise WriteRejected(
            f"table is not in the ERP catalog (known: {known}); fix: check the table name in the mapping "
            "and that the table exists",
            table=table,
        )
    return info


def fit_write(w: RowWrite, catalog: Mapping[str, TableInfo], dialect: FitDialect, zone: tzinfo) -> RowWrite:
    """A copy of `w` (children included) with every value fitted to its column; WriteRejected otherwise."""
    info = table_info(catalog, w.table)
    check_columns(info, w.audit, "audit")
    check_columns(info, w.returning, "returning")
    children = []
    for child in w.children:
        check_columns(info, child.link.values(), f"link of child {child.write.table}")
        child_info = table_info(catalog, child.write.table)
        check_columns(child_info, child.link, "link")
        children.append(ChildWrite(write=fit_write(child.write, catalog, dialect, zone), link=dict(child.link)))
    return replace(
        w,
        key=fit_row(info, w.key, dialect, zone, what="key"),
        values=fit_row(info, w.values, dialect, zone),
        adopt_by=None if w.adopt_by is None else fit_row(info, w.adopt_by, dialect, zone, what="adopt_by"),
        children=children,
    )
