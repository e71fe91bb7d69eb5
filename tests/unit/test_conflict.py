"""Per-field decisions of two-way sync: who changed, and who wins a conflict."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.mapping.conflict import Take, decide, same

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
POLICIES = ["erp_wins", "crm_wins", "latest_wins", "never_overwrite_with_null", "manual"]


@pytest.mark.parametrize("policy", POLICIES)
def test_one_side_changed_is_no_conflict_under_every_policy(policy: str) -> None:
    crm_only = decide(policy, base_known=True, base="a", erp="a", crm="b")  # type: ignore[arg-type]
    assert (crm_only.take, crm_only.conflict) == (Take.CRM, False)
    erp_only = decide(policy, base_known=True, base="a", erp="b", crm="a")  # type: ignore[arg-type]
    assert (erp_only.take, erp_only.conflict) == (Take.ERP, False)


@pytest.mark.parametrize("policy", POLICIES)
def test_agreeing_sides_do_nothing(policy: str) -> None:
    d = decide(policy, base_known=True, base="a", erp="b", crm="b")  # type: ignore[arg-type]
    assert (d.take, d.conflict) == (Take.NOTHING, False)


@pytest.mark.parametrize(
    ("policy", "erp_ts", "crm_ts", "expected"),
    [
        ("erp_wins", None, None, Take.ERP),
        ("crm_wins", None, None, Take.CRM),
        ("manual", T0, T0 + timedelta(seconds=5), Take.PARK),
        ("latest_wins", T0, T0 + timedelta(seconds=5), Take.CRM),
        ("latest_wins", T0 + timedelta(seconds=5), T0, Take.ERP),
        ("latest_wins", T0, T0, Take.ERP),  # a tie keeps the system of record
        ("latest_wins", None, T0, Take.ERP),  # an unknown time is never guessed
        ("never_overwrite_with_null", T0, T0 + timedelta(seconds=5), Take.CRM),
    ],
)
def test_both_changed_follows_the_policy(policy: str, erp_ts: datetime, crm_ts: datetime, expected: Take) -> None:
    d = decide(policy, base_known=True, base="a", erp="b", crm="c", erp_ts=erp_ts, crm_ts=crm_ts)  # type: ignore[arg-type]
    assert d.conflict
    assert d.take is expected


def test_never_overwrite_with_null_keeps_the_non_empty_value() -> None:
    # In a conflict the non-empty side wins, whichever it is.
    assert decide("never_overwrite_with_null", base_known=True, base="a", erp=None, crm="c").take is Take.CRM
    assert decide("never_overwrite_with_null", base_known=True, base="a", erp="b", crm="").take is Take.ERP
    # Without a conflict, a side emptying the field is not copied over a value.
    assert decide("never_overwrite_with_null", base_known=True, base="a", erp="a", crm=None).take is Take.NOTHING
    assert decide("never_overwrite_with_null", base_known=True, base="a", erp=None, crm="a").take is Take.NOTHING
    # Filling an empty field is fine.
    assert decide("never_overwrite_with_null", base_known=True, base=None, erp=None, crm="x").take is Take.CRM


def test_without_a_base_a_difference_is_decided_by_the_policy() -> None:
    assert decide("erp_wins", base_known=False, base=None, erp="b", crm="c").take is Take.ERP
    assert decide("crm_wins", base_known=False, base=None, erp="b", crm="c").take is Take.CRM


def test_same_treats_crm_spellings_as_equal() -> None:
    assert same("12.30", 12.3)
    assert same("", None)
    assert same(" ", None) and same(" ", "")  # blank text is empty, whichever way it is spelled
    assert same(True, "true")
    assert not same("12.30", "12.31")
    assert not same(None, "x")
    assert not same("O'Brien", "O'Brien ; DROP TABLE x")


values = st.one_of(st.none(), st.text(max_size=5), st.integers(-5, 5), st.booleans())


@given(base=values, erp=values, crm=values, policy=st.sampled_from(POLICIES))
def test_decisions_are_consistent(base: object, erp: object, crm: object, policy: str) -> None:
    d = decide(policy, base_known=True, base=base, erp=erp, crm=crm)  # type: ignore[arg-type]
    if same(erp, crm):
        assert d.take is Take.NOTHING and not d.conflict
    if d.conflict:
        # A conflict needs both sides to have moved away from the base.
        assert not same(erp, base) and not same(crm, base)
    if d.take is Take.CRM:
        assert not same(crm, base) or d.conflict
    if d.take is Take.PARK:
        assert policy == "manual"


def test_a_date_equals_the_midnight_utc_instant_a_crm_stores_it_as() -> None:
    from datetime import date

    from replicator.mapping.conflict import same

    assert same(date(2024, 10, 7), "2024-10-07T00:00:00.000Z")
    assert same("2024-10-07", "2024-10-07T00:00:00Z")
    assert not same(date(2024, 10, 7), "2024-10-08T00:00:00.000Z")
    assert not same(date(2024, 10, 7), "2024-10-07T09:30:00.000Z")  # a real instant is not a day
    assert not same("2024-10-07", "2024-10-07T00:00:00+02:00")  # midnight in Berlin is the 6th in UTC
