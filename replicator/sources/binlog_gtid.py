"""MariaDB GTID positions: `domain-server-seq` per replication domain, as a comma list.

A position names the last transaction applied in each domain; the binlog stream
resumes right after it (`@slave_connect_state`).
"""

from __future__ import annotations

import re
from typing import Any

_GTID = re.compile(r"^(\d+)-(\d+)-(\d+)$")
_FILE_INDEX = re.compile(r"(\d+)$")


class GtidError(ValueError):
    pass


def parse_position(text: str) -> dict[int, tuple[int, int]]:
    """'0-1-42,1-7-3' -> {0: (1, 42), 1: (7, 3)} (domain -> (server id, sequence))."""
    out: dict[int, tuple[int, int]] = {}
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        found = _GTID.match(part)
        if not found:
            raise GtidError(f"not a MariaDB GTID: {part!r} (expected domain-server-sequence, e.g. 0-1-42)")
        domain, server, seq = (int(g) for g in found.groups())
        out[domain] = (server, seq)
    return out


def format_position(state: dict[int, tuple[int, int]]) -> str:
    return ",".join(f"{d}-{s}-{n}" for d, (s, n) in sorted(state.items()))


def advance(state: dict[int, tuple[int, int]], gtid: str) -> dict[int, tuple[int, int]]:
    """The position after transaction `gtid` (a new dict)."""
    new = dict(state)
    new.update(parse_position(gtid))
    return new


def offset(log_file: str, log_pos: int) -> int:
    """A monotonic integer for a binlog coordinate: file index in the high bits, byte position low."""
    found = _FILE_INDEX.search(log_file or "")
    index = int(found.group(1)) if found else 0
    return (index << 32) | (log_pos & 0xFFFFFFFF)


def purged_domains(position: str, oldest_gtid_list: str) -> list[str]:
    """Domains whose transactions after `position` are no longer in the binary logs.

    `oldest_gtid_list` is the Gtid_list at the start of the oldest binlog file: every
    transaction up to it was purged, so a position behind it cannot be resumed from.
    """
    mine = parse_position(position)
    gone = parse_position(oldest_gtid_list)
    lost = []
    for domain, (_, seq) in gone.items():
        have = mine.get(domain)
        if have is None or have[1] < seq:
            lost.append(f"{domain}-{gone[domain][0]}-{seq}")
    return lost


def oldest_gtid_list(cursor: Any) -> str:
    """The Gtid_list event's content at the start of the server's oldest binlog file ('' if none)."""
    cursor.execute("SHOW BINARY LOGS")
    logs = cursor.fetchall()
    if not logs:
        return ""
    first = logs[0][0] if isinstance(logs[0], tuple | list) else logs[0]["Log_name"]
    cursor.execute("SHOW BINLOG EVENTS IN %s LIMIT 4", (first,))
    for row in cursor.fetchall():
        kind, info = (row[2], row[5]) if isinstance(row, tuple | list) else (row["Event_type"], row["Info"])
        if kind == "Gtid_list":
            return str(info).strip().lstrip("[").rstrip("]")
    return ""
