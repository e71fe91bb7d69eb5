"""A backfill page re-read after its write: rows the service changed or deleted meanwhile go again."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from replicator.change import Op
from replicator.jobs.backfill import _moved_since_read


class Reader:
    def __init__(self, now: dict[tuple[Any, ...], dict[str, Any]]) -> None:
        self.now = now
        self.asked: list[list[tuple[Any, ...]]] = []

    def rows_by_key(
        self, table: str, key: list[str], keys: list[tuple[Any, ...]], *, types: Any = None
    ) -> dict[tuple[Any, ...], dict[str, Any]]:
        self.asked.append(keys)
        return {k: self.now[k] for k in keys if k in self.now}


ENTITY: Any = SimpleNamespace(table="public.contacts", key=["id"], key_types=None, key_of=lambda row: (row["id"],))


def test_only_rows_that_moved_are_sent_again_with_their_current_state() -> None:
    page = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]
    reader = Reader({(1,): {"id": 1, "name": "a"}, (2,): {"id": 2, "name": "B, renamed by the service"}})
    moved = _moved_since_read(reader, ENTITY, page, "backfill:contacts", 100)
    assert reader.asked == [[(1,), (2,), (3,)]]  # one query for the page
    assert [(c.key, c.op, c.after) for c in moved] == [
        ((2,), Op.READ, {"id": 2, "name": "B, renamed by the service"}),
        ((3,), Op.DELETE, None),  # deleted by the service: the backfill's copy must not revive it
    ]
    assert moved[1].before == {"id": 3, "name": "c"}
    assert [c.position.offset for c in moved] == [101, 102]


def test_an_untouched_page_costs_one_read_and_nothing_else() -> None:
    page = [{"id": 7, "name": "x"}]
    assert _moved_since_read(Reader({(7,): {"id": 7, "name": "x"}}), ENTITY, page, "backfill:contacts", 0) == []


def test_the_report_counts_rows_read_once_and_every_outcome_of_the_rows_sent_again() -> None:
    from replicator.jobs.backfill import _backfill
    from replicator.pipeline.processor import BatchReport

    page = [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}, {"id": 3, "name": "c"}]

    class PageReader(Reader):
        def count(self, table: str) -> int:
            return len(page)

        def scan(self, table: str, key: list[str], *, page_size: int, after: Any) -> Any:
            yield list(page)

    class Store:
        def checkpoints(self) -> list[dict[str, Any]]:
            return []

        def save_checkpoint(self, stream: str, position: str, offset: int) -> None:
            pass

    class Processor:
        store, reader = Store(), PageReader({(1,): page[0], (2,): {"id": 2, "name": "B"}})  # 3 deleted meanwhile

        def process(self, changes: list[Any]) -> BatchReport:
            return BatchReport(changes=len(changes), applied=len(changes), created=1, errors=[f"{len(changes)}"])

    entity: Any = SimpleNamespace(**vars(ENTITY), rank=0, name="contacts")
    [result] = _backfill(Processor(), [entity], page_size=10, restart=False, progress=None)  # type: ignore[arg-type]
    report = result.report
    assert (report.changes, report.applied, report.created, report.errors) == (3, 5, 2, ["3", "2"])
