"""Deciding one field of a two-way record: which side changed, and who wins.

Both directions use this. `base` is the value both sides last agreed on (kept in
sync_state.last_record); a side whose value differs from it changed since the
last sync. Only a field both sides changed to different values is a conflict.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any

from replicator.config.model import ConflictPolicy


class Take(StrEnum):
    NOTHING = "nothing"  # the sides agree, or nothing may be written
    ERP = "erp"  # the ERP's value goes to the CRM
    CRM = "crm"  # the CRM's value goes to the ERP
    PARK = "park"  # a person decides (`replicator conflicts resolve`)


@dataclass(frozen=True, slots=True)
class Decision:
    take: Take
    conflict: bool = False  # both sides changed the field to different values

    @property
    def winner(self) -> str:
        return {Take.ERP: "erp", Take.CRM: "crm", Take.PARK: "parked"}.get(self.take, "none")


def _empty(value: Any) -> bool:
    # Blank text is empty too: text is compared without its outer spaces (below), so " " must
    # match null exactly as it matches "", or "same" would not be transitive.
    return value is None or (isinstance(value, str) and not value.strip())


def same(a: Any, b: Any) -> bool:
    """Equal as a CRM would echo them back: 12.30 and "12.3", "" and null, True and "true"."""
    if _empty(a) or _empty(b):
        return _empty(a) and _empty(b)
    if isinstance(a, bool) or isinstance(b, bool):
        return str(a).lower() == str(b).lower()
    if isinstance(a, (int, float, Decimal)) or isinstance(b, (int, float, Decimal)):
        try:
            return Decimal(str(a)) == Decimal(str(b))
        except (InvalidOperation, ValueError):
            return False
    if _is_day(a) or _is_day(b):
        # A date written to a CRM datetime field comes back as midnight UTC (HubSpot's closedate).
        day_a, day_b = _day(a), _day(b)
        if day_a is not None and day_a == day_b:
            return True
    if isinstance(a, str) and isinstance(b, str):
        if a == b:
            return True
        try:
            return Decimal(a) == Decimal(b)
        except (InvalidOperation, ValueError):
            return a.strip() == b.strip()
    return bool(a == b)


def _is_day(value: Any) -> bool:
    return (isinstance(value, date) and not isinstance(value, datetime)) or (
        isinstance(value, str) and len(value) == 10 and value[4:5] == "-" and value[7:8] == "-"
    )


def _day(value: Any) -> date | None:
    """The calendar day a date, a date string or a midnight-UTC instant stands for."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo is not None else value.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
        return moment.date() if moment.time() == time(0) else None
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value) if len(value) == 10 else _day(datetime.fromisoformat(value))
        except ValueError:
            return None
    return None


def instant(value: Any) -> datetime | None:
    """A modification time as an aware datetime (ISO text from a CRM, or a value from the ERP);
    a naive one is taken as UTC, anything else is unknown (None)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def decide(
    policy: ConflictPolicy,
    *,
    base_known: bool,
    base: Any,
    erp: Any,
    crm: Any,
    erp_ts: datetime | None = None,
    crm_ts: datetime | None = None,
) -> Decision:
    """What to do with one field. Without a base (never synced both ways) a difference
    counts as a change on both sides, so the policy decides."""
    if same(erp, crm):
        return Decision(Take.NOTHING)
    crm_changed = not base_known or not same(crm, base)
    erp_changed = not base_known or not same(erp, base)
    if crm_changed and not erp_changed:
        take = Take.CRM
    elif erp_changed and not crm_changed:
        take = Take.ERP
    else:
        return Decision(_resolve(policy, erp, crm, erp_ts, crm_ts), conflict=True)
    if policy == "never_overwrite_with_null":
        incoming, current = (crm, erp) if take is Take.CRM else (erp, crm)
        if _empty(incoming) and not _empty(current):
            return Decision(Take.NOTHING)  # a side emptying the field does not empty the other side
    return Decision(take)


def _resolve(policy: ConflictPolicy, erp: Any, crm: Any, erp_ts: datetime | None, crm_ts: datetime | None) -> Take:
    if policy == "erp_wins":
        return Take.ERP
    if policy == "crm_wins":
        return Take.CRM
    if policy == "manual":
        return Take.PARK
    if policy == "never_overwrite_with_null":
        if _empty(crm):
            return Take.ERP
        if _empty(erp):
            return Take.CRM
        return _latest(erp_ts, crm_ts)
    return _latest(erp_ts, crm_ts)  # latest_wins


def _latest(erp_ts: datetime | None, crm_ts: datetime | None) -> Take:
    """The later modification wins; a tie or an unknown time keeps the ERP's value
    (the system of record), never a guess."""
    if erp_ts is None or crm_ts is None:
        return Take.ERP
    return Take.CRM if crm_ts > erp_ts else Take.ERP
