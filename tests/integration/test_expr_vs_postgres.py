"""The compiled expressions must agree with PostgreSQL itself, row by row.

Every expression is run by PostgreSQL 15 (``SELECT expr, (expr)::text``) and by the
compiler on the row dict psycopg returns. Values must be equal and their text forms
identical (which pins numeric scale, float formatting, timestamp rendering ...). Where
PostgreSQL raises for a row, the compiler must raise ExprEvalError for that row.
"""

from __future__ import annotations

import string
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg.types.json import Jsonb

from replicator.mapping.expr import ExprEvalError, compile_expr, compile_predicate
from replicator.mapping.expr.values import cast_text, json_text

pytestmark = pytest.mark.integration

COLUMNS = ("i", "n", "t", "b", "d", "ts", "j")
SCHEMA = {None: COLUMNS}

EXPRESSIONS = [
    # arithmetic and numeric typing
    "i + 1", "i - n", "i * 3", "n * n", "i / 7", "i % 7", "-i", "n / 3", "n / 7.5", "i / 3.0", "100 / i",
    "n % 3", "i + 1.5", "n::float8 * 2", "mod(i, 3)", "abs(n)", "round(n)", "round(n, 1)", "round(n, -2)",
    "trunc(n, 1)", "floor(n)", "ceil(n)", "round(i::float8 / 4)", "greatest(i, n, 0)", "least(i, 5)",
    # comparisons and logic
    "i = 5", "i <> n", "n >= 0", "t < 'm'", "i between -10 and 10", "i not between 0 and 100",
    "i in (1, 2, 3, NULL)", "i not in (0, 1)", "t in ('a', 'b', '')", "b and i > 0", "b or t = ''", "not b",
    "i is null", "t is not null", "b is not true", "i is distinct from 3", "i is not distinct from null",
    "d > '2000-01-01'", "ts <= '2030-06-01 12:00:00+00'", "d < ts",
    # text
    "t || 'x'", "t || i", "concat(t, i, b, n)", "concat_ws('|', t, NULL, d)", "upper(t)", "lower(t)",
    "initcap(t)", "length(t)", "trim(t)", "trim(both 'a' from t)", "ltrim(t, 'ab')", "rtrim(t)",
    "substring(t from 2 for 3)", "substring(t, 0, 3)", "substr(t, 3)", "replace(t, 'a', 'zz')", "left(t, 2)",
    "right(t, -1)", "split_part(t, ' ', 2)", "split_part(t, 'a', -1)", "position('a' in t)", "strpos(t, 'é')",
    "lpad(t, 6, 'xy')", "rpad(t, 4)", "t like '%a%'", "t like 'a_%'", "t ilike '%É%'", "t not like '%!%%' escape '!'",
    "coalesce(t, 'none')", "nullif(t, '')", "case when i > 0 then 'pos' when i < 0 then 'neg' else 'zero' end",
    "case t when 'a' then 1 when '' then 2 else 3 end",
    # casts
    "i::text", "n::text", "n::int", "n::numeric(8,1)", "n::float8", "i::bigint::numeric", "b::text", "b::int",
    "t::varchar(3)", "d::text", "ts::text", "ts::date", "d::timestamptz", "ts::timestamp", "cast(i as smallint)",
    # dates
    "extract(year from d)", "extract(dow from d)", "extract(doy from d)", "extract(epoch from ts)",
    "extract(second from ts)", "extract(quarter from ts)", "date_part('week', d)", "date_trunc('month', ts)",
    "date_trunc('week', d)", "date_trunc('hour', ts)", "to_char(ts, 'YYYY-MM-DD HH24:MI:SS')",
    "to_char(d, 'DD/MM/YYYY')", "d + 30", "d - 1", "d - date '2000-01-01'",
    # json
    "j->'k'", "j->>'k'", "j->'o'->>'x'", "j->'a'->>0", "j->'a'->-1", "j->>'s'",
]  # fmt: skip
JSON_VALUED = {"j->'k'", "j->'a'->-1"}
PREDICATES = ["i > 0", "b", "t like 'a%' or n < 0", "j->>'k' = '1'", "d between '2000-01-01' and '2020-12-31'"]

ALPHABET = string.ascii_letters[:6] + "AB %_!|-'  éÉßİçÑü日€😀"
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-50, 50) | st.text(ALPHABET, max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from("kxso"), inner, max_size=3),
    max_leaves=6,
)
rows = st.fixed_dictionaries(
    {
        "i": st.none() | st.integers(-100_000, 100_000) | st.sampled_from([0, 1, -1, 3]),
        "n": st.none() | st.decimals(-(10**9), 10**9, places=2, allow_nan=False, allow_infinity=False),
        "t": st.none() | st.text(ALPHABET, max_size=10) | st.sampled_from(["", "a", "b", "a b c", " a "]),
        "b": st.none() | st.booleans(),
        "d": st.none() | st.dates(date(1900, 1, 1), date(2100, 12, 31)),
        "ts": st.none() | st.datetimes(datetime(1970, 1, 1), datetime(2100, 1, 1), timezones=st.just(UTC)),
        "j": st.none() | st.dictionaries(st.sampled_from(["k", "o", "a", "s"]), json_values, max_size=4),
    }
)
FIXED = [
    {"i": 0, "n": Decimal("0.00"), "t": "", "b": False, "d": date(2000, 1, 1), "ts": datetime(2000, 1, 1, tzinfo=UTC),
     "j": {"k": 1, "o": {"x": "y"}, "a": [1, "two", None], "s": "str"}},
    {"i": -7, "n": Decimal("-2.55"), "t": "aAé ßİ x", "b": True, "d": date(2024, 2, 29),
     "ts": datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC), "j": {"k": "1", "a": []}},
    dict.fromkeys(COLUMNS),
]  # fmt: skip


@pytest.fixture
def conn(pg_db: str) -> Any:
    with psycopg.connect(pg_db, autocommit=True) as c:
        c.execute("SET TimeZone = 'UTC'")
        # A UTF-8 libc collation: upper/lower/initcap act on all letters, ordering is by code point.
        c.execute(
            'CREATE TABLE r (id int PRIMARY KEY, i int, n numeric(12,2), t text COLLATE "C.utf8", '
            "b bool, d date, ts timestamptz, j jsonb)"
        )
        yield c


def _load(conn: psycopg.Connection[Any], batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    conn.execute("TRUNCATE r")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO r VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (k, *(Jsonb(r[c]) if c == "j" and r[c] is not None else r[c] for c in COLUMNS))
                for k, r in enumerate(batch)
            ],
        )
    fetched = conn.execute("SELECT id, i, n, t, b, d, ts, j FROM r ORDER BY id").fetchall()
    return [dict(zip(COLUMNS, rest, strict=True)) for _, *rest in fetched]


def _pg_results(conn: psycopg.Connection[Any], sql: str, n: int) -> list[tuple[Any, Any] | Exception]:
    try:
        got = conn.execute(f"SELECT ({sql}), ({sql})::text FROM r ORDER BY id").fetchall()  # type: ignore[arg-type]
        return [tuple(r) for r in got]  # type: ignore[misc]
    except psycopg.Error:
        out: list[tuple[Any, Any] | Exception] = []
        for k in range(n):  # some row fails: find out which
            try:
                q = f"SELECT ({sql}), ({sql})::text FROM r WHERE id = %s"
                out.append(tuple(conn.execute(q, (k,)).fetchone()))  # type: ignore[arg-type]
            except psycopg.Error as e:
                out.append(e)
        return out


def _check(conn: psycopg.Connection[Any], batch: list[dict[str, Any]]) -> None:
    fetched = _load(conn, batch)
    failures = []
    for sql in EXPRESSIONS:
        expr = compile_expr(sql, location=f"test.{sql}", columns=SCHEMA)
        for row, pg in zip(fetched, _pg_results(conn, sql, len(fetched)), strict=True):
            try:
                ours: Any = expr({None: row})
            except ExprEvalError as e:
                ours = e
            if isinstance(pg, Exception) or isinstance(ours, Exception):
                if not (isinstance(pg, Exception) and isinstance(ours, Exception)):
                    failures.append(f"{sql}: row {row}: postgres {pg!r} vs ours {ours!r}")
                continue
            value, text = pg
            if sql in JSON_VALUED:
                # psycopg hands jsonb back as Python values: a JSON string or null loses its quotes / type.
                ours_text = json_text(ours)
                text = text if value is not None else "null"
            else:
                ours_text = None if ours is None else cast_text(ours)
            if value != ours or text != ours_text:
                failures.append(f"{sql}: row {row}: postgres {value!r}/{text!r} vs ours {ours!r}/{ours_text!r}")
    for sql in PREDICATES:
        pred = compile_predicate(sql, location="test", columns=SCHEMA)
        got = conn.execute(f"SELECT coalesce(({sql}), false) FROM r ORDER BY id").fetchall()  # type: ignore[arg-type]
        for row, (want,) in zip(fetched, got, strict=True):
            if pred({None: row}) is not want:
                failures.append(f"predicate {sql}: row {row}: postgres {want} vs ours {pred({None: row})}")
    assert not failures, f"{len(failures)} mismatches:\n" + "\n".join(failures[:40])


def test_fixed_rows_agree_with_postgres(conn: psycopg.Connection[Any]) -> None:
    _check(conn, FIXED)


@settings(max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batch=st.lists(rows, min_size=10, max_size=30))
def test_generated_rows_agree_with_postgres(conn: psycopg.Connection[Any], batch: list[dict[str, Any]]) -> None:
    _check(conn, batch)
