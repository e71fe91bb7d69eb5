"""PostgreSQL source: a logical replication slot read with ``pgoutput`` over the
streaming replication protocol (START_REPLICATION / CopyBoth) via psycopg 3.

Positions are transaction commit LSNs (``Begin.final_lsn``); every change of a
transaction carries the same position. What is confirmed to the server is derived
from ``ack()`` conservatively: a transaction counts as acknowledged only once all of
its changes have been handed out by ``read()``, so acknowledging a half-read
transaction can never lose its tail across a restart.
"""

from __future__ import annotations

import select
import struct
import threading
import time
from collections import Counter
from collections.abc import Collection
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
from psycopg import sql

from replicator.change import Change, Op, Position, Row
from replicator.ops.metrics import EVENTS_IN, echoes
from replicator.sources import pgoutput as po
from replicator.sources.pg_admin import SlotConnectionLost, SlotSourceError, lsn_to_int, primary_key_columns
from replicator.sources.pgtypes import SERVER_OPTIONS, Converter, build_converters

__all__ = ["PgSlotSource"]

_PG_EPOCH_UNIX = 946_684_800
_STATUS = struct.Struct("!QQQqB")
_KEEPALIVE = struct.Struct("!QQB")
_SLOT_BUSY_WAIT = 10.0  # a previous walsender may still hold the slot right after a disconnect


# --- the source ---------------------------------------------------------------------------


class _Rel:
    """Per-relation decode state, rebuilt whenever the server re-sends the Relation."""

    __slots__ = ("convs", "key_idx", "key_names", "names", "table")

    def __init__(self, rel: po.Relation, convs: list[Converter], key_names: list[str]) -> None:
        self.table = rel.qualified_name
        self.names = tuple(c.name for c in rel.columns)
        self.convs = convs
        self.key_names = tuple(key_names)
        self.key_idx = tuple(self.names.index(n) for n in key_names)

    def row(self, values: po.TupleData) -> tuple[Row, list[str] | None]:
        row: Row = {}
        missing: list[str] | None = None
        for name, conv, v in zip(self.names, self.convs, values, strict=True):
            if v is None:
                row[name] = None
            elif v is po.UNCHANGED:
                if missing is None:
                    missing = []
                missing.append(name)
            else:
                row[name] = conv(v)  # type: ignore[arg-type]
        return row, missing

    def key_row(self, values: po.TupleData) -> Row:
        convs, names = self.convs, self.names
        return {names[i]: None if values[i] is None else convs[i](values[i]) for i in self.key_idx}  # type: ignore[arg-type]

    def key(self, row: Row, fallback: Row | None = None) -> tuple[Any, ...]:
        try:
            return tuple([row[n] for n in self.key_names])
        except KeyError:  # a key column was unchanged TOAST
            other = fallback or {}
            return tuple([row.get(n, other.get(n)) for n in self.key_names])


class PgSlotSource:
    def __init__(
        self,
        dsn: str,
        *,
        slot: str,
        publication: str,
        name: str = "pg",
        timezone: str = "UTC",
        drop_origins: Collection[str] = (),
        status_interval: float = 1.0,
    ) -> None:
        self.dsn = dsn
        self.slot = slot
        self.publication = publication
        self.name = name
        self.zone = ZoneInfo(timezone)
        self.drop_origins = frozenset(drop_origins)
        self.status_interval = status_interval
        self._conn: psycopg.Connection[Any] | None = None
        self._io = threading.Lock()  # libpq connections are not safe for concurrent use
        self._state = threading.Lock()
        self._rels: dict[int, _Rel] = {}
        self._type_names: dict[int, str] = {}
        self._reset_stream_state()

    def _reset_stream_state(self) -> None:
        # Transaction being decoded.
        self._in_tx = False
        self._dropping = False
        self._pos = Position(self.name, 0)
        self._commit_ts: datetime | None = None
        self._xid: int | None = None
        self._origin: str | None = None
        # Stream progress (reader thread only).
        self._received = 0
        self._committed = 0  # final LSN of the last transaction whose Commit was decoded
        self._safe_end = 0  # no transaction committing before this LSN is still to come
        # What read() has handed out, and what the caller acknowledged (guarded by _state).
        self._acked = 0
        self._ret_any = 0
        self._ret_complete = 0
        self._ret_safe_end = 0
        self._flushed = 0
        self._next_status = 0.0

    # -- lifecycle

    def start(self) -> None:
        if self._conn is not None:
            raise SlotSourceError("source already started")
        self._reset_stream_state()
        self._rels.clear()
        deadline = time.monotonic() + _SLOT_BUSY_WAIT
        while True:
            try:
                self._conn = self._start_replication()
                break
            except psycopg.errors.ObjectInUse:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        self._next_status = time.monotonic() + self.status_interval

    def _start_replication(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self.dsn,
            replication="database",
            autocommit=True,
            options=SERVER_OPTIONS,
            application_name="replicator-slot",
        )
        try:
            # Replication connections only speak the simple query protocol: no bound parameters.
            query = sql.SQL("SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = {}")
            row = conn.execute(query.format(sql.Literal(self.slot))).fetchone()
            if row is None:
                raise SlotSourceError(f"replication slot {self.slot!r} does not exist")
            self._flushed = lsn_to_int(row[0]) if row[0] else 0
            pub = self.publication.replace('"', '""').replace("'", "''")
            slot = self.slot.replace('"', '""')
            conn.execute(
                f"START_REPLICATION SLOT \"{slot}\" LOGICAL 0/0 (proto_version '1', "
                f"publication_names '\"{pub}\"', messages 'true')"
            )
        except BaseException:
            conn.close()
            raise
        return conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with self._io:
            try:
                self._send_status(conn.pgconn)
                # CopyDone and wait for the server's: our status is then surely processed.
                conn.pgconn.put_copy_end()
                conn.pgconn.flush()
                deadline = time.monotonic() + 2.0
                while time.monotonic() < deadline:
                    n, _ = conn.pgconn.get_copy_data(1)
                    if n < 0:
                        break
                    if n == 0:
                        select.select([conn.pgconn.socket], [], [], 0.1)
                        conn.pgconn.consume_input()
            except (psycopg.Error, SlotConnectionLost):
                pass  # closing anyway; the slot keeps the last confirmed position
            finally:
                conn.close()

    # -- acknowledgement

    @property
    def acked(self) -> int:
        return self._acked

    @property
    def committed(self) -> int:
        """Final LSN of the last transaction all of whose changes read() has returned
        (including dropped echo transactions): acking this never splits a transaction."""
        with self._state:
            return self._ret_complete

    @property
    def confirmed(self) -> int:
        """The flush LSN last sent to the server."""
        return self._flushed

    def ack(self, position: Position) -> None:
        with self._state:
            if position.offset > self._acked:
                self._acked = position.offset

    def _flush_target(self) -> int:
        with self._state:
            acked = self._acked
            if acked >= self._ret_any and self._ret_any <= self._ret_complete:
                # Everything handed out is applied: also move past dropped (echo) transactions
                # and idle WAL, or the slot would pin WAL forever on an echo-only stream.
                target = self._ret_safe_end
            elif acked:
                # +1: the server skips transactions whose commit LSN is *below* the confirmed one.
                target = min(acked, self._ret_complete) + 1
            else:
                target = 0
            return max(self._flushed, target)

    def send_status(self) -> None:
        conn = self._conn
        if conn is None:
            return
        if not self._io.acquire(blocking=False):
            self._next_status = 0.0  # read() holds the connection: let it send right away
            return
        try:
            self._send_status(conn.pgconn)
        finally:
            self._io.release()

    def _send_status(self, pgconn: Any) -> None:
        flush = self._flush_target()
        now_us = int((time.time() - _PG_EPOCH_UNIX) * 1_000_000)
        msg = b"r" + _STATUS.pack(max(self._received, flush), flush, flush, now_us, 0)
        try:
            pgconn.put_copy_data(msg)
            pgconn.flush()
        except psycopg.Error as e:
            raise SlotConnectionLost(f"slot {self.slot}: sending standby status failed: {e}") from e
        self._flushed = flush
        self._next_status = time.monotonic() + self.status_interval

    # -- reading

    def read(self, timeout: float, max_changes: int = 1000) -> list[Change]:
        conn = self._conn
        if conn is None:
            raise SlotSourceError("source not started")
        out: list[Change] = []
        with self._io:
            try:
                self._read(conn.pgconn, out, time.monotonic() + timeout, max_changes)
            except psycopg.Error as e:
                raise SlotConnectionLost(f"slot {self.slot}: {e}") from e
            finally:
                self._handed_out(out)
        return out

    def _read(self, pgconn: Any, out: list[Change], deadline: float, max_changes: int) -> None:
        sock = pgconn.socket
        polled = False
        while len(out) < max_changes:
            if time.monotonic() >= self._next_status:
                self._send_status(pgconn)
            n, data = pgconn.get_copy_data(1)
            if n > 0:
                polled = False
                kind = data[0]
                if kind == 0x77:  # 'w' XLogData: start, end, send time, then the pgoutput message
                    self._handle(bytes(data[25:]), out)
                elif kind == 0x6B:  # 'k' keepalive
                    wal_end, _, reply = _KEEPALIVE.unpack_from(data, 1)
                    if not self._in_tx and wal_end > self._safe_end:
                        self._safe_end = wal_end
                    if reply:
                        self._send_status(pgconn)
                continue
            if n == 0:
                if out and not self._in_tx:
                    # Whole transactions are ready and nothing else is buffered: hand them over now
                    # instead of waiting out the timeout (that wait would be pure latency).
                    return
                now = time.monotonic()
                if polled and now >= deadline:
                    return
                wait = max(0.0, min(deadline - now, self._next_status - now))
                select.select([sock], [], [], wait)
                pgconn.consume_input()
                polled = True
                continue
            if n == -1:
                raise SlotConnectionLost(f"slot {self.slot}: server ended the replication stream")
            raise SlotConnectionLost(f"slot {self.slot}: {pgconn.error_message.decode(errors='replace')}")

    def _handed_out(self, out: list[Change]) -> None:
        counts = Counter((c.table, c.op.value) for c in out)
        for (table, op), k in counts.items():
            EVENTS_IN.labels(self.name, table, op).inc(k)
        with self._state:
            if out:
                self._ret_any = max(self._ret_any, out[-1].position.offset)
            self._ret_complete = self._committed
            self._ret_safe_end = self._safe_end

    def _handle(self, buf: bytes, out: list[Change]) -> None:
        kind = buf[0]
        if kind in (0x49, 0x55, 0x44):  # Insert, Update, Delete
            if self._dropping:
                echoes("erp_to_crm", "origin").inc()
                return
            msg = po.decode(buf)
            out.append(self._row_change(msg))  # type: ignore[arg-type]
        elif kind == 0x42:  # Begin
            b: po.Begin = po.decode(buf)  # type: ignore[assignment]
            self._in_tx = True
            self._dropping = False
            self._pos = Position(self.name, b.final_lsn)
            self._commit_ts, self._xid, self._origin = b.commit_ts, b.xid, None
        elif kind == 0x43:  # Commit
            c: po.Commit = po.decode(buf)  # type: ignore[assignment]
            self._in_tx = self._dropping = False
            self._committed = c.lsn
            self._received = max(self._received, c.end_lsn)
            self._safe_end = max(self._safe_end, c.end_lsn)
        elif kind == 0x4F:  # Origin
            o: po.Origin = po.decode(buf)  # type: ignore[assignment]
            self._origin = o.name
            self._dropping = o.name in self.drop_origins
        elif kind == 0x52:  # Relation
            self._add_relation(po.decode(buf))  # type: ignore[arg-type]
        elif kind == 0x59:  # Type
            t: po.Type = po.decode(buf)  # type: ignore[assignment]
            self._type_names[t.oid] = t.name
        elif kind == 0x54:  # Truncate
            tr: po.Truncate = po.decode(buf)  # type: ignore[assignment]
            if not self._dropping:
                for oid in tr.relation_oids:
                    out.append(self._change(self._rel(oid).table, Op.TRUNCATE, (), None, None))
        else:
            po.decode(buf)  # Message: validated, not used

    def _rel(self, oid: int) -> _Rel:
        try:
            return self._rels[oid]
        except KeyError:
            raise SlotSourceError(f"slot {self.slot}: change for relation {oid} before its Relation message") from None

    def _add_relation(self, rel: po.Relation) -> None:
        convs = build_converters([c.type_oid for c in rel.columns], self.zone, self._type_names)
        if rel.replica_identity == "f":
            # Under FULL every column is flagged as identity; the key we want is the primary key.
            try:
                keys = primary_key_columns(self.dsn, rel.oid)
            except psycopg.Error:
                keys = []
            if not keys:
                keys = [c.name for c in rel.columns]
        else:
            keys = [c.name for c in rel.columns if c.is_key]
        self._rels[rel.oid] = _Rel(rel, convs, keys)

    def _change(
        self,
        table: str,
        op: Op,
        key: tuple[Any, ...],
        before: Row | None,
        after: Row | None,
        unchanged: frozenset[str] = frozenset(),
    ) -> Change:
        pos, ts, xid, origin = self._pos, self._commit_ts, self._xid, self._origin
        return Change(self.name, table, op, key, before, after, pos, ts, xid, origin, unchanged)

    def _row_change(self, msg: po.Insert | po.Update | po.Delete) -> Change:
        rel = self._rel(msg.relation_oid)
        if isinstance(msg, po.Insert):
            after, missing = rel.row(msg.new)
            return self._change(rel.table, Op.CREATE, rel.key(after), None, after, _names(missing))
        if isinstance(msg, po.Delete):
            old = rel.key_row(msg.old) if msg.old_kind == "K" else rel.row(msg.old)[0]
            return self._change(rel.table, Op.DELETE, rel.key(old), old, None)
        after, missing = rel.row(msg.new)
        before: Row | None = None
        if msg.old is not None:
            if msg.old_kind == "O":
                before = rel.row(msg.old)[0]
                if missing:
                    # A full old row carries the values the new tuple left out.
                    still = []
                    for col in missing:
                        if col in before:
                            after[col] = before[col]
                        else:
                            still.append(col)
                    missing = still
            else:
                before = rel.key_row(msg.old)
        return self._change(rel.table, Op.UPDATE, rel.key(after, before), before, after, _names(missing))


def _names(missing: list[str] | None) -> frozenset[str]:
    return frozenset(missing) if missing else frozenset()
