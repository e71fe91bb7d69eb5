"""Folding several changes of one key inside a batch into the last state."""

from __future__ import annotations

from collections.abc import Iterable

from replicator.change import Change, Op


def coalesce(changes: Iterable[Change]) -> list[Change]:
    """Last state wins per (table, key); keys keep the order of their first change.

    First-seen order (not last-seen) keeps a parent created before its child ahead
    of that child even when the parent changes again later in the batch. A later
    change whose unchanged-TOAST columns an earlier change of the batch carried
    gets those values back, so folding never loses data. A TRUNCATE of a table
    drops that table's earlier changes in the batch and stays in place.
    """
    slots: dict[tuple[str, tuple[object, ...]], int] = {}
    out: list[Change | None] = []
    for change in changes:
        if change.op is Op.TRUNCATE:
            for slot_key in [k for k in slots if k[0] == change.table]:
                out[slots.pop(slot_key)] = None
            out.append(change)
            continue
        slot_key = (change.table, change.key)
        index = slots.get(slot_key)
        if index is None:
            slots[slot_key] = len(out)
            out.append(change)
            continue
        earlier = out[index]
        assert earlier is not None
        if change.unchanged and earlier.after is not None and change.after is not None:
            carried = {c: earlier.after[c] for c in change.unchanged if c in earlier.after}
            if carried:
                change.after = {**change.after, **carried}
                change.unchanged = change.unchanged - carried.keys()
        out[index] = change
    return [c for c in out if c is not None]
