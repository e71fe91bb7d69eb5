"""Unit tests for the mapping expression compiler (replicator.mapping.expr)."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from replicator.mapping.expr import ExprEvalError, MappingError, compile_expr, compile_predicate
from replicator.mapping.expr.values import cast_text

D = Decimal
ROW = {
    "i": 7, "n": D("2.50"), "t": "héllo wOrld", "b": True, "z": None, "d": date(2024, 2, 29),
    "ts": datetime(2024, 2, 29, 13, 5, 7, 120000, tzinfo=UTC), "j": {"a": {"b": [1, 2]}, "s": "x", "f": False},
    "CamelCase": "quoted",
}  # fmt: skip
CTX = {None: ROW, "c": {"name": "Acme", "id": 3}, "missing": None}


def ev(sql: str, ctx: Any = CTX) -> Any:
    return compile_expr(sql, location="test")(ctx)


CASES = [
    # literals, columns
    ("1", 1), ("1.5", D("1.5")), ("1e3", D("1000")), ("'it''s'", "it's"), ("true", True), ("NULL", None),
    ("i", 7), ("c.name", "Acme"), ("missing.name", None), ("\"CamelCase\"", "quoted"), ("I", 7),
    # arithmetic
    ("i + 1", 8), ("i - 10", -3), ("i * 2", 14), ("i / 2", 3), ("-i / 2", -3), ("-7 % 3", -1), ("7 % -3", 1),
    ("n * 2", D("5.00")), ("n + 1", D("3.50")), ("1.5 + i", D("8.5")), ("n / 3", D("0.83333333333333333333")),
    ("7.0 / 3", D("2.3333333333333333")), ("10.00 / 4", D("2.5000000000000000")), ("-n", D("-2.50")),
    ("i::float8 / 2", 3.5), ("z + 1", None), ("(i + 1) * 2", 16), ("mod(-7, 3)", -1), ("d + 1", date(2024, 3, 1)),
    ("d - date '2024-01-01'", 59),
    # text
    ("t || '!'", "héllo wOrld!"), ("t || z", None), ("i || '-' || b", "7-t"), ("concat(t, z, i)", "héllo wOrld7"),
    ("concat_ws('-', 'a', z, i)", "a-7"), ("concat_ws(z, 'a')", None), ("upper(t)", "HÉLLO WORLD"),
    ("lower(t)", "héllo world"), ("initcap('hello wORLD-foo')", "Hello World-Foo"), ("upper('ß')", "ß"),
    ("trim('  x  ')", "x"), ("trim(both 'x' from 'xxaxx')", "a"), ("ltrim('xxa', 'x')", "a"), ("rtrim('a  ')", "a"),
    ("trim(leading 'ab' from 'abbac')", "c"), ("length(t)", 11), ("char_length('')", 0),
    ("substring('hello' from 2 for 3)", "ell"), ("substring('hello', 0, 3)", "he"), ("substr('hello', 3)", "llo"),
    ("substring('hello' for 2)", "he"), ("replace('abcabc', 'b', 'XY')", "aXYcaXYc"),
    ("replace('abc', '', 'x')", "abc"),
    ("left('hello', 2)", "he"), ("left('hello', -2)", "hel"), ("right('hello', 2)", "lo"),
    ("right('hello', -2)", "llo"),
    ("split_part('a,b,c', ',', 2)", "b"), ("split_part('a,b,c', ',', -1)", "c"), ("split_part('a,b', ',', 5)", ""),
    ("position('l' in 'hello')", 3), ("strpos('hello', 'z')", 0), ("lpad('ab', 5, 'xy')", "xyxab"),
    ("lpad('hello', 2)", "he"), ("rpad('ab', 4)", "ab  "),
    # comparisons and logic
    ("i = 7", True), ("i <> 7", False), ("i != 7", False), ("i < n", False), ("z = z", None), ("i = '7'", True),
    ("d > '2024-01-01'", True), ("ts > '2024-02-29 13:00:00+00'", True), ("d < ts", True),
    ("z is null", True), ("i is not null", True), ("b is true", True), ("z is not false", True),
    ("i is distinct from z", True), ("z is not distinct from null", True), ("i is distinct from 7", False),
    ("i between 1 and 7", True), ("i not between 1 and 7", False), ("i between symmetric 10 and 1", True),
    ("i in (1, 7)", True), ("i in (1, 2)", False), ("i in (1, NULL)", None), ("i not in (1, NULL)", None),
    ("i in ('7')", True), ("t in ('x', t)", True), ("z in (1)", None),
    ("t like 'h%'", True), ("t like 'h_llo%'", True), ("t like 'H%'", False), ("t ilike 'HÉ%'", True),
    ("'50%' like '50!%' escape '!'", True), ("'a%' like 'a\\%'", True), ("'a_c' not like 'a\\_c'", False),
    ("'a\nb' like 'a%'", True), ("z like 'a'", None),
    ("true and z", None), ("false and z", False), ("true or z", True), ("false or z", None), ("not z", None),
    ("not b", False),
    # conditionals
    ("case when i > 5 then 'big' else 'small' end", "big"), ("case when z then 1 end", None),
    ("case i when 1 then 'one' when 7 then 'seven' end", "seven"), ("case z when z then 1 else 2 end", 2),
    ("coalesce(z, z, 3)", 3), ("coalesce(z)", None), ("nullif(i, 7)", None), ("nullif(i, 8)", 7),
    ("greatest(1, z, i)", 7), ("least(z, n, i)", D("2.50")), ("greatest(z, z)", None),
    # casts
    ("i::text", "7"), ("n::text", "2.50"), ("b::text", "true"), ("'12'::int", 12), ("n::int", 3), ("-2.5::int", -3),
    ("2.5::float8::int", 2), ("'2.45'::numeric(5,1)", D("2.5")), ("-2.45::numeric(5,1)", D("-2.5")),
    ("n::numeric", D("2.50")), ("t::varchar(3)", "hél"), ("'1.5'::float8", 1.5), ("'yes'::boolean", True),
    ("'f'::bool", False), ("1::boolean", True), ("'2024-01-02'::date", date(2024, 1, 2)),
    ("ts::date", date(2024, 2, 29)),
    ("d::timestamptz", datetime(2024, 2, 29, tzinfo=UTC)), ("ts::timestamp", datetime(2024, 2, 29, 13, 5, 7, 120000)),
    ("'2024-01-02 03:04:05'::timestamp", datetime(2024, 1, 2, 3, 4, 5)), ("cast(i as bigint)", 7),
    ("(1e15::float8)::text", "1e+15"), ("(0.1::real)::text", "0.1"), ("ts::text", "2024-02-29 13:05:07.12+00"),
    # numeric functions
    ("round(n)", D("3")), ("round(-2.5)", D("-3")), ("round(2.5::float8)", 2.0), ("round(n, 1)", D("2.5")),
    ("round(1234.5, -2)", D("1200")), ("trunc(-2.7)", D("-2")), ("trunc(n, 1)", D("2.5")), ("abs(-n)", D("2.50")),
    ("floor(-n)", D("-3")), ("ceil(n)", D("3")), ("ceiling(-0.5)", D("0")),
    # dates
    ("extract(year from d)", 2024), ("extract(month from ts)", 2), ("extract(dow from d)", 4),
    ("extract(epoch from ts)", D("1709211907.12")), ("extract(second from ts)", D("7.12")),
    ("date_part('doy', d)", 60), ("extract(quarter from d)", 1), ("extract(week from d)", 9),
    ("date_trunc('month', ts)", datetime(2024, 2, 1, tzinfo=UTC)), ("date_trunc('hour', ts)",
     datetime(2024, 2, 29, 13, tzinfo=UTC)), ("date_trunc('week', d)", datetime(2024, 2, 26, tzinfo=UTC)),
    ("date_trunc('year', ts)", datetime(2024, 1, 1, tzinfo=UTC)),
    ("to_char(ts, 'YYYY-MM-DD HH24:MI:SS')", "2024-02-29 13:05:07"), ("to_char(d, 'DD/MM/YYYY')", "29/02/2024"),
    # json
    ("j->'a'", {"b": [1, 2]}), ("j->'a'->'b'->>1", "2"), ("j->'a'->'b'->-1", 2), ("j->>'s'", "x"),
    ("j->>'f'", "false"), ("j->>'nope'", None), ("j->'a'->>'b'", "[1, 2]"), ("z->'a'", None),
]  # fmt: skip


@pytest.mark.parametrize(("sql", "expected"), CASES, ids=[c[0] for c in CASES])
def test_construct(sql: str, expected: Any) -> None:
    got = ev(sql)
    assert got == expected
    assert type(got) is type(expected) or (isinstance(expected, int | Decimal) and isinstance(got, int | Decimal))


def test_decimal_never_becomes_float() -> None:
    for sql in ("n + 1", "n * 1.5", "n / 3", "i + 0.1", "round(n, 1)", "n % 2", "-n", "abs(n)"):
        assert type(ev(sql)) is Decimal, sql
    assert type(ev("i + i")) is int
    assert ev("0.1 + 0.2") == D("0.3")


def test_predicate_turns_null_into_false() -> None:
    assert compile_predicate("z = 1", location="x")(CTX) is False
    assert compile_predicate("i = 7", location="x")(CTX) is True
    assert compile_predicate("NULL", location="x")(CTX) is False


def test_columns_are_reported() -> None:
    e = compile_expr("coalesce(c.name, t) || I", location="x")
    assert e.columns == frozenset({("c", "name"), (None, "t"), (None, "i")})
    assert e.sql == "coalesce(c.name, t) || I"


def test_related_row_absent_reads_null() -> None:
    e = compile_expr("coalesce(c.name, 'none')", location="x")
    assert e({None: ROW, "c": None}) == "none"
    assert e({None: ROW}) == "none"


def test_constant_expressions_are_folded() -> None:
    e = compile_expr("upper('a') || 1 + 2", location="x")
    assert e({}) == "A3"


SCHEMA = {None: ["email", "name", "created_at"], "acct": ["owner_id"]}


def test_unknown_column_suggests_close_match() -> None:
    with pytest.raises(MappingError) as ei:
        compile_expr("lower(emial)", location="mappings.customers.fields.email", columns=SCHEMA)
    err = ei.value
    assert err.location == "mappings.customers.fields.email"
    assert "emial" in err.message
    assert err.hint and "email" in err.hint
    assert "mappings.customers.fields.email" in str(err) and "did you mean email" in str(err)


def test_unknown_qualifier_and_qualified_column() -> None:
    with pytest.raises(MappingError, match="unknown table alias 'acc'") as ei:
        compile_expr("acc.owner_id", location="x", columns=SCHEMA)
    assert "acct" in (ei.value.hint or "")
    with pytest.raises(MappingError, match=r"unknown column acct\.owner"):
        compile_expr("acct.owner", location="x", columns=SCHEMA)
    compile_expr("acct.owner_id || name", location="x", columns=SCHEMA)


def test_parse_error_is_a_mapping_error() -> None:
    with pytest.raises(MappingError, match="cannot parse") as ei:
        compile_expr("lower(email", location="f.x", columns=SCHEMA)
    assert ei.value.location == "f.x"


@pytest.mark.parametrize(
    ("sql", "needle"),
    [
        ("foo(email)", "unknown function FOO()"),
        ("count(email)", "aggregate"),
        ("sum(1)", "aggregate"),
        ("(select 1)", "subqueries"),
        ("email in (select 1)", "unsupported"),
        ("now()", "not deterministic"),
        ("random()", "not deterministic"),
        ("current_date", "not deterministic"),
        ("email::uuid", "unsupported cast target"),
        ("to_char(created_at, 'Mon DD')", "TO_CHAR"),
        ("extract(foo from created_at)", "unknown EXTRACT field"),
        ("'abc'::int", "constant expression fails"),
        ("1 / 0", "division by zero"),
        ("email ~ 'x'", "unsupported"),
    ],
)
def test_unsupported_is_rejected_at_compile_time(sql: str, needle: str) -> None:
    with pytest.raises(MappingError, match=needle) as ei:
        compile_expr(sql, location="x", columns=SCHEMA)
    if "function" in needle or "determin" in needle or "aggregate" in needle:
        assert ei.value.hint and "supported:" in ei.value.hint


def test_division_by_zero_names_the_expression() -> None:
    e = compile_expr("100 / (i - 7)", location="mappings.m.fields.ratio")
    with pytest.raises(ExprEvalError, match="division by zero") as ei:
        e(CTX)
    assert "mappings.m.fields.ratio" in str(ei.value) and "100 / (i - 7)" in str(ei.value)
    with pytest.raises(ExprEvalError):
        ev("n % 0")


def test_bad_runtime_cast_is_an_eval_error() -> None:
    with pytest.raises(ExprEvalError, match="invalid input syntax for type integer"):
        ev("t::int")
    with pytest.raises(ExprEvalError, match="cannot compare"):
        ev("t < i")
    with pytest.raises(ExprEvalError, match="numeric field overflow"):
        ev("(i * 1000)::numeric(3,1)")


# ------------------------------------------------------------------ properties

ints = st.none() | st.integers(-(10**12), 10**12)
decs = st.none() | st.decimals(-(10**9), 10**9, places=3, allow_nan=False, allow_infinity=False)
nums = ints | decs


def kleene_and(a: bool | None, b: bool | None) -> bool | None:
    if a is False or b is False:
        return False
    return None if a is None or b is None else True


@given(a=st.none() | st.booleans(), b=st.none() | st.booleans())
def test_three_valued_logic(a: bool | None, b: bool | None) -> None:
    ctx = {None: {"a": a, "b": b}}
    assert ev("a AND b", ctx) is kleene_and(a, b)
    notb = lambda v: None if v is None else not v  # noqa: E731
    assert ev("a OR b", ctx) is notb(kleene_and(notb(a), notb(b)))
    assert ev("NOT a", ctx) is notb(a)
    assert ev("a IS NOT DISTINCT FROM b", ctx) is (a is b)


@given(a=nums, b=nums)
def test_arithmetic_matches_exact_math(a: Any, b: Any) -> None:
    ctx = {None: {"a": a, "b": b}}
    if a is None or b is None:
        for op in "+-*/%<=":
            assert ev(f"a {op} b", ctx) is None
        return
    assert ev("a + b", ctx) == a + b
    assert ev("a - b", ctx) == a - b
    assert ev("a * b", ctx) == a * b
    assert ev("a < b", ctx) is (a < b)
    assert ev("a = b", ctx) is (a == b)
    if isinstance(a, int) and isinstance(b, int):
        assert type(ev("a + b", ctx)) is int
        if b:
            q = ev("a / b", ctx)
            assert q == int(Fraction(a, b))  # truncates toward zero
            assert ev("a % b", ctx) == a - b * q
    else:
        assert type(ev("a + b", ctx)) is Decimal
        if b:
            q = ev("a / b", ctx)
            assert type(q) is Decimal
            assert abs(Fraction(q) - Fraction(a) / Fraction(b)) <= Fraction(1, 10**16) * max(1, abs(Fraction(q)))
    if not b:
        with pytest.raises(ExprEvalError):
            ev("a / b", ctx)


@given(d=st.decimals(-(10**6), 10**6, places=4, allow_nan=False, allow_infinity=False), s=st.integers(0, 3))
def test_numeric_cast_rounds_half_away_from_zero(d: Decimal, s: int) -> None:
    got = ev(f"a::numeric(12,{s})", {None: {"a": d}})
    scaled = Fraction(d) * 10**s
    whole = int(abs(scaled) + Fraction(1, 2))
    assert Fraction(got) * 10**s == (whole if scaled >= 0 else -whole)
    assert cast_text(got).count(".") == (1 if s else 0)


text = st.none() | st.text(max_size=12)


@given(s=text, i=st.integers(-5, 15), n=st.integers(0, 15))
def test_string_functions(s: str | None, i: int, n: int) -> None:
    ctx = {None: {"s": s, "i": i, "n": n}}
    for f in ("upper(s)", "lower(s)", "length(s)", "s || 'x'", f"substring(s from {i} for {n})", "left(s, i)"):
        assert (ev(f, ctx) is None) == (s is None), f
    assert ev("concat(s, 'x')", ctx) == (s or "") + "x"
    if s is None:
        return
    assert ev("length(s)", ctx) == len(s)
    assert ev("substring(s from i for n)", ctx) == "".join(ch for pos, ch in enumerate(s, start=1) if i <= pos < i + n)
    assert ev("substring(s, i)", ctx) == s[max(i, 1) - 1 :]
    assert ev("length(lpad(s, n, 'ab'))", ctx) == n
    assert ev("left(s, n) || substring(s from n + 1)", ctx) == s
    if i >= 1:
        assert ev("left(s, i) || right(s, -i)", ctx) == s
    assert ev("replace(s, 'a', 'a')", ctx) == s
    assert ev("split_part(s || ',' || s, ',', 2)", ctx) == (s.split(",")[1] if "," in s else s)
    assert ev("position(s in s || 'z')", ctx) == 1
    assert len(ev("upper(s)", ctx)) == len(s)


@given(s=st.text(alphabet="ab%_\\", max_size=6), p=st.text(alphabet="ab%_", max_size=4))
def test_like_matches_reference(s: str, p: str) -> None:
    import fnmatch

    ref = fnmatch.fnmatchcase(s, p.replace("%", "*").replace("_", "?").replace("[", "[[]"))
    assert ev("s like p", {None: {"s": s, "p": p}}) is ref
