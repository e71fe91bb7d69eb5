"""ERP writer: applies CRM-originated row changes to the ERP database (PostgreSQL, MariaDB).

`model` holds the request/answer types, `sql` renders statements with sqlglot, `fit`
coerces values to column types (or rejects them), `writer` runs one transaction per
write over a database `Driver` (`postgres`, `mysql`), and `open_writer` connects one.
A writer holds one connection: use it from one thread at a time.
"""

from replicator.sinks.erp.model import ChildWrite, ErpWriter, RowWrite, WriteOutcome, WriteRejected
from replicator.sinks.erp.open import open_writer
from replicator.sinks.erp.postgres import OriginInUse

__all__ = ["ChildWrite", "ErpWriter", "OriginInUse", "RowWrite", "WriteOutcome", "WriteRejected", "open_writer"]
