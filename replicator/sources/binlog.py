"""MariaDB source: row events read straight from the binary log (ROW format, full row
images and metadata), positioned by GTID, no Kafka in between.

A transaction runs from its GTID event to its XID (or COMMIT, or the single statement
of a DDL); its changes are held until then and handed out whole, all carrying the
commit's binlog coordinate as their offset. `ack` moves the acknowledged GTID position
only past transactions whose every change was handed out and acknowledged; the service
stores that position as the checkpoint, and a restart resumes right after it
(at-least-once: what was applied but not yet checkpointed comes again and is deduplicated).
"""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import pymysql
import structlog
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.event import HeartbeatLogEvent, MariadbGtidEvent, QueryEvent, RotateEvent, XidEvent
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from replicator.change import Change, Op, Position, Row
from replicator.mapping.catalog import TableInfo
from replicator.mapping.mysql_conn import connect, parse_dsn
from replicator.mapping.mysql_values import Converter, convert_row, converters
from replicator.ops.metrics import EVENTS_IN
from replicator.sources import binlog_gtid as gtids

if TYPE_CHECKING:
    from replicator.app import Parts
    from replicator.sources.open import OpenedSource

log = structlog.get_logger()

__all__ = ["BinlogConnectionLost", "BinlogSource", "BinlogSourceError", "open_binlog_source"]

_STANDALONE = 0x01  # GTID event flag: a DDL statement, its own transaction
_ER_MASTER_FATAL_READING_BINLOG = 1236
_TRUNCATE = re.compile(r"^\s*TRUNCATE\s+(?:TABLE\s+)?((?:`[^`]+`|\w+)(?:\s*\.\s*(?:`[^`]+`|\w+))?)", re.IGNORECASE)
_DDL = re.compile(r"^\s*(ALTER|DROP|RENAME|CREATE)\s+TABLE\b", re.IGNORECASE)
_EVENTS = [
    MariadbGtidEvent,
    XidEvent,
    QueryEvent,
    WriteRowsEvent,
    UpdateRowsEvent,
    DeleteRowsEvent,
    HeartbeatLogEvent,
    RotateEvent,
]


class BinlogSourceError(RuntimeError):
    """The server cannot serve the stream as configured; the message says what to change."""


class BinlogConnectionLost(RuntimeError):
    """The stream connection dropped; the runner reconnects from the acknowledged position."""


def truncated_table(query: str, schema: str) -> str | None:
    """`db.table` a TRUNCATE statement empties (unqualified names are in the statement's database)."""
    found = _TRUNCATE.match(query)
    if not found:
        return None
    parts = [p.strip().strip("`") for p in found.group(1).split(".")]
    return ".".join(parts) if len(parts) == 2 else f"{schema}.{parts[0]}"


class _Table:
    __slots__ = ("convs", "key")

    def __init__(self, info: TableInfo, zone: ZoneInfo) -> None:
        self.key = info.primary_key or info.columns
        self.convs: dict[str, Converter] = converters(info.types, zone)


class BinlogSource:
    def __init__(
        self,
        dsn: str,
        *,
        server_id: int,
        start_position: str,
        catalog: Mapping[str, TableInfo],
        name: str = "binlog",
        timezone: str = "UTC",
        heartbeat_s: float = 0.2,
        timeout_s: float = 15.0,
    ) -> None:
        self.dsn = dsn
        self.server_id = server_id
        self.name = name
        self.zone = ZoneInfo(timezone)
        self.heartbeat_s = heartbeat_s
        self.timeout_s = timeout_s
        self._tables = {qualified: _Table(info, self.zone) for qualified, info in catalog.items()}
        gtids.parse_position(start_position)  # a bad checkpoint fails here, not in the server
        self._acked_position = start_position
        self._stream: BinLogStreamReader | None = None
        self._state = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._position = gtids.parse_position(self._acked_position)
        self._tx: list[Change] | None = None  # changes of the open transaction
        self._tx_gtid = ""
        self._tx_standalone = False
        self._tx_ts: datetime | None = None
        self._committed = 0
        self._pending: deque[tuple[int, str]] = deque()  # (offset, GTID position after it), handed out
        self._acked = 0

    # -- lifecycle

    def start(self) -> None:
        if self._stream is not None:
            raise BinlogSourceError("source already started")
        self._check_server()
        with self._state:
            self._reset()
        settings = {**parse_dsn(self.dsn), "read_timeout": int(self.timeout_s), "connect_timeout": 10}
        settings.pop("database", None)
        streams = 0

        def guarded_connect(**kwargs: Any) -> Any:
            # The library silently reconnects a dropped stream from its *first* position; we
            # would rather hand the failure to the runner, which resumes from the acknowledged one.
            nonlocal streams
            if "db" in kwargs:  # the library still spells PyMySQL's old argument names
                kwargs["database"] = kwargs.pop("db")
            if "passwd" in kwargs:
                kwargs["password"] = kwargs.pop("passwd")
            if kwargs.get("database") != "information_schema":
                streams += 1
                if streams > 1:
                    raise BinlogConnectionLost(f"{self.name}: binlog connection lost")
            return pymysql.connect(**kwargs)

        self._stream = BinLogStreamReader(
            connection_settings=settings,
            server_id=self.server_id,
            is_mariadb=True,
            auto_position=self._acked_position,
            blocking=True,
            resume_stream=True,
            only_events=_EVENTS,
            only_schemas=sorted({t.split(".", 1)[0] for t in self._tables}) or None,
            only_tables=sorted({t.split(".", 1)[1] for t in self._tables}) or None,
            slave_heartbeat=self.heartbeat_s,
            pymysql_wrapper=guarded_connect,
            enable_logging=False,
        )

    def _check_server(self) -> None:
        conn = connect(self.dsn)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT @@log_bin, @@binlog_format, @@binlog_row_image, @@binlog_row_metadata")
                row = cur.fetchone()
        finally:
            conn.close()
        log_bin, fmt, image, metadata = row if row else (0, "", "", "")
        wrong = []
        if not int(log_bin):
            wrong.append("log_bin is off (set log_bin)")
        if str(fmt).upper() != "ROW":
            wrong.append(f"binlog_format={fmt} (needs ROW)")
        if str(image).upper() != "FULL":
            wrong.append(f"binlog_row_image={image} (needs FULL)")
        if str(metadata).upper() != "FULL":
            wrong.append(f"binlog_row_metadata={metadata} (needs FULL: column names travel in the binlog)")
        if wrong:
            raise BinlogSourceError(f"{self.name}: the server's binary log cannot be replicated: {'; '.join(wrong)}")

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            # Closing anyway; the checkpoint is in the state store.
            with contextlib.suppress(Exception):
                stream.close()

    # -- acknowledgement

    @property
    def committed(self) -> int:
        """Offset of the last transaction all of whose changes read() has returned."""
        with self._state:
            return self._committed

    @property
    def acked_position(self) -> str:
        """The GTID position up to which every transaction was acknowledged: the checkpoint."""
        with self._state:
            return self._acked_position

    def ack(self, position: Position) -> None:
        with self._state:
            if position.offset <= self._acked:
                return
            self._acked = position.offset
            while self._pending and self._pending[0][0] <= position.offset:
                _, self._acked_position = self._pending.popleft()

    def send_status(self) -> None:
        """Nothing to report: a binlog client keeps no position on the server."""

    # -- reading

    def read(self, timeout: float, max_changes: int = 1000) -> list[Change]:
        stream = self._stream
        if stream is None:
            raise BinlogSourceError("source not started")
        out: list[Change] = []
        deadline = time.monotonic() + timeout
        try:
            while len(out) < max_changes or self._tx is not None:
                event = stream.fetchone()
                if event is None:
                    raise BinlogConnectionLost(f"{self.name}: the server ended the binlog stream")
                if isinstance(event, HeartbeatLogEvent):
                    # The server is idle: whatever is whole goes out now.
                    if out or time.monotonic() >= deadline:
                        break
                    continue
                self._handle(event, stream, out)
                if self._tx is None and time.monotonic() >= deadline:
                    break
        except pymysql.err.OperationalError as exc:
            code = exc.args[0] if exc.args else 0
            if code == _ER_MASTER_FATAL_READING_BINLOG:
                raise BinlogSourceError(
                    f"{self.name}: the server cannot stream from GTID position {self._acked_position!r}: "
                    f"{exc.args[-1]}. If those binary logs were purged, the changes in them are lost to the "
                    f"stream: delete the checkpoint (DELETE FROM replicator.checkpoints WHERE stream = "
                    f"'{self.name}'), restart, then run `replicator backfill --restart` to resync every record"
                ) from exc
            raise BinlogConnectionLost(f"{self.name}: {exc}") from exc
        finally:
            self._count(out)
        return out

    def _count(self, out: Iterable[Change]) -> None:
        for (table, op), k in Counter((c.table, c.op.value) for c in out).items():
            EVENTS_IN.labels(self.name, table, op).inc(k)

    def _handle(self, event: Any, stream: BinLogStreamReader, out: list[Change]) -> None:
        if isinstance(event, MariadbGtidEvent):
            self._tx = []
            self._tx_gtid = event.gtid
            self._tx_standalone = bool(event.flags & _STANDALONE)
            self._tx_ts = datetime.fromtimestamp(event.timestamp, UTC)
        elif isinstance(event, WriteRowsEvent | UpdateRowsEvent | DeleteRowsEvent):
            self._rows(event)
        elif isinstance(event, XidEvent):
            self._commit(stream, out)
        elif isinstance(event, QueryEvent):
            query = event.query if isinstance(event.query, str) else event.query.decode(errors="replace")
            if query.strip().upper() in ("COMMIT", "ROLLBACK"):
                self._commit(stream, out)
            elif self._tx is not None and query.strip().upper() != "BEGIN":
                self._statement(query, _text(event.schema))
                if self._tx_standalone:
                    self._commit(stream, out)

    def _statement(self, query: str, schema: str) -> None:
        assert self._tx is not None
        table = truncated_table(query, schema)
        if table is not None and table in self._tables:
            self._tx.append(self._change(table, Op.TRUNCATE, (), None, None))
        elif _DDL.match(query):
            log.warning(
                "DDL in the ERP; restart the replicator if it changed a mapped table", source=self.name, query=query
            )

    def _rows(self, event: Any) -> None:
        if self._tx is None:
            return  # a row event outside a transaction cannot be positioned: never sent by MariaDB
        table = f"{event.schema}.{event.table}"
        info = self._tables.get(table)
        if info is None:
            return
        for row in event.rows:
            if isinstance(event, WriteRowsEvent):
                after = convert_row(dict(row["values"]), info.convs)
                self._tx.append(self._change(table, Op.CREATE, _key(after, info.key), None, after))
            elif isinstance(event, DeleteRowsEvent):
                before = convert_row(dict(row["values"]), info.convs)
                self._tx.append(self._change(table, Op.DELETE, _key(before, info.key), before, None))
            else:
                before = convert_row(dict(row["before_values"]), info.convs)
                after = convert_row(dict(row["after_values"]), info.convs)
                self._tx.append(self._change(table, Op.UPDATE, _key(after, info.key), before, after))

    def _change(self, table: str, op: Op, key: tuple[Any, ...], before: Row | None, after: Row | None) -> Change:
        # The position is set at commit, when the transaction's coordinate is known.
        return Change(self.name, table, op, key, before, after, Position(self.name, 0), self._tx_ts)

    def _commit(self, stream: BinLogStreamReader, out: list[Change]) -> None:
        changes, self._tx = self._tx, None
        if changes is None:
            return
        offset = gtids.offset(stream.log_file, stream.log_pos)
        self._position = gtids.advance(self._position, self._tx_gtid)
        position = Position(self.name, offset)
        seq = int(self._tx_gtid.rsplit("-", 1)[1])
        for change in changes:
            change.position = position
            change.txid = seq
        out.extend(changes)
        with self._state:
            self._pending.append((offset, gtids.format_position(self._position)))
            self._committed = offset


def _key(row: Row, columns: Iterable[str]) -> tuple[Any, ...]:
    return tuple(row.get(c) for c in columns)


def _text(value: str | bytes | None) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value or ""


def current_position(dsn: str) -> str:
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT @@gtid_binlog_pos")
            row = cur.fetchone()
    finally:
        conn.close()
    return str(row[0]) if row and row[0] else ""


def check_resumable(dsn: str, position: str) -> list[str]:
    """GTIDs purged from the server's binlogs that a stream from `position` would need ([] if none)."""
    conn = connect(dsn)
    try:
        with conn.cursor() as cur:
            oldest = gtids.oldest_gtid_list(cur)
    finally:
        conn.close()
    return gtids.purged_domains(position, oldest) if oldest else []


def open_binlog_source(parts: Parts) -> OpenedSource:
    """Resumes from the checkpoint; without one, starts at the server's current GTID position and
    checkpoints it at once, so changes made while the initial backfill runs are streamed after it."""
    from replicator.app import StartupError, load_catalog
    from replicator.config.model import BinlogSourceConfig
    from replicator.sources.open import OpenedSource

    cfg = parts.config
    src = cfg.source
    assert isinstance(src, BinlogSourceConfig)
    dsn = cfg.erp.dsn.get_secret_value()
    store = parts.store
    saved = {c["stream"]: c for c in store.checkpoints()}.get(src.name)
    try:
        if saved is None:
            start = current_position(dsn)
            store.save_checkpoint(src.name, start, 0)
        else:
            start = str(saved["position"])
        lost = check_resumable(dsn, start)
    except pymysql.err.MySQLError as exc:
        raise StartupError(f"cannot read the ERP's binary log position (erp.dsn): {exc}") from None
    if lost:
        raise StartupError(
            f"checkpoint {src.name!r} is at GTID {start!r}, but the server purged binary logs past it "
            f"(up to {', '.join(lost)}): those changes are lost to the stream. Delete the checkpoint "
            f"(DELETE FROM replicator.checkpoints WHERE stream = '{src.name}'), then run `replicator run` "
            "and `replicator backfill --restart`; keep binlogs longer (binlog_expire_logs_seconds) from now on"
        )
    try:
        source = BinlogSource(
            dsn,
            server_id=src.server_id,
            start_position=start,
            catalog=load_catalog(cfg),
            name=src.name,
            timezone=cfg.erp.timezone,
        )
    except gtids.GtidError as exc:
        raise StartupError(f"checkpoint {src.name!r}: {exc}") from None

    def checkpoint(position: Position) -> None:
        store.save_checkpoint(position.stream, source.acked_position, position.offset)

    return OpenedSource(source, f"binlog from GTID {start or '(start)'}", on_ack=checkpoint)
