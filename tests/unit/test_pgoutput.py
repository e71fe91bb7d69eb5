"""pgoutput v1 decoder on hand-built message bytes, plus round-trip properties."""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.sources import pgoutput as po
from replicator.sources.pgoutput import UNCHANGED, DecodeError, decode

TS_US = 757_382_400_123_456  # 2024-01-01 00:00:00.123456 UTC in PG-epoch microseconds
TS = datetime(2000, 1, 1, tzinfo=UTC) + timedelta(microseconds=TS_US)


# --- a minimal encoder (the inverse of the decoder, written from the protocol docs) ------


def cstr(s: str) -> bytes:
    return s.encode() + b"\0"


def tuple_data(values: tuple[str | bytes | po.Unchanged | None, ...]) -> bytes:
    out = struct.pack("!H", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v is UNCHANGED:
            out += b"u"
        elif isinstance(v, bytes):
            out += b"b" + struct.pack("!I", len(v)) + v
        else:
            raw = v.encode()
            out += b"t" + struct.pack("!I", len(raw)) + raw
    return out


def begin(lsn: int, ts: int, xid: int) -> bytes:
    return b"B" + struct.pack("!QqI", lsn, ts, xid)


def commit(flags: int, lsn: int, end: int, ts: int) -> bytes:
    return b"C" + struct.pack("!BQQq", flags, lsn, end, ts)


def relation(oid: int, ns: str, name: str, ident: str, cols: list[tuple[int, str, int, int]]) -> bytes:
    out = b"R" + struct.pack("!I", oid) + cstr(ns) + cstr(name) + ident.encode() + struct.pack("!H", len(cols))
    for flags, cname, toid, typmod in cols:
        out += bytes([flags]) + cstr(cname) + struct.pack("!Ii", toid, typmod)
    return out


# --- every message type ----------------------------------------------------------------------


def test_begin() -> None:
    assert decode(begin(0x16_B374D848, TS_US, 4242)) == po.Begin(0x16_B374D848, TS, 4242)


def test_commit() -> None:
    assert decode(commit(0, 100, 148, TS_US)) == po.Commit(0, 100, 148, TS)


def test_origin() -> None:
    msg = decode(b"O" + struct.pack("!Q", 77) + cstr("replicator_writer"))
    assert msg == po.Origin(77, "replicator_writer")


def test_relation() -> None:
    cols = [(1, "id", 23, -1), (0, "amount", 1700, 917510), (0, "név", 25, -1)]
    msg = decode(relation(16384, "public", "orders", "d", cols))
    assert isinstance(msg, po.Relation)
    assert msg.qualified_name == "public.orders"
    assert msg.replica_identity == "d"
    assert [c.name for c in msg.columns] == ["id", "amount", "név"]
    assert [c.is_key for c in msg.columns] == [True, False, False]
    assert msg.columns[1] == po.Column(0, "amount", 1700, 917510)


def test_relation_empty_namespace_is_pg_catalog() -> None:
    msg = decode(relation(1, "", "x", "n", []))
    assert isinstance(msg, po.Relation) and msg.namespace == "pg_catalog" and msg.columns == ()


def test_type() -> None:
    assert decode(b"Y" + struct.pack("!I", 90000) + cstr("public") + cstr("mood")) == po.Type(90000, "public", "mood")


def test_insert_with_null_text_and_binary() -> None:
    values = ("1", None, "héllo", b"\x00\x01")
    msg = decode(b"I" + struct.pack("!I", 16384) + b"N" + tuple_data(values))
    assert msg == po.Insert(16384, values)


def test_update_without_old_tuple_and_unchanged_toast() -> None:
    msg = decode(b"U" + struct.pack("!I", 5) + b"N" + tuple_data(("1", UNCHANGED, "x")))
    assert isinstance(msg, po.Update)
    assert msg.old is None and msg.old_kind is None
    assert msg.new == ("1", UNCHANGED, "x")
    assert msg.new[1] is not None  # unchanged TOAST is not NULL


def test_update_with_key_old_tuple() -> None:
    raw = b"U" + struct.pack("!I", 5) + b"K" + tuple_data(("1", None)) + b"N" + tuple_data(("2", "b"))
    assert decode(raw) == po.Update(5, "K", ("1", None), ("2", "b"))


def test_update_with_full_old_tuple() -> None:
    raw = b"U" + struct.pack("!I", 5) + b"O" + tuple_data(("1", "big")) + b"N" + tuple_data(("1", UNCHANGED))
    assert decode(raw) == po.Update(5, "O", ("1", "big"), ("1", UNCHANGED))


@pytest.mark.parametrize("kind", ["K", "O"])
def test_delete(kind: str) -> None:
    raw = b"D" + struct.pack("!I", 9) + kind.encode() + tuple_data(("7", None))
    assert decode(raw) == po.Delete(9, kind, ("7", None))


def test_truncate() -> None:
    msg = decode(b"T" + struct.pack("!iB", 2, 3) + struct.pack("!II", 10, 11))
    assert msg == po.Truncate(3, (10, 11))
    assert isinstance(msg, po.Truncate) and msg.cascade and msg.restart_identity
    plain = decode(b"T" + struct.pack("!iB", 1, 0) + struct.pack("!I", 10))
    assert isinstance(plain, po.Truncate) and not plain.cascade and not plain.restart_identity


def test_message() -> None:
    raw = b"M" + struct.pack("!BQ", 1, 99) + cstr("replicator") + struct.pack("!I", 3) + b"a\0b"
    assert decode(raw) == po.Message(True, 99, "replicator", b"a\0b")
    raw = b"M" + struct.pack("!BQ", 0, 99) + cstr("p") + struct.pack("!I", 0)
    assert decode(raw) == po.Message(False, 99, "p", b"")


# --- malformed input -------------------------------------------------------------------------


def test_unknown_message_type() -> None:
    with pytest.raises(DecodeError, match="unknown message type"):
        decode(b"S\0\0\0\1")


def test_empty() -> None:
    with pytest.raises(DecodeError):
        decode(b"")


def test_truncated_fixed_part_names_type_and_offset() -> None:
    with pytest.raises(DecodeError, match=r"Begin message at offset 10") as e:
        decode(begin(1, 2, 3)[:10])
    assert e.value.kind == "Begin" and e.value.offset == 10


def test_value_length_past_end() -> None:
    raw = b"I" + struct.pack("!I", 1) + b"N" + struct.pack("!H", 1) + b"t" + struct.pack("!I", 50) + b"abc"
    with pytest.raises(DecodeError, match=r"Insert message at offset 13: value of 50 bytes"):
        decode(raw)


def test_bad_column_kind() -> None:
    raw = b"I" + struct.pack("!I", 1) + b"N" + struct.pack("!H", 1) + b"x"
    with pytest.raises(DecodeError, match=r"Insert message at offset 8: unknown tuple column kind 'x'"):
        decode(raw)


def test_bad_markers() -> None:
    with pytest.raises(DecodeError, match=r"Insert message at offset 5: expected 'N'"):
        decode(b"I" + struct.pack("!I", 1) + b"K" + tuple_data(()))
    with pytest.raises(DecodeError, match=r"Delete message at offset 5"):
        decode(b"D" + struct.pack("!I", 1) + b"N" + tuple_data(()))
    with pytest.raises(DecodeError, match=r"Update message at offset 8: expected 'N'"):
        decode(b"U" + struct.pack("!I", 1) + b"K" + tuple_data(()) + b"X" + tuple_data(()))


def test_unterminated_string() -> None:
    with pytest.raises(DecodeError, match="Origin message at offset 9: unterminated string"):
        decode(b"O" + struct.pack("!Q", 1) + b"abc")


def test_trailing_bytes() -> None:
    with pytest.raises(DecodeError, match=r"Commit message at offset 26: 2 trailing bytes"):
        decode(commit(0, 1, 2, 3) + b"xx")


def test_invalid_utf8() -> None:
    raw = b"I" + struct.pack("!I", 1) + b"N" + struct.pack("!H", 1) + b"t" + struct.pack("!I", 2) + b"\xff\xfe"
    with pytest.raises(DecodeError, match=r"Insert message.*invalid UTF-8"):
        decode(raw)


# --- properties ------------------------------------------------------------------------------

values_st: st.SearchStrategy[po.Value] = st.one_of(
    st.none(), st.just(UNCHANGED), st.text(max_size=50), st.binary(max_size=20)
)
tuples_st = st.lists(values_st, max_size=30).map(tuple)


@given(oid=st.integers(0, 2**32 - 1), new=tuples_st)
def test_insert_roundtrip(oid: int, new: tuple[po.Value, ...]) -> None:
    assert decode(b"I" + struct.pack("!I", oid) + b"N" + tuple_data(new)) == po.Insert(oid, new)


@given(oid=st.integers(0, 2**32 - 1), kind=st.sampled_from([None, "K", "O"]), old=tuples_st, new=tuples_st)
def test_update_roundtrip(oid: int, kind: str | None, old: po.TupleData, new: po.TupleData) -> None:
    raw = b"U" + struct.pack("!I", oid)
    if kind:
        raw += kind.encode() + tuple_data(old)
    raw += b"N" + tuple_data(new)
    assert decode(raw) == po.Update(oid, kind, old if kind else None, new)


@given(
    name=st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=20),
    cols=st.lists(
        st.tuples(
            st.integers(0, 1),
            st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), min_size=1, max_size=10),
            st.integers(0, 2**32 - 1),
            st.integers(-(2**31), 2**31 - 1),
        ),
        max_size=10,
    ),
)
def test_relation_roundtrip(name: str, cols: list[tuple[int, str, int, int]]) -> None:
    msg = decode(relation(1, "s", name, "f", cols))
    assert isinstance(msg, po.Relation)
    assert [(c.flags, c.name, c.type_oid, c.typmod) for c in msg.columns] == cols


@given(new=tuples_st, cut=st.integers(1, 200))
def test_truncation_always_raises_decode_error(new: po.TupleData, cut: int) -> None:
    raw = b"I" + struct.pack("!I", 1) + b"N" + tuple_data(new)
    if cut >= len(raw):
        return
    with pytest.raises(DecodeError):
        decode(raw[: len(raw) - cut])
