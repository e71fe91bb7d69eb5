from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from replicator.change import Change, Op, Position
from replicator.pipeline.coalesce import coalesce


def change(key: int, op: Op, n: int, table: str = "public.t", **after: object) -> Change:
    row = {"id": key, "n": n, **after}
    return Change(
        source="test",
        table=table,
        op=op,
        key=(key,),
        before=row if op is Op.DELETE else None,
        after=None if op is Op.DELETE else row,
        position=Position("s", n),
    )


def test_last_state_wins_and_first_seen_order_is_kept() -> None:
    batch = [change(1, Op.CREATE, 1), change(2, Op.CREATE, 2), change(1, Op.UPDATE, 3)]
    out = coalesce(batch)
    assert [(c.key, c.op, c.position.offset) for c in out] == [((1,), Op.UPDATE, 3), ((2,), Op.CREATE, 2)]


def test_delete_after_update_keeps_the_delete() -> None:
    out = coalesce([change(1, Op.UPDATE, 1), change(1, Op.DELETE, 2)])
    assert [(c.op, c.position.offset) for c in out] == [(Op.DELETE, 2)]


def test_unchanged_toast_is_carried_from_an_earlier_change() -> None:
    first = change(1, Op.UPDATE, 1, notes="big text")
    second = change(1, Op.UPDATE, 2)
    assert second.after is not None
    del second.after["n"]
    second.after["n"] = 2
    second.unchanged = frozenset({"notes"})
    (out,) = coalesce([first, second])
    assert out.after is not None and out.after["notes"] == "big text"
    assert out.unchanged == frozenset()


def test_truncate_drops_earlier_changes_of_that_table_only() -> None:
    trunc = Change("test", "public.t", Op.TRUNCATE, (), None, None, Position("s", 3))
    out = coalesce([change(1, Op.CREATE, 1), change(9, Op.CREATE, 2, table="public.u"), trunc, change(2, Op.CREATE, 4)])
    assert [(c.table, c.op, c.key) for c in out] == [
        ("public.u", Op.CREATE, (9,)),
        ("public.t", Op.TRUNCATE, ()),
        ("public.t", Op.CREATE, (2,)),
    ]


ops = st.sampled_from([Op.CREATE, Op.UPDATE, Op.DELETE])


@given(st.lists(st.tuples(st.integers(0, 5), ops), max_size=60))
def test_properties_one_change_per_key_with_the_latest_state(events: list[tuple[int, Op]]) -> None:
    batch = [change(k, op, i) for i, (k, op) in enumerate(events)]
    out = coalesce(batch)
    keys = [c.key for c in out]
    # one change per key
    assert len(keys) == len(set(keys))
    # each is the key's last change
    last = {c.key: c for c in batch}
    assert all(c is last[c.key] for c in out)
    # keys appear in the order of their first change
    first_seen = list(dict.fromkeys(c.key for c in batch))
    assert keys == first_seen
