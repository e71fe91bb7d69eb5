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
