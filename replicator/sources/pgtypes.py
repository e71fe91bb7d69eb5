"""PostgreSQL text output → Python values, by type OID.

Converters are looked up once per relation column (``build_converters``) so the
per-value cost is one call. They assume the replication connection runs with
``DateStyle=ISO``, ``IntervalStyle=postgres``, ``bytea_output=hex`` (``SERVER_OPTIONS``).
Values Python cannot represent (BC dates, years past 9999, infinities, intervals
with months) come back as the server's string rather than failing or being rounded.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from decimal import Decimal
from functools import partial
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo

import orjson

Converter: TypeAlias = Callable[[str], Any]

# Session settings the converters rely on; pass as libpq ``options``.
SERVER_OPTIONS = "-c datestyle=ISO -c intervalstyle=postgres -c bytea_output=hex -c timezone=UTC"

BOOL, BYTEA, CHAR, NAME, INT8, INT2, INT4, TEXT, OID = 16, 17, 18, 19, 20, 21, 23, 25, 26
JSON, FLOAT4, FLOAT8, BPCHAR, VARCHAR = 114, 700, 701, 1042, 1043
DATE, TIME, TIMESTAMP, TIMESTAMPTZ, INTERVAL, TIMETZ = 1082, 1083, 1114, 1184, 1186, 1266
NUMERIC, UUID, JSONB = 1700, 2950, 3802


def parse_bool(s: str) -> bool:
    return s == "t"


def parse_bytea(s: str) -> bytes:
    if s.startswith("\\x"):
        return bytes.fromhex(s[2:])
    return _parse_bytea_escape(s)


def _parse_bytea_escape(s: str) -> bytes:
    # Legacy bytea_output=escape: backslash-octal and doubled backslashes.
    out = bytearray()
    i, n = 0, len(s)
    while i < n:
        c = s[i]
        if c == "\\":
            if s[i + 1] == "\\":
                out.append(0x5C)
                i += 2
            else:
                out.append(int(s[i + 1 : i + 4], 8))
                i += 4
        else:
            out += c.encode()
            i += 1
    return bytes(out)


def parse_json(s: str) -> Any:
    return orjson.loads(s)


def _special_date(s: str) -> bool:
    # BC dates, years > 9999 ('12345-01-01'), and +/-infinity are not representable.
    return len(s) < 5 or s[4] != "-" or s.endswith(" BC") or s[0] in "-i"


def parse_timestamptz(s: str) -> datetime | str:
    try:
        return datetime.fromisoformat(s)
    except ValueError:
        if _special_date(s):
            return s
        raise


def parse_timestamp(s: str, tz: tzinfo = UTC) -> datetime | str:
    try:
        return datetime.fromisoformat(s).replace(tzinfo=tz)
    except ValueError:
        if _special_date(s):
            return s
        raise


def parse_date(s: str) -> date | str:
    try:
        return date.fromisoformat(s)
    except ValueError:
        if _special_date(s):
            return s
        raise


def parse_time(s: str) -> time | str:
    try:
        return time.fromisoformat(s)
    except ValueError:
        if s.startswith("24:"):  # PG allows 24:00:00
            return s
        raise


_INTERVAL_DAYS = re.compile(r"(-?\d+) days?")
_INTERVAL_TIME = re.compile(r"([+-])?(\d+):(\d\d):(\d\d)(?:\.(\d{1,6}))?$")


def parse_interval(s: str) -> timedelta | str:
    """IntervalStyle=postgres: '1 day -02:03:04.5'. Months/years have no fixed length → str."""
    if "mon" in s or "year" in s or "inf" in s:
        return s
    days = 0
    rest = s
    m = _INTERVAL_DAYS.match(s)
    if m:
        days = int(m.group(1))
        rest = s[m.end() :].lstrip()
    if not rest:
        return timedelta(days=days)
    t = _INTERVAL_TIME.match(rest)
    if not t:
        raise ValueError(f"unrecognised interval {s!r}")
    sign, hh, mm, ss, frac = t.groups()
    micros = (int(hh) * 3600 + int(mm) * 60 + int(ss)) * 1_000_000 + int((frac or "0").ljust(6, "0"))
    if sign == "-":
        micros = -micros
    return timedelta(days=days, microseconds=micros)


def _identity(s: str) -> str:
    return s


def parse_array(s: str, element: Converter = str) -> list[Any]:
    """PG array text syntax → (nested) lists; unquoted NULL → None.

    Tolerates a leading '[lo:hi]=' bounds decoration (arrays not starting at 1).
    """
    if s[0] == "[":
        s = s[s.index("=") + 1 :]
    if s == "{}":
        return []
    inner = s[1:-1]
    if '"' not in inner and "\\" not in inner and "{" not in inner:
        # The common case: no quoting or nesting, a plain split is exact. array_out quotes any
        # element spelled like null in another case, so only the exact "NULL" is SQL NULL.
        if element is _identity:
            return [None if item == "NULL" else item for item in inner.split(",")]
        return [None if item == "NULL" else element(item) for item in inner.split(",")]
    value, pos = _parse_array_at(s, 0, element)
    if pos != len(s):
        raise ValueError(f"trailing characters in array literal {s!r}")
    return value


_ARRAY_SPACE = " \t\n\r\v\f"


def _parse_array_at(s: str, pos: int, element: Converter) -> tuple[list[Any], int]:
    if s[pos] != "{":
        raise ValueError(f"expected '{{' at {pos} in array literal {s!r}")
    pos += 1
    out: list[Any] = []
    if s[pos] == "}":
        return out, pos + 1
    n = len(s)
    while True:
        c = s[pos]
        if c == "{":
            sub, pos = _parse_array_at(s, pos, element)
            out.append(sub)
        elif c == '"':
            pos += 1
            buf: list[str] = []
            while s[pos] != '"':
                if s[pos] == "\\":
                    pos += 1
                buf.append(s[pos])
                pos += 1
            pos += 1
            out.append(element("".join(buf)))
        else:
            start = pos
            buf = []
            while pos < n and s[pos] not in ",}":
                if s[pos] == "\\":
                    pos += 1
                buf.append(s[pos])
                pos += 1
            # Only ASCII whitespace is insignificant (array_in's array_isspace).
            raw = s[start:pos].strip(_ARRAY_SPACE)
            out.append(None if raw.upper() == "NULL" else element("".join(buf).strip(_ARRAY_SPACE)))
        if s[pos] == ",":
            pos += 1
        elif s[pos] == "}":
            return out, pos + 1
        else:
            raise ValueError(f"unexpected {s[pos]!r} at {pos} in array literal {s!r}")


_SCALARS: dict[int, Converter] = {
    BOOL: parse_bool,
    BYTEA: parse_bytea,
    CHAR: _identity,
    NAME: _identity,
    INT8: int,
    INT2: int,
    INT4: int,
    TEXT: _identity,
    OID: int,
    JSON: parse_json,
    FLOAT4: float,
    FLOAT8: float,
    BPCHAR: _identity,
    VARCHAR: _identity,
    DATE: parse_date,
    TIME: parse_time,
    TIMESTAMPTZ: parse_timestamptz,
    INTERVAL: parse_interval,
    TIMETZ: parse_time,
    NUMERIC: Decimal,
    UUID: uuid.UUID,
    JSONB: parse_json,
}

# Array type OID → element type OID (pg_type.typarray, for the types above).
ARRAY_ELEMENTS: dict[int, int] = {
    1000: BOOL, 1001: BYTEA, 1002: CHAR, 1003: NAME, 1016: INT8, 1005: INT2, 1007: INT4,
    1009: TEXT, 1028: OID, 199: JSON, 1021: FLOAT4, 1022: FLOAT8, 1014: BPCHAR, 1015: VARCHAR,
    1182: DATE, 1183: TIME, 1115: TIMESTAMP, 1185: TIMESTAMPTZ, 1187: INTERVAL, 1270: TIMETZ,
    1231: NUMERIC, 2951: UUID, 3807: JSONB,
}  # fmt: skip


def scalar_converter(type_oid: int, tz: tzinfo = UTC) -> Converter:
    if type_oid == TIMESTAMP:
        return partial(parse_timestamp, tz=tz)
    return _SCALARS.get(type_oid, _identity)


def converter_for(type_oid: int, tz: tzinfo = UTC, type_name: str | None = None) -> Converter:
    """The converter for one column. ``type_name`` (from a pgoutput Type message) lets
    arrays of user types (enums: '_mood') parse as lists of str; other unknown types stay str."""
    element = ARRAY_ELEMENTS.get(type_oid)
    if element is not None:
        return partial(parse_array, element=scalar_converter(element, tz))
    if type_name is not None and type_name.startswith("_"):
        return parse_array
    return scalar_converter(type_oid, tz)


def build_converters(
    type_oids: Sequence[int], tz: tzinfo | str = UTC, type_names: dict[int, str] | None = None
) -> list[Converter]:
    zone = ZoneInfo(tz) if isinstance(tz, str) else tz
    names = type_names or {}
    return [converter_for(oid, zone, names.get(oid)) for oid in type_oids]
