"""The write flow shared by every ERP database: one transaction per `RowWrite`.

A `Driver` knows one database (connection, transactions, which errors mean what);
`SqlWriter` does the rest: fitting values, adopting existing rows, inserting
children, counting outcomes, retrying once after a dropped connection.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from replicator.mapping.catalog import TableInfo
from replicator.ops.metrics import ERP_WRITE_SECONDS, ERP_WRITES
from replicator.sinks.erp.fit import FitDialect, fit_write
from replicator.sinks.erp.model import ChildWrite, RowWrite, WriteOutcome, WriteRejected
from replicator.sinks.erp.sql import Statement, render, render_insert, render_select_by


class Driver(Protocol):
    dialect: FitDialect
    update_returning: bool  # False: UPDATE has no RETURNING, the row is re-read by key

    def begin(self) -> None: ...

    def execute(self, statement: Statement, table: str) -> tuple[int, list[dict[str, Any]]]:
        """(rows affected or returned, returned rows as column -> value)."""
        ...

    def commit(self) -> None: ...

    def rollback(self) -> None:
        """Best effort: never raises (a dropped connection has nothing to roll back)."""
        ...

    def reconnect(self) -> None: ...

    def connection_lost(self, error: BaseException) -> bool: ...

    def unique_violation(self, error: BaseException) -> bool: ...

    def rejection(self, error: BaseException, table: str) -> WriteRejected | None:
        """The error as WriteRejected when the data was at fault (constraint violation, bad value)."""
        ...

    def close(self) -> None: ...


def _ordered(*groups: Iterable[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(c for group in groups for c in group))


def _project(row: Mapping[str, Any], columns: Iterable[str]) -> dict[str, Any]:
    return {c: row.get(c) for c in columns}


class SqlWriter:
    def __init__(self, driver: Driver, catalog: Mapping[str, TableInfo], *, timezone: str = "UTC") -> None:
        self.driver = driver
        self.dialect: str = driver.dialect
        self.catalog = dict(catalog)
        self.zone = ZoneInfo(timezone)
        self._table = ""  # the table of the statement being run, for errors
        self._committing = False

    def write(self, w: RowWrite) -> WriteOutcome:
        started = time.monotonic()
        try:
            fitted = fit_write(w, self.catalog, self.driver.dialect, self.zone)
            outcome = self._run(fitted)
        except WriteRejected:
            ERP_WRITES.labels(w.table, w.action, "rejected").inc()
            raise
        finally:
            ERP_WRITE_SECONDS.labels(w.table).observe(time.monotonic() - started)
        result = "adopted" if outcome.adopted else "missing" if outcome.row is None else "ok"
        ERP_WRITES.labels(w.table, w.action, result).inc()
        return outcome

    def close(self) -> None:
        self.driver.close()

    # -- one transaction, retried once when the connection was gone before COMMIT

    def _run(self, w: RowWrite) -> WriteOutcome:
        for attempt in (1, 2):
            self._committing = False
            try:
                self.driver.begin()
                outcome = self._apply(w)
                self._committing = True
                self.driver.commit()
                return outcome
            except Exception as e:
                self.driver.rollback()
                # A connection lost during COMMIT leaves the outcome unknown: that is for the caller to resolve.
                if attempt == 1 and not self._committing and self.driver.connection_lost(e):
                    self.driver.reconnect()
                    continue
                if isinstance(e, WriteRejected):
                    raise
                rejected = self.driver.rejection(e, self._table or w.table)
                if rejected is not None:
                    raise rejected from e
                raise
        raise AssertionError("unreachable")

    def _execute(self, statement: Statement, table: str) -> tuple[int, list[dict[str, Any]]]:
        self._table = table
        return self.driver.execute(statement, table)

    def _apply(self, w: RowWrite) -> WriteOutcome:
        if w.action == "insert":
            return self._insert(w)
        if w.action == "update":
            return self._update(w)
        return self._delete(w)

    def _select_one(self, table: str, columns: Iterable[str], where: Mapping[str, Any]) -> dict[str, Any] | None:
        _, rows = self._execute(render_select_by(table, columns, where, self.driver.dialect, limit=2), table)
        if len(rows) > 1:
            raise WriteRejected(
                f"adopt_by {dict(where)!r} matches more than one row; fix: adopt by a unique column (e.g. crm_ref)",
                table=table,
            )
        return rows[0] if rows else None

    def _insert(self, w: RowWrite) -> WriteOutcome:
        needed = _ordered(w.returning, (p for child in w.children for p in child.link.values()))
        if w.adopt_by is not None:
            lookup = needed or tuple(w.adopt_by)
            found = self._select_one(w.table, lookup, w.adopt_by)
            if found is not None:
                return WriteOutcome(row=_project(found, w.returning), adopted=True)
            try:
                _, rows = self._execute(render_insert(w.table, w.values, w.audit, needed, self.driver.dialect), w.table)
            except Exception as e:
                if not self.driver.unique_violation(e):
                    raise
                # Someone inserted the same row since our look-up: theirs is committed now, adopt it.
                self.driver.rollback()
                self.driver.begin()
                found = self._select_one(w.table, lookup, w.adopt_by)
                if found is None:
                    raise
                return WriteOutcome(row=_project(found, w.returning), adopted=True)
        else:
            _, rows = self._execute(render_insert(w.table, w.values, w.audit, needed, self.driver.dialect), w.table)
        written = rows[0] if rows else {}
        for child in w.children:
            self._insert_child(child, written)
        return WriteOutcome(row=_project(written, w.returning), inserted=True)

    def _insert_child(self, child: ChildWrite, parent: Mapping[str, Any]) -> None:
        linked = {column: parent[source] for column, source in child.link.items()}
        self._insert(replace(child.write, values={**child.write.values, **linked}))

    def _single(self, w: RowWrite, count: int) -> None:
        if count > 1:
            raise WriteRejected(
                f"{w.action} by key {w.key!r} matched {count} rows; nothing was written; "
                "fix: identify rows by a unique key (the primary key)",
                table=w.table,
            )

    def _update(self, w: RowWrite) -> WriteOutcome:
        count, rows = self._execute(render(w, self.driver.dialect), w.table)
        if count == 0:
            return WriteOutcome(row=None)
        self._single(w, count)
        if not w.returning:
            return WriteOutcome(row={})
        if self.driver.update_returning:
            return WriteOutcome(row=_project(rows[0], w.returning))
        # Same transaction: we read our own write, under the key it has now.
        moved = {k: w.values.get(k, v) for k, v in w.key.items()}
        found = self._select_one(w.table, w.returning, moved)
        return WriteOutcome(row=None if found is None else _project(found, w.returning))

    def _delete(self, w: RowWrite) -> WriteOutcome:
        count, rows = self._execute(render(w, self.driver.dialect), w.table)
        if count == 0:
            return WriteOutcome(row=None)
        self._single(w, count)
        return WriteOutcome(row=_project(rows[0], w.returning) if rows else {})
