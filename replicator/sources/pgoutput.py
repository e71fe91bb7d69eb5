"""Decoder for the ``pgoutput`` logical replication protocol, version 1 (PostgreSQL 15).

Pure functions over bytes: no I/O and no type conversion (values stay in the
server's text output format; see ``pgtypes``). ``decode(buf)`` takes the payload
of one XLogData ('w') frame and returns one of the message dataclasses below.

Reference: https://www.postgresql.org/docs/15/protocol-logicalrep-message-formats.html
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import TypeAlias

__all__ = [
    "UNCHANGED",
    "Begin",
    "Column",
    "Commit",
    "DecodeError",
    "Delete",
    "Insert",
    "Message",
    "Origin",
    "PgOutputMessage",
    "Relation",
    "Truncate",
    "TupleData",
    "Type",
    "Unchanged",
    "Update",
    "Value",
    "decode",
    "pg_timestamp",
]


class DecodeError(ValueError):
    """A pgoutput message could not be decoded."""

    def __init__(self, kind: str, offset: int, reason: str) -> None:
        super().__init__(f"malformed pgoutput {kind} message at offset {offset}: {reason}")
        self.kind = kind
        self.offset = offset
        self.reason = reason


class Unchanged(Enum):
    """Marker for an unchanged TOASTed value ('u'): the server did not send it.

    It is not NULL; reading it as None would overwrite real data downstream.
    """

    TOAST = "unchanged-toast"

    def __repr__(self) -> str:
        return "UNCHANGED"


UNCHANGED = Unchanged.TOAST

# 't' values decode to str, 'b' (binary mode only) to bytes.
Value: TypeAlias = str | bytes | Unchanged | None
TupleData: TypeAlias = tuple[Value, ...]

PG_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)


def pg_timestamp(us: int) -> datetime:
    """Protocol timestamps are microseconds since 2000-01-01 UTC."""
    return PG_EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class Begin:
    final_lsn: int  # LSN of the commit record: the transaction's position
    commit_ts: datetime
    xid: int


@dataclass(frozen=True, slots=True)
class Commit:
    flags: int
    lsn: int  # same as Begin.final_lsn
    end_lsn: int  # end of the commit record
    commit_ts: datetime


@dataclass(frozen=True, slots=True)
class Origin:
    lsn: int  # commit LSN on the origin server
    name: str


@dataclass(frozen=True, slots=True)
class Column:
    flags: int
    name: str
    type_oid: int
    typmod: int

    @property
    def is_key(self) -> bool:
        # Set for replica identity columns (all columns under REPLICA IDENTITY FULL).
        return bool(self.flags & 1)


@dataclass(frozen=True, slots=True)
class Relation:
    oid: int
    namespace: str
    name: str
    replica_identity: str  # 'd' default, 'n' nothing, 'f' full, 'i' index
    columns: tuple[Column, ...]

    @property
    def qualified_name(self) -> str:
        return f"{self.namespace}.{self.name}"


@dataclass(frozen=True, slots=True)
class Type:
    oid: int
    namespace: str
    name: str


@dataclass(frozen=True, slots=True)
class Insert:
    relation_oid: int
    new: TupleData


@dataclass(frozen=True, slots=True)
class Update:
    relation_oid: int
    old_kind: str | None  # 'K' key columns only, 'O' full old row, None if not sent
    old: TupleData | None
    new: TupleData


@dataclass(frozen=True, slots=True)
class Delete:
    relation_oid: int
    old_kind: str  # 'K' or 'O'
    old: TupleData


@dataclass(frozen=True, slots=True)
class Truncate:
    options: int
    relation_oids: tuple[int, ...]

    @property
    def cascade(self) -> bool:
        return bool(self.options & 1)

    @property
    def restart_identity(self) -> bool:
        return bool(self.options & 2)


@dataclass(frozen=True, slots=True)
class Message:
    transactional: bool
    lsn: int
    prefix: str
    content: bytes


PgOutputMessage: TypeAlias = Begin | Commit | Origin | Relation | Type | Insert | Update | Delete | Truncate | Message

_U8 = struct.Struct("!B")
_I16 = struct.Struct("!h")
_U32 = struct.Struct("!I")
_I32 = struct.Struct("!i")
_I64 = struct.Struct("!q")
_BEGIN = struct.Struct("!QqI")
_COMMIT = struct.Struct("!BQQq")
_MSG_HDR = struct.Struct("!BQ")
_REL_HDR = struct.Struct("!I")
_COL_TAIL = struct.Struct("!Ii")
_TRUNC_HDR = struct.Struct("!iB")

_u16_from = struct.Struct("!H").unpack_from
_u32_from = _U32.unpack_from

_NULL, _TOAST, _TEXT, _BINARY = b"n"[0], b"u"[0], b"t"[0], b"b"[0]


class _Malformed(Exception):
    """Internal: carries the offset of the problem up to decode()."""

    def __init__(self, offset: int, reason: str) -> None:
        super().__init__(reason)
        self.offset = offset


def _cstring(buf: bytes, pos: int) -> tuple[str, int]:
    end = buf.find(b"\0", pos)
    if end < 0:
        raise _Malformed(pos, "unterminated string")
    return buf[pos:end].decode(), end + 1


def _tuple(buf: bytes, pos: int) -> tuple[TupleData, int]:
    (n,) = _u16_from(buf, pos)
    pos += 2
    values: list[Value] = []
    append = values.append
    for _ in range(n):
        kind = buf[pos]
        pos += 1
        # Ordered by frequency; an if-chain on ints beats a dict dispatch here.
        if kind == _TEXT:
            (length,) = _u32_from(buf, pos)
            pos += 4
            end = pos + length
            if end > len(buf):
                raise _Malformed(pos, f"value of {length} bytes runs past the end")
            append(buf[pos:end].decode())
            pos = end
        elif kind == _NULL:
            append(None)
        elif kind == _TOAST:
            append(UNCHANGED)
        elif kind == _BINARY:
            (length,) = _u32_from(buf, pos)
            pos += 4
            end = pos + length
            if end > len(buf):
                raise _Malformed(pos, f"value of {length} bytes runs past the end")
            append(buf[pos:end])
            pos = end
        else:
            raise _Malformed(pos - 1, f"unknown tuple column kind {chr(kind)!r}")
    return tuple(values), pos


def _begin(buf: bytes) -> tuple[Begin, int]:
    lsn, ts, xid = _BEGIN.unpack_from(buf, 1)
    return Begin(lsn, pg_timestamp(ts), xid), 1 + _BEGIN.size


def _commit(buf: bytes) -> tuple[Commit, int]:
    flags, lsn, end_lsn, ts = _COMMIT.unpack_from(buf, 1)
    return Commit(flags, lsn, end_lsn, pg_timestamp(ts)), 1 + _COMMIT.size


def _origin(buf: bytes) -> tuple[Origin, int]:
    (lsn,) = struct.unpack_from("!Q", buf, 1)
    name, pos = _cstring(buf, 9)
    return Origin(lsn, name), pos


def _relation(buf: bytes) -> tuple[Relation, int]:
    (oid,) = _REL_HDR.unpack_from(buf, 1)
    namespace, pos = _cstring(buf, 5)
    name, pos = _cstring(buf, pos)
    ident = chr(buf[pos])
    (ncols,) = _u16_from(buf, pos + 1)
    pos += 3
    cols = []
    for _ in range(ncols):
        flags = buf[pos]
        colname, pos = _cstring(buf, pos + 1)
        type_oid, typmod = _COL_TAIL.unpack_from(buf, pos)
        pos += _COL_TAIL.size
        cols.append(Column(flags, colname, type_oid, typmod))
    # pgoutput sends an empty namespace for pg_catalog.
    return Relation(oid, namespace or "pg_catalog", name, ident, tuple(cols)), pos


def _type(buf: bytes) -> tuple[Type, int]:
    (oid,) = _U32.unpack_from(buf, 1)
    namespace, pos = _cstring(buf, 5)
    name, pos = _cstring(buf, pos)
    return Type(oid, namespace or "pg_catalog", name), pos


def _insert(buf: bytes) -> tuple[Insert, int]:
    (oid,) = _U32.unpack_from(buf, 1)
    if buf[5] != 0x4E:  # 'N'
        raise _Malformed(5, f"expected 'N', got {chr(buf[5])!r}")
    new, pos = _tuple(buf, 6)
    return Insert(oid, new), pos


def _update(buf: bytes) -> tuple[Update, int]:
    (oid,) = _U32.unpack_from(buf, 1)
    marker = chr(buf[5])
    old_kind: str | None = None
    old: TupleData | None = None
    pos = 6
    if marker in ("K", "O"):
        old_kind = marker
        old, pos = _tuple(buf, 6)
        marker = chr(buf[pos])
        pos += 1
    if marker != "N":
        raise _Malformed(pos - 1, f"expected 'N', got {marker!r}")
    new, pos = _tuple(buf, pos)
    return Update(oid, old_kind, old, new), pos


def _delete(buf: bytes) -> tuple[Delete, int]:
    (oid,) = _U32.unpack_from(buf, 1)
    marker = chr(buf[5])
    if marker not in ("K", "O"):
        raise _Malformed(5, f"expected 'K' or 'O', got {marker!r}")
    old, pos = _tuple(buf, 6)
    return Delete(oid, marker, old), pos


def _truncate(buf: bytes) -> tuple[Truncate, int]:
    nrels, options = _TRUNC_HDR.unpack_from(buf, 1)
    pos = 1 + _TRUNC_HDR.size
    if nrels < 0:
        raise _Malformed(1, f"negative relation count {nrels}")
    oids = struct.unpack_from(f"!{nrels}I", buf, pos)
    return Truncate(options, oids), pos + 4 * nrels


def _message(buf: bytes) -> tuple[Message, int]:
    flags, lsn = _MSG_HDR.unpack_from(buf, 1)
    prefix, pos = _cstring(buf, 1 + _MSG_HDR.size)
    (length,) = _U32.unpack_from(buf, pos)
    pos += 4
    end = pos + length
    if end > len(buf):
        raise _Malformed(pos, f"content of {length} bytes runs past the end")
    return Message(bool(flags & 1), lsn, prefix, bytes(buf[pos:end])), end


_DECODERS: dict[int, tuple[str, Callable[[bytes], tuple[PgOutputMessage, int]]]] = {
    ord("B"): ("Begin", _begin),
    ord("C"): ("Commit", _commit),
    ord("O"): ("Origin", _origin),
    ord("R"): ("Relation", _relation),
    ord("Y"): ("Type", _type),
    ord("I"): ("Insert", _insert),
    ord("U"): ("Update", _update),
    ord("D"): ("Delete", _delete),
    ord("T"): ("Truncate", _truncate),
    ord("M"): ("Message", _message),
}


def decode(buf: bytes) -> PgOutputMessage:
    """Decode one pgoutput message; raises DecodeError naming the type and offset."""
    if not buf:
        raise DecodeError("(empty)", 0, "empty message")
    entry = _DECODERS.get(buf[0])
    if entry is None:
        raise DecodeError(repr(chr(buf[0])), 0, "unknown message type (streaming needs protocol v2)")
    kind, fn = entry
    try:
        msg, pos = fn(buf)
    except (struct.error, IndexError) as e:
        # Fixed-size reads only fail by running out of bytes, i.e. at the end.
        raise DecodeError(kind, len(buf), f"truncated ({e})") from None
    except _Malformed as e:
        raise DecodeError(kind, e.offset, str(e)) from None
    except UnicodeDecodeError as e:
        raise DecodeError(kind, e.start, f"invalid UTF-8 ({e.reason})") from None
    if pos != len(buf):
        raise DecodeError(kind, pos, f"{len(buf) - pos} trailing bytes")
    return msg
