"""The envelope's ``source`` block: table name, commit time and transaction id/position."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

from replicator.sources.debezium.errors import ENVELOPE_HINT, FieldFailure

_EPOCH_UTC = datetime(1970, 1, 1, tzinfo=UTC)


def table_of(source: dict[str, Any]) -> str:
    # PostgreSQL and SQL Server name schema + table; MySQL/MariaDB have no schemas, the
    # database plays that part (postgresql/sqlserver/mysql.adoc, "source" field).
    connector = source.get("connector")
    table = source.get("table")
    if connector in ("mysql", "mariadb"):
        ns, ns_field = source.get("db"), "source.db"
    elif connector in ("postgresql", "sqlserver"):
        ns, ns_field = source.get("schema"), "source.schema"
    else:
        ns = source.get("schema") or source.get("db")
        ns_field = "source.schema"
    if not table or type(table) is not str:
        raise FieldFailure("source.table", f"expected the table name, got {table!r}", ENVELOPE_HINT)
    if not ns or type(ns) is not str:
        raise FieldFailure(ns_field, f"expected the schema/database name, got {ns!r}", ENVELOPE_HINT)
    return f"{ns}.{table}"


def _as_int(v: Any) -> int | None:
    if type(v) is int:
        return v
    if type(v) is str and v.isdigit():  # some examples carry numbers as strings
        return int(v)
    return None


def commit_ts_of(source: dict[str, Any]) -> datetime | None:
    # source.ts_ms is when the change was made in the database; Debezium 2.6+ adds ts_us.
    # MySQL snapshot reads carry ts_ms 0 (mysql.adoc create-event example): unknown, not 1970.
    us = _as_int(source.get("ts_us"))
    if not us:
        ms = _as_int(source.get("ts_ms"))
        if not ms:
            return None
        us = ms * 1000
    try:
        return _EPOCH_UTC + timedelta(microseconds=us)
    except OverflowError:
        return None


def txid_of(source: dict[str, Any], tx: dict[str, Any] | None) -> int | None:
    connector = source.get("connector")
    if connector == "sqlserver":
        # commit_lsn 'VLF:block:slot' in hex ("00000027:00000758:0005"): the three parts
        # concatenated are the LSN as one 80-bit number, shared by the whole transaction.
        lsn = source.get("commit_lsn")
        if type(lsn) is str:
            try:
                return int(lsn.replace(":", ""), 16)
            except ValueError:
                return None
        return None
    if connector in ("mysql", "mariadb"):
        # GTID 'server_uuid:N' (MySQL) or 'domain-server-N' (MariaDB): N numbers the
        # transaction on its server (the server part is dropped: Change.txid is an int).
        gtid = source.get("gtid")
        if type(gtid) is str and gtid:
            tail = gtid.rsplit(":", 1)[-1].rsplit("-", 1)[-1]
            if tail.isdigit():
                return int(tail)
        # Without GTIDs, source.pos is the position of each row event, not the transaction,
        # so it cannot group a transaction; the transaction block's id can
        # ("file=mysql-bin.000002,pos=1913", mysql.adoc "Transaction metadata").
        tx_id = tx.get("id") if tx else None
        if type(tx_id) is str:
            m = re.fullmatch(r"file=.*?\.(\d+),pos=(\d+)", tx_id)
            if m:
                return (int(m.group(1)) << 32) | int(m.group(2))
        return None
    return _as_int(source.get("txId"))  # PostgreSQL (and others naming it txId)
